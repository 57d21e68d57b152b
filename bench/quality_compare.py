r"""Issue 19's "Done when" checks from bench_quality results: StrAF spline against zuko NSF per cell.

Reads bench_quality JSON files (their ``rows`` and ``reused`` rows) and prints one markdown table
per comparison: the spline StrAF's mean (worst seed) and zuko NSF's mean (worst seed) per graph,
the margin (NSF mean - StrAF mean, positive: StrAF better), whether StrAF's mean and its worst
seed are at or below NSF's mean, the median fit times, and the margin averaged over the graphs.

    python bench/quality_compare.py bench/results/quality_5seeds.json \
        --wall bench/results/quality_wall_seeds012.json,bench/results/quality_wall_seeds34.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

STRAF, NSF = "StrAF spline", "zuko NSF"
ORDER = ["ecoli70", "magic-niab", "magic-irri", "random50"]  # bench_quality's GRAPHS


def load(paths: str) -> list[dict]:
    """The rows of the files; a (variant, graph, seed, model) found in several keeps the first file's."""
    rows: dict[tuple, dict] = {}
    for path in filter(None, paths.split(",")):
        data = json.loads(Path(path).read_text())
        for r in data["rows"] + data.get("reused", []):
            rows.setdefault((r["variant"], r["graph"], r["seed"], r["model"]), r)
    return list(rows.values())


def compare(rows: list[dict], straf: str, title: str) -> list[str]:
    lines = [f"### {title}", "",
             f"| variant | graph | {straf}: mean (worst), seeds | {NSF}: mean (worst), seeds | margin | mean <= NSF | "
             "worst <= NSF mean | fit s StrAF / NSF (medians) |", "|---|---|---:|---:|---:|---|---|---:|"]
    for variant in ("joint", "conditional"):
        margins = []
        for graph in sorted(dict.fromkeys(r["graph"] for r in rows if r["variant"] == variant), key=ORDER.index):
            def pick(model: str) -> list[dict]:
                return [r for r in rows if (r["variant"], r["graph"], r["model"]) == (variant, graph, model)]
            ours, theirs = pick(straf), pick(NSF)
            seeds = sorted({r["seed"] for r in ours} & {r["seed"] for r in theirs})
            if not seeds:
                continue
            a = np.array([r["test_nll_per_dim"] for r in ours if r["seed"] in seeds])
            b = np.array([r["test_nll_per_dim"] for r in theirs if r["seed"] in seeds])
            margins.append(b.mean() - a.mean())
            secs = (np.median([r["seconds"] for r in ours if r["seed"] in seeds]),
                    np.median([r["seconds"] for r in theirs if r["seed"] in seeds]))
            lines.append(f"| {variant} | {graph} | {a.mean():.4f} ({a.max():.4f}), {len(a)} | "
                         f"{b.mean():.4f} ({b.max():.4f}), {len(b)} | {margins[-1]:+.4f} | "
                         f"{'yes' if a.mean() <= b.mean() else 'NO'} | {'yes' if a.max() <= b.mean() else 'NO'} | "
                         f"{secs[0]:.0f} / {secs[1]:.0f} |")
        if margins:
            lines.append(f"| {variant} | **mean margin over the graphs** | | | **{np.mean(margins):+.4f}** | | | |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="bench_quality JSON file(s), comma-separated: the equal-epoch rows")
    parser.add_argument("--wall", default="", help="bench_quality --wall-time-of JSON file(s), comma-separated")
    args = parser.parse_args()
    rows = load(args.results)
    print("\n".join(compare(rows, STRAF, "Equal epochs (150, patience 20)")))
    if args.wall:
        wall = [r for r in load(args.wall) if r["model"].startswith(STRAF + ",")]
        print("\n".join(compare(wall + [r for r in rows if r["model"] == NSF], wall[0]["model"],
                                "Equal wall time (StrAF: as many epochs as fit in NSF's fit time of the seed, "
                                "at most the cap)")))


if __name__ == "__main__":
    main()
