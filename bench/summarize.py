r"""Turns pytest-benchmark JSON files into a markdown table: medians per group and ratios.

Within each group the first row named "reference" (or else the slowest) is the baseline.

Example:
    python bench/summarize.py bench/results/factorize_cpu.json > bench/results/factorize_cpu.md
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def _impl(bench: dict) -> str:
    params = bench.get("params") or {}
    return ", ".join(f"{k}={v}" for k, v in params.items()) or bench["name"]


def summarize(path: str) -> str:
    with open(path) as fh:
        data = json.load(fh)
    info = data["machine_info"]
    lines = [
        f"# {path}",
        "",
        f"- machine: {info.get('cpu', {}).get('brand_raw', info.get('processor'))}, "
        f"{info.get('cpu', {}).get('count', '?')} cores; python {info.get('python_version')}; "
        f"torch {info.get('torch')} ({info.get('torch_threads')} thread(s)); triton {info.get('triton', '-')}",
        f"- date: {data.get('datetime')}",
        "",
        "| group | case | median | ratio to baseline | extra |",
        "|---|---|---:|---:|---|",
    ]
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench["group"]].append(bench)
    for group, benches in groups.items():
        base = next((b for b in benches if "reference" in _impl(b)), max(benches, key=lambda b: b["stats"]["median"]))
        for b in benches:
            median = b["stats"]["median"]
            ratio = base["stats"]["median"] / median
            extra = ", ".join(f"{k}={v}" for k, v in (b.get("extra_info") or {}).items())
            lines.append(f"| {group} | {_impl(b)} | {_fmt(median)} | {ratio:.1f}x | {extra} |")
    return "\n".join(lines) + "\n"


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} us"


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(summarize(p))
