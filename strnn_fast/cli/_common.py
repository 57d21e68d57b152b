r"""Helpers shared by the ``fit``, ``sample``, ``logprob`` and ``demo`` commands.

* :data:`MODEL_BUILDERS` maps ``--model`` names to builders ``(adjacency, names, args) -> model``;
  a new model family is one more entry.
* :func:`check_output` refuses to write over an input file, and over an existing file unless
  ``--force``; :func:`write_csv` writes through :func:`strnn_fast._files.atomic_path` (a
  ``tempfile`` in the target folder, renamed at the end), so a failed run leaves no
  half-written output and no temporary name can collide with an existing file.
* :func:`load_model` reads only safe model files unless ``--trust-legacy-file`` is given.

Input tables (data rows, ``--context`` rows) are read in :mod:`strnn_fast.cli._tables`.

Example:
    >>> sizes("64,64")
    (64, 64)
"""
from __future__ import annotations

import argparse
import csv
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._C import format_csv_rows
from .._files import atomic_path, check_target
from .._validate import as_sizes
from ..threads import DEFAULT_THREADS
from ..variables import Variables

__all__ = [
    "MODEL_BUILDERS",
    "add_do_option",
    "add_model_options",
    "add_output_options",
    "add_training_options",
    "add_trust_option",
    "check_output",
    "command_parser",
    "context_options",
    "learning_rate",
    "load_causal",
    "load_model",
    "plain",
    "positive_int",
    "sample_chunks",
    "seed_type",
    "sizes",
    "stream_csv",
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

    return StrNNDensityEstimator(adjacency, hidden_sizes=args.hidden, data_type=args.data_type, names=names,
                                 **context_options(args))


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


def _number_type(convert: Callable[[str], Any], accept: Callable[[Any], bool], expected: str,
                 name: str, doc: str) -> Callable[[str], Any]:
    # One argparse type per rule: parse with ``convert``, refuse what ``accept`` rejects.
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = parse.__qualname__ = name
    parse.__doc__ = doc
    return parse


seed_type = _number_type(int, lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1", "seed_type",
                         "argparse type for a seed: an integer in [0, 2**32) (what numpy's and torch's generators take).")
learning_rate = _number_type(float, lambda v: 0 < v <= 1e6, "a positive number up to 1e6", "learning_rate",
                             "argparse type for a learning rate: a positive finite number no larger than 1e6.")
positive_int = _number_type(int, lambda v: v > 0, "a positive integer", "positive_int",
                            "argparse type for a positive integer.")


def command_parser(sub: argparse._SubParsersAction, name: str, help: str, doc: str | None,
                   run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """The subcommand ``name``: one-line ``help``, its module docstring ``doc`` as the --help text."""
    p = sub.add_parser(name, help=help, description=plain(doc), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=run)
    _add_threads_option(p)
    return p


def add_do_option(p: argparse.ArgumentParser) -> None:
    """Adds the repeatable --do VAR=VALUE (read with :func:`strnn_fast.variables.parse_assignments`)."""
    p.add_argument("--do", action="append", default=[], metavar="VAR=VALUE",
                   help="intervention; repeat for several variables (indices when the model has no names)")


def add_training_options(p: argparse.ArgumentParser, *, epochs: int) -> None:
    """Adds --epochs (default ``epochs``), --batch-size, --lr and --patience (fit and demo)."""
    p.add_argument("--epochs", type=positive_int, default=epochs, help=f"maximum epochs (default {epochs})")
    p.add_argument("--batch-size", type=positive_int, default=256, help="batch size (default 256)")
    p.add_argument("--lr", type=learning_rate, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--patience", type=positive_int, default=10,
                   help="stop after this many epochs without a better validation NLL (default 10)")


def add_output_options(p: argparse.ArgumentParser, help: str, *, required: bool = False,
                       batch_size: int | None = None) -> None:
    """Adds --output/-o, --batch-size (when given a default), --force and --trust-legacy-file:
    the tail of every command that reads a saved model and writes a file."""
    p.add_argument("--output", "-o", required=required, help=help)
    if batch_size is not None:
        p.add_argument("--batch-size", type=positive_int, default=batch_size,
                       help=f"rows per pass (default {batch_size})")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    add_trust_option(p)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Adds --hidden, --flow-steps, --normalizer (the model shape shared by fit and demo)."""
    p.add_argument("--hidden", type=sizes, default=(64, 64), metavar="H1,H2",
                   help="hidden layer widths of each conditioner (default 64,64)")
    p.add_argument("--flow-steps", type=positive_int, default=5, help="flow steps (default 5)")
    p.add_argument("--normalizer", choices=("affine", "spline", "umnn"), default="affine",
                   help="flow normalizer (default affine)")


def _add_threads_option(p: argparse.ArgumentParser) -> None:
    """Adds --threads to every command; ``main`` runs the command inside ``cpu_threads(args.threads)``
    (see :mod:`strnn_fast.threads`: the same policy and default as the API's ``fit(threads=)``)."""
    p.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS,
                   help=f"CPU threads for torch (default {DEFAULT_THREADS}, as fit(threads=) in Python; more pay off "
                   "only for wide layers or large batches)")


def check_output(path: str | os.PathLike, *, inputs: Sequence[str | os.PathLike] = (), force: bool = False) -> Path:
    r"""Returns ``path`` if writing there is allowed (see :func:`strnn_fast._files.check_target`).

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
    return check_target(path, overwrite=force, inputs=inputs)


def write_csv(path: Path, values: np.ndarray, names: Sequence[str], *, force: bool = False,
              inputs: Sequence[str | os.PathLike] = ()) -> int:
    """Writes a table with a header row atomically (see :func:`stream_csv`); returns the row count."""
    table = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    return stream_csv(path, (table[s:s + CHUNK] for s in range(0, max(len(table), 1), CHUNK)), names,
                      force=force, inputs=inputs)


def stream_csv(path: Path, chunks: Iterable[np.ndarray], names: Sequence[str], *, force: bool = False,
               inputs: Sequence[str | os.PathLike] = ()) -> int:
    r"""Writes row blocks to a CSV file as they come (memory: one block); returns the row count.

    The header quotes every name (a name with a comma or one that looks like a number reads back
    as a name); each value is written as ``repr`` of its float64, the shortest text that reads
    back to the same float (``%.10g`` lost digits), formatted in C++ (``csrc/csv_format.cpp``).
    The file goes through :func:`strnn_fast._files.atomic_path`: a non-finite value (ValueError), a full disk or an
    interrupt leaves no file behind.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> stream_csv(out, [np.array([[0.1, 1 / 3]]), np.array([[1e6 + 0.01, -2.0]])], ["a,b", "1"])
        2
        >>> print(out.read_text(), end="")
        "a,b","1"
        0.1,0.3333333333333333
        1000000.01,-2.0
    """
    rows = 0
    header = io.StringIO()
    csv.writer(header, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(names)
    with atomic_path(path, overwrite=force, inputs=inputs) as tmp, open(tmp, "wb") as f:
        f.write(header.getvalue().encode("utf-8"))  # the encoding the table readers expect
        for chunk in chunks:
            table = np.asarray(chunk, dtype=np.float64).reshape(len(chunk), -1)
            if not np.isfinite(table).all():
                row = rows + int(np.flatnonzero(~np.isfinite(table).all(axis=1))[0])
                raise ValueError(f"the model produced non-finite values (first in row {row}); nothing was written "
                                 f"to {path}. The model file may be damaged or was fitted on data it cannot represent")
            f.write(format_csv_rows(table))  # repr's text, 7x faster than Python's repr per value
            rows += len(table)
    return rows


def add_trust_option(p: argparse.ArgumentParser) -> None:
    """Adds --trust-legacy-file (loading an old pickled model file runs code stored in it)."""
    p.add_argument("--trust-legacy-file", action="store_true",
                   help="also read model files in the old pickled format (strnn_fast-model-v1); loading "
                        "them runs code stored in the file, so use it only for files you wrote yourself")


def load_model(path: str | os.PathLike, *, trusted: bool = False) -> nn.Module:
    """Loads a model file and checks that it is a density model (has ``log_prob``)."""
    from ..serialization import load

    model = load(path, trusted=trusted)
    if not callable(getattr(model, "log_prob", None)):
        raise ValueError(f"{path} holds a {type(model).__name__}, which has no log_prob; "
                         "give a model written by `strnn-fast fit`")
    return model.eval()


def load_causal(path: str | os.PathLike, *, trusted: bool = False) -> nn.Module:
    """Loads a saved model and checks that it is a CausalFlow (``trusted``: accept old pickled files)."""
    from ..causal import CausalFlow
    from ..serialization import load

    model = load(path, trusted=trusted)
    if not isinstance(model, CausalFlow):
        raise ValueError(f"{str(path)!r} holds a {type(model).__name__}, not a CausalFlow; "
                         "fit one with strnn_fast.causal.CausalFlow(...).fit(data) and save it")
    return model


def sample_chunks(model: nn.Module, n: int, context: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Yields (m, d) float64 blocks of ``n`` samples, :data:`CHUNK` rows at a time (for streaming).

    Raises ValueError at the first non-finite sample (a damaged model)."""
    from ..causal import CausalFlow

    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            kwargs = {} if context is None else {"context": torch.tensor(context[start:start + m], dtype=dtype)}
            if isinstance(model, CausalFlow):
                kwargs["output"] = "tensor"
            x = model.sample(m, **kwargs).detach().cpu().double().numpy().reshape(m, -1)
            bad = ~np.isfinite(x)
            if bad.any():
                row = start + int(np.flatnonzero(bad.any(axis=1))[0])
                raise ValueError(f"the model drew non-finite values (first in row {row}); nothing was written. "
                                 "The model file may be damaged or was fitted on data it cannot represent")
            yield x


CHUNK = 65_536  # rows per draw, to bound memory for large n


def plain(doc: str | None) -> str:
    r"""A module docstring as plain text for ``--help``: reST roles and literals unwrapped.

    Example:
        >>> plain("Uses :class:`strnn_fast.Standardized` and ``--force``.")
        'Uses strnn_fast.Standardized and --force.'
    """
    import re

    text = (doc or "").split("\n\nExample")[0]
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return re.sub(r"``([^`]+)``", r"\1", text)


def variable_names(model: Any, d: int) -> list[str]:
    """The model's variable names, else ``x0 .. x{d-1}``."""
    names = getattr(model, "names", None)
    return list(names) if names is not None else Variables(None, d).default_names()
