r"""strnn_fast: Structured Neural Networks with a C++ factorizer and Triton block-sparse kernels.

Fit a density or a causal model on a graph you know, then ask it questions.

Start here:

* :class:`StrAF` (structured autoregressive flow; ``normalizer="spline"`` for multimodal data),
  :class:`ARF`, :class:`GNF`, :class:`StrCNF`, :class:`FFJORD`: flows with ``log_prob``,
  ``sample`` and ``flow(context)`` (a ``torch.distributions.Distribution``).
* :class:`CausalFlow`: interventions (``interventional_samples``, ``interventional_mean``),
  ``average_treatment_effect`` and ``counterfactual``, with names or indices for variables.
* :class:`StrNNDensityEstimator` (binary or Gaussian data); :class:`FastStrNN`, the masked network
  itself; :func:`factorize` and friends build its masks.
* :func:`fit` trains any of them (early stopping, a progress bar and one summary line,
  ``verbose=False`` for none; DataFrame columns matched by name; 1 CPU thread by default, see
  ``strnn_fast.threads``); ``model.save(path)`` and :func:`load` keep them;
  ``strnn_fast.standardize.Standardized`` wraps a flow so it trains on standardized data and
  answers in data units.

Graphs: a 0/1 matrix ``A[i, j] = 1`` when variable *i* may depend on *j* (numpy, torch or
scipy.sparse), an edge list of ``(parent, child)`` names, or a ``networkx.DiGraph``. A model's
variable order is ``model.names`` (shown by its ``repr``): tensors are read in that order, and a
pandas DataFrame is matched by column name instead.

:func:`export` ships one method of a trained model (``log_prob``, ``sample``, an intervention) as
one self-contained file: an AOTInductor package (``.pt2``) or ONNX, runnable without strnn_fast.

The command line ``strnn-fast`` (``strnn-fast --help``) fits, queries and exports models from CSV files.
Documentation: the README, ``docs/`` (tutorials, a "which model" page) and, for contributors,
ARCHITECTURE.md (where every file lives).

Example:
    >>> import numpy as np, torch, strnn_fast
    >>> A = np.tril(np.ones((4, 4)), -1)
    >>> net = strnn_fast.FastStrNN(4, (16, 16), 4, adjacency=A)
    >>> net(torch.randn(2, 4)).shape
    torch.Size([2, 4])
"""
from . import data, graph
from .causal import CausalFlow
from .density import StrNNDensityEstimator
from .export import export
from .factorize import check_masks, connections, factorize, path_counts, required_width
from .flows import ARF, FFJORD, GNF, StrAF, StrCNF
from .layer import MaskedLinear
from .nn import FastStrNN
from .serialization import load
from .train import fit

__all__ = [
    "ARF",
    "CausalFlow",
    "FFJORD",
    "FastStrNN",
    "GNF",
    "MaskedLinear",
    "StrAF",
    "StrCNF",
    "StrNNDensityEstimator",
    "check_masks",
    "connections",
    "data",
    "export",
    "factorize",
    "fit",
    "graph",
    "load",
    "path_counts",
    "required_width",
]
__version__ = "0.2.0"


def __getattr__(name: str):
    # ``strnn_fast.compat`` without an explicit import (the module only renames; load it on demand).
    if name == "compat":
        import importlib

        return importlib.import_module(".compat", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
