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

from .._files import atomic_folder, atomic_path
from .._validate import as_binary_matrix
from ..data import load_adjacency, random_dag
from ..factorize import check_masks, connections, factorize
from ..layout import BlockLayout
from ._common import command_parser, positive_int, sizes

DEFAULT_METHODS = "greedy,greedy+improve,zuko,exact"
KNOWN_METHODS = ("greedy", "greedy+improve", "zuko", "made", "exact")
EXACT_MAX_VARIABLES = 12  # the MILP grows with n_out * n_in * width; beyond this it is skipped


def builtin_adjacency(d: int = 100, density: float = 0.2, seed: int = 0) -> np.ndarray:
    """The paper's benchmark graph: a random strictly lower-triangular DAG (:func:`strnn_fast.data.random_dag`)."""
    return random_dag(d, density=density, seed=seed).astype(np.uint8)


def tile_density(mask: np.ndarray, block: int) -> float:
    """Fraction of (block x block) tiles of a (fan_in, fan_out) factorizer mask that hold a nonzero,
    in the weight orientation (fan_out, fan_in) the kernels tile (:class:`strnn_fast.layout.BlockLayout`).

    Example:
        >>> tile_density(np.eye(4, dtype=np.uint8), 2)
        0.5
    """
    return BlockLayout.from_mask(np.asarray(mask).T, (block, block)).density


PICTURE_CELLS = 1024  # cells per side of a mask's picture: it is ~350 pixels wide, more only costs memory


def thumbnail(mask: np.ndarray, cells: int = PICTURE_CELLS) -> tuple[np.ndarray, int]:
    r"""The mask at most ``cells`` per side for its picture: each (k x k) block becomes one cell,
    set when the block holds a one; returns it and k.

    matplotlib keeps several float copies of what it draws: a 20000 x 20000 mask (hidden
    20000,20000) ran out of memory and lost every output. The reduction needs no large temporary.

    Example:
        >>> small, k = thumbnail(np.eye(6, dtype=np.uint8), cells=3)
        >>> k, small.tolist()
        (2, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    """
    m = np.asarray(mask)
    k = max(1, -(-max(m.shape) // cells))
    if k == 1:
        return m, 1
    rows = np.maximum.reduceat(m, np.arange(0, m.shape[0], k), axis=0)
    return np.maximum.reduceat(rows, np.arange(0, m.shape[1], k), axis=1), k


def _plot(masks: list[np.ndarray], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(masks), figsize=(3.2 * len(masks), 3.4), squeeze=False)
    for i, (ax, m) in enumerate(zip(axes[0], masks)):
        cells, k = thumbnail(m)
        # By blocks, the axes still count units: the picture spans the mask's full extent.
        extent = (0, m.shape[0], m.shape[1], 0) if k > 1 else None
        ax.imshow(cells.T, cmap="Greys", interpolation="nearest", aspect="auto", extent=extent)
        ax.set_title(f"layer {i + 1}: {m.shape[1]}x{m.shape[0]}{f' ({k}x{k} per cell)' if k > 1 else ''}",
                     fontsize=9)
        ax.set_xlabel("in")
        ax.set_ylabel("out")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
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
    # The file rules of `strnn-fast fit` (matrix, headed matrix or edge list); masks may be rectangular.
    A = builtin_adjacency() if args.adjacency is None else load_adjacency(args.adjacency, square=False,
                                                                         allow_self_loops=True)[0]
    source = "built-in random DAG (d=100, density 0.2, seed 0)" if args.adjacency is None else args.adjacency
    A = as_binary_matrix(A, f"adjacency {source}")
    hidden = args.hidden or (2 * A.shape[0], 2 * A.shape[0])
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in KNOWN_METHODS]
    if not methods or unknown:
        raise ValueError(f"--methods: unknown {unknown or 'empty list'}; choose from {', '.join(KNOWN_METHODS)}")
    inputs = [args.adjacency] if args.adjacency is not None else []
    with atomic_folder(args.output, overwrite=args.force, inputs=inputs, what="output folder") as out:
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
            print(f"{name:<16} {connections(masks):>12d} {100 * density:>7.1f} {seconds:>9.4f} {str(valid):>6}  "
                  f"{shapes}")
            if note:
                print(f"{'':<16} {note}")
            stem = name.replace("+", "_")
            with atomic_path(out / f"masks_{stem}.npz", overwrite=True) as tmp, open(tmp, "wb") as f:
                np.savez_compressed(f, adjacency=A, **{f"mask_{i}": m for i, m in enumerate(masks)})
            with atomic_path(out / f"masks_{stem}.png", overwrite=True) as tmp:
                _plot(masks, f"{name}: {connections(masks)} paths", tmp)
    print(f"saved masks (.npz) and pictures (.png) to {args.output}/")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "factorize", "factorize an adjacency into layer masks and compare methods", __doc__, run)
    p.add_argument("adjacency", nargs="?",
                   help="0/1 matrix (n_out x n_in; .npy, .npz, .csv, .txt, optionally with names) or parent,child "
                        "edge list, read as `strnn-fast fit` reads --adjacency; default: built-in DAG")
    p.add_argument("--hidden", type=sizes, metavar="H1,H2", help="comma-separated hidden widths (default: 2*n_out, 2*n_out)")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    p.add_argument("--block", type=positive_int, default=32, help="tile size for the tile density (default 32)")
    p.add_argument("-o", "--output", default="strnn_fast_out",
                   help="output folder, created whole at the end (default strnn_fast_out)")
    p.add_argument("--force", action="store_true", help="write into an existing output folder, replacing its masks")
