r"""Helpers shared by the ``fit``, ``sample``, ``logprob`` and ``demo`` commands.

* :data:`MODEL_BUILDERS` maps ``--model`` names to builders ``(adjacency, names, args) -> model``;
  a new model family is one more entry.
* :func:`check_output` refuses to write over an input file, and over an existing file unless
  ``--force``; :func:`write_csv` writes through a temporary file, so a failed run leaves no
  half-written output.

Example:
    >>> sizes("64,64")
    (64, 64)
"""
from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._validate import as_sizes

__all__ = [
    "MODEL_BUILDERS",
    "add_model_options",
    "add_threads_option",
    "check_output",
    "context_options",
    "cpu_threads",
    "load_model",
    "order_columns",
    "positive_int",
    "sizes",
    "variable_names",
    "write_csv",
]

Builder = Callable[[np.ndarray, "list[str] | None", argparse.Namespace], nn.Module]


def _straf(adjacency: np.ndarray, names: list[str] | None, args: argparse.Namespace) -> nn.Module:
    from ..flows import StrAF

    return StrAF(adjacency, hidden_sizes=args.hidden, flow_steps=args.flow_steps, normalizer=args.normalizer,
                 names=names, **context_options(args))


def _arf(adjacency: np.ndarray, names: list[str] | None, args: argparse.Namespace) -> nn.Module:
    from ..flows import ARF

    return ARF(adjacency.shape[0], hidden_sizes=args.hidden, flow_steps=args.flow_steps,
               normalizer=args.normalizer, names=names, **context_options(args))


def _gnf(adjacency: np.ndarray, names: list[str] | None, args: argparse.Namespace) -> nn.Module:
    from ..flows import GNF

    return GNF(adjacency, hidden_sizes=args.hidden, flow_steps=args.flow_steps, normalizer=args.normalizer,
               names=names, **context_options(args))


def _strcnf(adjacency: np.ndarray, names: list[str] | None, args: argparse.Namespace) -> nn.Module:
    from ..flows import StrCNF

    return StrCNF(adjacency, hidden_sizes=args.hidden, flow_steps=args.flow_steps, names=names,
                  **context_options(args))


def _ffjord(adjacency: np.ndarray, names: list[str] | None, args: argparse.Namespace) -> nn.Module:
    from ..flows import FFJORD

    return FFJORD(adjacency.shape[0], hidden_sizes=args.hidden, flow_steps=args.flow_steps, names=names,
                  **context_options(args))


def _density(adjacency: np.ndarray, names: list[str] | None, args: argparse.Namespace) -> nn.Module:
    from ..density import StrNNDensityEstimator

    options = context_options(args)
    options.pop("context_names", None)
    return StrNNDensityEstimator(adjacency, hidden_sizes=args.hidden, data_type=args.data_type, names=names,
                                 **options)


def _causal(adjacency: np.ndarray, names: list[str] | None, args: argparse.Namespace) -> nn.Module:
    from ..causal import CausalFlow

    return CausalFlow(adjacency, names=names, structure=args.structure, normalizer=args.normalizer,
                      prior=args.prior, hidden_sizes=args.hidden, flow_steps=args.flow_steps,
                      **context_options(args))


def context_options(args: argparse.Namespace) -> dict[str, Any]:
    """``context_features``/``context_names`` of a conditional model (``args.context_names``), else none."""
    names = getattr(args, "context_names", None)
    return {"context_features": len(names), "context_names": list(names)} if names else {}


MODEL_BUILDERS: dict[str, Builder] = {"straf": _straf, "arf": _arf, "gnf": _gnf, "density": _density,
                                   "strcnf": _strcnf, "ffjord": _ffjord, "causal": _causal}


def sizes(text: str) -> tuple[int, ...]:
    """argparse type for comma-separated positive widths such as ``64,64``."""
    try:
        return as_sizes([int(v) for v in text.split(",")], "--hidden")
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from err


def positive_int(text: str) -> int:
    """argparse type for a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Adds --hidden, --flow-steps, --normalizer (the model shape shared by fit and demo)."""
    p.add_argument("--hidden", type=sizes, default=(64, 64), metavar="H1,H2",
                   help="hidden layer widths of each conditioner (default 64,64)")
    p.add_argument("--flow-steps", type=positive_int, default=5, help="flow steps (default 5)")
    p.add_argument("--normalizer", choices=("affine", "spline", "umnn"), default="affine",
                   help="flow normalizer (default affine)")


def add_threads_option(p: argparse.ArgumentParser) -> None:
    """Adds --threads; commands run their work inside ``cpu_threads(args.threads)``."""
    # Batches of a few hundred rows through 64-wide layers are too small to split: on 2 busy
    # cores, 2 threads made a StrAF epoch 20x slower than 1 (spinning OpenMP workers).
    p.add_argument("--threads", type=positive_int, default=1,
                   help="CPU threads for torch (default 1; more pay off only for wide layers or large batches)")


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Sets torch's intra-op thread count for the block and restores it (main() also runs in-process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_output(path: str | os.PathLike, *, inputs: Sequence[str | os.PathLike] = (), force: bool = False) -> Path:
    r"""Returns ``path`` if writing there is allowed.

    Raises:
        ValueError: ``path`` is one of ``inputs`` (never overwritten, even with force).
        FileExistsError: ``path`` exists and ``force`` is false.
        FileNotFoundError: its folder does not exist.

    Example:
        >>> check_output("x.csv", inputs=["./x.csv"])
        Traceback (most recent call last):
        ...
        ValueError: output x.csv is also an input file; choose another output path
    """
    out = Path(path)
    for item in inputs:
        src = Path(item)
        same = out.resolve() == src.resolve() or (out.exists() and src.exists() and os.path.samefile(out, src))
        if same:
            raise ValueError(f"output {out} is also an input file; choose another output path")
    if out.is_dir():
        raise ValueError(f"output {out} is a folder; give a file name")
    if out.exists() and not force:
        raise FileExistsError(f"output {out} exists; pass --force to overwrite it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"folder {out.parent} of output {out} does not exist")
    return out


def write_csv(path: Path, values: np.ndarray, names: Sequence[str]) -> None:
    """Writes a table with a header row through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    np.savetxt(tmp, np.asarray(values, dtype=np.float64).reshape(len(values), -1), delimiter=",",
               header=",".join(names), comments="", fmt="%.10g")
    os.replace(tmp, path)


def load_model(path: str | os.PathLike) -> nn.Module:
    """Loads a model file and checks that it is a density model (has ``log_prob``)."""
    from ..serialization import load

    model = load(path)
    if not callable(getattr(model, "log_prob", None)):
        raise ValueError(f"{path} holds a {type(model).__name__}, which has no log_prob; "
                         "give a model written by `strnn-fast fit`")
    return model.eval()


def variable_names(model: Any, d: int) -> list[str]:
    """The model's variable names, else ``x0 .. x{d-1}``."""
    names = getattr(model, "names", None)
    return list(names) if names is not None else [f"x{i}" for i in range(d)]


def order_columns(x: np.ndarray, names: list[str] | None, model_names: list[str] | None, d: int,
                  path: str) -> np.ndarray:
    r"""Returns the data's columns in the model's variable order, or raises ValueError.

    Named columns are matched by name (any order); unnamed ones must be d in the model's order.

    Example:
        >>> order_columns(np.array([[1.0, 2.0]]), ["b", "a"], ["a", "b"], 2, "x.csv").tolist()
        [[2.0, 1.0]]
    """
    if x.shape[1] != d:
        raise ValueError(f"{path} has {x.shape[1]} columns but the model has {d} variables")
    if names is None or model_names is None or list(names) == list(model_names):
        return x
    missing = [n for n in model_names if n not in names]
    if missing:
        raise ValueError(f"{path} lacks the model's variables {missing}; its columns are {list(names)}")
    return x[:, [list(names).index(n) for n in model_names]]
