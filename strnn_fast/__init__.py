r"""strnn_fast: Structured Neural Networks with a C++ factorizer and Triton block-sparse kernels.

Where things are (every public feature is two hops from here: this map, then the file named).
The repository holds ``csrc/`` (the C++ core, module ``strnn_fast._C``), ``strnn_fast/`` (this
package), ``kernels/`` (Triton, installed as ``strnn_fast.kernels``), ``tests/`` and ``bench/``.

* Masks: :func:`factorize`, :func:`check_masks`, :func:`path_counts`, :func:`connections`,
  :func:`required_width` in ``strnn_fast/factorize.py``, which calls the C++ core:

  - ``csrc/greedy.cpp`` (the paper's greedy algorithm and its refinement; state between layers in
    ``csrc/layer_state.cpp``, bit rows in ``csrc/bitmatrix.hpp``), ``csrc/zuko.cpp`` (Zuko's
    factorizer), ``csrc/made.cpp`` (MADE degrees);
  - ``csrc/paths.cpp`` (path counts, mask checks), ``csrc/arrays.cpp`` (reading untrusted numpy /
    scipy CSR arguments, writing masks), ``csrc/module.cpp`` (the pybind11 module; one
    ``bind_*`` per file, declared in ``csrc/bindings.hpp``), ``csrc/parallel.hpp`` (the
    parallel-for over rows);
  - the exact MILP in ``strnn_fast/exact.py`` (:func:`strnn_fast.exact.factorize_exact`).

* Networks: :class:`FastStrNN`, :class:`MaskedLinear` in ``strnn_fast/nn.py``; activations by
  name in ``strnn_fast/activations.py``. Backends of a masked layer: "dense" (masked weights,
  ``F.linear``), "sparse" (CSR SpMM / SDDMM that train, in ``strnn_fast/sparse_ops.py``) and
  "triton" (the block-sparse kernels of the top-level ``kernels/masked_linear.py``, installed as
  ``strnn_fast.kernels.masked_linear``; ahead-of-time compile checks in ``kernels/aot.py``);
  "auto" picks per layer from measured timings in ``strnn_fast/dispatch.py``
  (``choose_backend``, ``measure_model``). The kernels walk block layouts from
  ``strnn_fast/layout.py`` (:class:`~strnn_fast.layout.BlockLayout`, built by
  ``csrc/block_layout.cpp``, the one place tiles are counted); hidden-unit reordering for fewer
  tiles in ``strnn_fast/reorder.py`` (``csrc/reorder.cpp``); inference with precomputed weights
  and CUDA graphs in ``strnn_fast/freeze.py``.

* Models: :class:`StrAF`, :class:`ARF`, :class:`GNF` (``strnn_fast/flows/straf.py``, ``arf.py``,
  ``gnf.py`` on ``flows/autoregressive.py``; their conditioners in ``flows/conditioners.py``),
  :class:`StrCNF`, :class:`FFJORD` (``strnn_fast/flows/cnf.py``, dynamics in
  ``flows/odefunc.py``); the normalizers affine, spline and UMNN (with its inverse by bisection
  and its Clenshaw-Curtis quadrature in ``quadrature.py``) in
  ``strnn_fast/flows/normalizers/affine.py``, ``spline.py`` (on the CPU its forward, backward and
  inverse in ``csrc/spline.cpp``), ``umnn.py`` (their interface in
  ``flows/normalizers/base.py``); the priors (normal,
  Laplace) in ``flows/priors.py``; the shared distribution face and ``flow(context)`` (a
  ``torch.distributions.Distribution``) in ``strnn_fast/flows/base.py``.
  :class:`StrNNDensityEstimator` in ``strnn_fast/density.py``; :class:`CausalFlow`
  (interventions, counterfactuals) in ``strnn_fast/causal/flow.py`` and ``causal/queries.py``;
  :class:`~strnn_fast.standardize.Standardized` (a model in data units) and its
  :class:`~strnn_fast.standardize.Standardizer` in ``strnn_fast/standardize.py``; variable
  names, ``do`` assignments and table columns in ``strnn_fast/variables.py``
  (:class:`~strnn_fast.variables.Variables`). Context (conditioning features: ``context_features``,
  ``context_adjacency``) is checked in ``strnn_fast/_context.py``.

* Training and files: :func:`fit` in ``strnn_fast/train.py``; ``model.save`` and :func:`load` in
  ``strnn_fast/serialization.py`` (tensors plus a JSON header, classes from an allow-list
  ``ALLOWED_CLASSES``; ``Savable`` records constructor arguments); every file is written
  atomically by ``strnn_fast/_files.py``. Argument checks: ``strnn_fast/_validate.py``.

* Shipping: :func:`export` in ``strnn_fast/export.py`` (one method of a trained model as an
  AOTInductor ``.pt2`` or ONNX file that runs without strnn_fast; command ``export``).

* Graphs and data: ``strnn_fast/graph.py`` (adjacency from matrices, edge lists, networkx);
  ``strnn_fast/data/`` (random DAGs in ``adjacency.py``; the paper's multimodal data in
  ``multimodal.py``, binary data and the reference's binary files in ``binary.py``; the
  ``Dataset`` container, ``split`` and ``standardize`` in ``dataset.py``; SEMs in ``sem.py``;
  file loaders in ``loaders.py``).

* Command line ``strnn-fast`` (``strnn_fast/cli/__init__.py``; ``python -m strnn_fast.cli``
  through ``cli/__main__.py``), one file per command in
  ``strnn_fast/cli/``: ``fit.py``, ``sample.py``, ``logprob.py``, ``intervene.py``,
  ``counterfactual.py``, ``factorize.py``, ``demo.py``, ``export.py`` (shared helpers in ``_common.py``; the
  input tables, data rows and ``--context`` rows, in ``_tables.py``).

* Migrating from the reference package ``strnn``: ``strnn_fast.compat`` in
  ``strnn_fast/compat.py`` (``StrNN`` and the factorizer classes under their old names), loaded
  on first use.

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
    "export",
    "factorize",
    "fit",
    "graph",
    "load",
    "path_counts",
    "required_width",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # ``strnn_fast.compat`` without an explicit import (the module only renames; load it on demand).
    if name == "compat":
        import importlib

        return importlib.import_module(".compat", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
