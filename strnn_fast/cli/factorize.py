r"""``strnn-fast factorize``: factorize an adjacency with each method and compare the masks.

For each method it prints the per-layer mask shapes, the path count (Eq. 2), the tile density,
the time and whether the masks are valid; it saves the masks (``.npz``) and a PNG of them.

Example:
    strnn-fast factorize                          # built-in example: random DAG, d=100
    strnn-fast factorize A.npy --hidden 64,64 --methods greedy,zuko -o out/
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..factorize import check_masks, connections, factorize

DEFAULT_METHODS = "greedy,greedy+improve,zuko,exact"
EXACT_MAX_VARIABLES = 12  # the MILP grows with n_out * n_in * width; beyond this it is skipped


def builtin_adjacency(d: int = 100, density: float = 0.2, seed: int = 0) -> np.ndarray:
    """The paper's benchmark graph: a random strictly lower-triangular DAG."""
    rng = np.random.default_rng(seed)
    return np.tril(rng.random((d, d)) < density, -1).astype(np.uint8)


def read_adjacency(path: Path) -> np.ndarray:
    """Reads a .npy or .csv (comma- or whitespace-separated 0/1 matrix) adjacency file."""
    if not path.is_file():
        raise FileNotFoundError(f"adjacency file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix in (".csv", ".txt"):
        text = path.read_text().strip().splitlines()
        delimiter = "," if "," in text[0] else None
        try:
            return np.loadtxt(path, delimiter=delimiter, ndmin=2)
        except ValueError as err:
            raise ValueError(f"adjacency file {str(path)!r} is not a numeric 0/1 matrix: {err}") from err
    raise ValueError(f"adjacency file must be .npy or .csv, got {path.suffix!r}")


def tile_density(mask: np.ndarray, block: int) -> float:
    """Fraction of (block x block) tiles of the (out, in) weight mask that hold a nonzero."""
    w = np.asarray(mask).T  # weight orientation: (fan_out, fan_in)
    rows, cols = -(-w.shape[0] // block), -(-w.shape[1] // block)
    padded = np.zeros((rows * block, cols * block), dtype=bool)
    padded[: w.shape[0], : w.shape[1]] = w != 0
    return float(padded.reshape(rows, block, cols, block).any(axis=(1, 3)).mean())


def _plot(masks: list[np.ndarray], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(masks), figsize=(3.2 * len(masks), 3.4), squeeze=False)
    for i, (ax, m) in enumerate(zip(axes[0], masks)):
        ax.imshow(np.asarray(m).T, cmap="Greys", interpolation="nearest", aspect="auto")
        ax.set_title(f"layer {i + 1}: {m.shape[1]}x{m.shape[0]}", fontsize=9)
        ax.set_xlabel("in")
        ax.set_ylabel("out")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _run_method(name: str, A: np.ndarray, hidden: tuple[int, ...]) -> tuple[list[np.ndarray], float, str]:
    start = time.perf_counter()
    note = ""
    if name == "exact":
        from ..exact import factorize_exact

        result = factorize_exact(A, hidden, time_limit=20.0)
        masks = result.masks
        note = (f"optimum {'proven' if result.optimal else 'not proven'} ({result.status}); "
                f"greedy {result.greedy_paths} paths, gap {100 * result.gap:.1f}%")
    else:
        method, _, option = name.partition("+")
        masks = factorize(A, hidden, method, **({"improve": True} if option == "improve" else {}))
    return masks, time.perf_counter() - start, note


def run(args: argparse.Namespace) -> int:
    A = builtin_adjacency() if args.adjacency is None else read_adjacency(Path(args.adjacency))
    source = "built-in random DAG (d=100, density 0.2, seed 0)" if args.adjacency is None else args.adjacency
    A = np.asarray(A)
    if args.hidden:
        try:
            hidden = tuple(int(h) for h in args.hidden.split(","))
        except ValueError as err:
            raise ValueError(f"--hidden must be comma-separated integers, got {args.hidden!r}") from err
    else:
        hidden = (2 * A.shape[0], 2 * A.shape[0])
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)

    print(f"adjacency: {source}, shape {A.shape}, {int(np.count_nonzero(A))} edges; hidden {hidden}")
    print(f"{'method':<16} {'paths':>12} {'tiles%':>7} {'seconds':>9} {'valid':>6}  masks")
    for name in methods:
        if name == "made" and not np.array_equal(A != 0, np.tril(np.ones(A.shape, bool), -1)):
            print(f"{name:<16} skipped: needs the full lower triangle")
            continue
        if name == "exact" and max(A.shape) > EXACT_MAX_VARIABLES:
            print(f"{name:<16} skipped: the MILP is for small problems (<= {EXACT_MAX_VARIABLES} variables)")
            continue
        masks, seconds, note = _run_method(name, A, hidden)
        density = np.mean([tile_density(m, args.block) for m in masks])
        valid = check_masks(masks, A)
        shapes = " ".join(f"{m.shape[0]}x{m.shape[1]}" for m in masks)
        print(f"{name:<16} {connections(masks):>12d} {100 * density:>7.1f} {seconds:>9.4f} {str(valid):>6}  {shapes}")
        if note:
            print(f"{'':<16} {note}")
        stem = name.replace("+", "_")
        np.savez_compressed(out / f"masks_{stem}.npz", adjacency=A, **{f"mask_{i}": m for i, m in enumerate(masks)})
        _plot(masks, f"{name}: {connections(masks)} paths", out / f"masks_{stem}.png")
    print(f"saved masks (.npz) and pictures (.png) to {out}/")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("factorize", help="factorize an adjacency into layer masks and compare methods")
    p.add_argument("adjacency", nargs="?", help=".npy or .csv 0/1 matrix (n_out x n_in); default: built-in DAG")
    p.add_argument("--hidden", help="comma-separated hidden widths (default: 2*n_out, 2*n_out)")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    p.add_argument("--block", type=int, default=32, help="tile size for the tile density (default 32)")
    p.add_argument("-o", "--output", default="strnn_fast_out", help="output directory (default strnn_fast_out)")
    p.set_defaults(func=run)
