r"""strnn_fast: Structured Neural Networks with a C++ factorizer and Triton block-sparse kernels.

Where things are (two hops from here):

* masks: :func:`factorize`, :func:`check_masks`, :func:`path_counts`, :func:`connections`
  (``strnn_fast.factorize``; the exact MILP in ``strnn_fast.exact``; reordering for block-sparse
  kernels in ``strnn_fast.reorder``);
* networks: :class:`FastStrNN`, :class:`MaskedLinear` (``strnn_fast.nn``; CUDA kernels in
  ``strnn_fast.kernels``, backend choice in ``strnn_fast.dispatch``, inference in
  ``strnn_fast.freeze``);
* models: :class:`StrAF`, :class:`ARF`, :class:`GNF`, :class:`StrCNF`, :class:`FFJORD`
  (``strnn_fast.flows``; normalizers affine, spline, UMNN in ``strnn_fast.flows.normalizers``;
  ``flow(context)`` is a ``torch.distributions.Distribution``), :class:`StrNNDensityEstimator`
  (``strnn_fast.density``), :class:`CausalFlow` (``strnn_fast.causal``); all of them
  conditional on a context with ``context_features``/``context_adjacency``
  (checks in ``strnn_fast._context``);
* training and files: :func:`fit` (``strnn_fast.train``), :func:`load`;
* graphs and data: ``strnn_fast.graph``, ``strnn_fast.data``; the command line ``strnn-fast``.

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
from .factorize import check_masks, connections, factorize, path_counts, required_width
from .flows import ARF, FFJORD, GNF, StrAF, StrCNF
from .nn import FastStrNN, MaskedLinear
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
    "factorize",
    "fit",
    "graph",
    "load",
    "path_counts",
    "required_width",
]
__version__ = "0.1.0"
