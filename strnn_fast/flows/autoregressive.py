r"""Autoregressive flows on a DAG: a stack of conditioner + normalizer steps, inverted along the graph.

Variables are put in a topological order of the graph internally (``x[:, order]``) and every
answer is given back in the user's order, so the user's variables need not be sorted. A step is
``z = τ(x; c(x))`` where ``c(x)[:, i]`` depends only on x's parents (conditioners) and τ is
elementwise (normalizers); its Jacobian is triangular, with log-determinant ``Σ_i log|∂τ/∂x_i|``.

Inverse: start from x = 0 and repeat ``x <- τ^{-1}(z; c(x))``. After pass p every variable whose
longest chain of ancestors has p edges or fewer is exact, so ``depth(A) + 1`` passes invert a step
exactly (``depth`` is the longest path): d passes for a full triangle, 2 for a bipartite graph.
On CPU a step also ends as soon as a pass leaves x bitwise unchanged: x is then a fixed point
of the (deterministic) pass, so every further pass would return it again and the answer is the
one of all ``depth + 1`` passes, bit for bit. Trained conditioners often stop reading far
ancestors within rounding, which ends steps early. On other devices the check would cost a host
synchronization per pass, so they always run ``depth + 1`` passes (:attr:`FlowStep.early_stop`).
Where no gradient is needed (``sample``, ``inverse`` under ``no_grad``) a StrNN-conditioned step
skips the passes altogether: :mod:`strnn_fast.flows.levels` computes each unit of the conditioner
once, as soon as its inputs are final (``depth + 1`` stages of about one pass in all).

Conditional flows (``context_features=C``): every step's conditioner also reads the context
c (B, C) through the (d, C) ``context_adjacency``; the context is fixed during the inverse.

Example:
    >>> from strnn_fast.flows import StrAF
    >>> flow = StrAF([("a", "b"), ("b", "c")], hidden_sizes=(8,), flow_steps=2)
    >>> flow.reset_passes(); _ = flow.sample(4); flow.passes  # level-scheduled: depth + 1 stages
    [3, 3]
    >>> flow.reset_passes(); _ = flow.rsample((4,)); flow.passes  # zero-initialized: fixed after one pass
    [2, 2]
    >>> for step in flow.steps: step.early_stop = False
    >>> flow.reset_passes(); _ = flow.rsample((4,)); flow.passes
    [3, 3]
"""
from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .._validate import as_positive_int
from ..graph import as_adjacency, check_dag, depth, topological_order
from .base import Flow
from . import fused_step
from .conditioners import Conditioner
from .levels import level_plan
from .normalizers import Normalizer, make_normalizer

__all__ = ["COMMON_ARGUMENTS", "AutoregressiveFlow", "ConditionerFactory", "FlowStep", "build_steps"]


class FlowStep(nn.Module):
    r"""One autoregressive step ``z = τ(x; c(x))``, optionally acting on permuted coordinates.

    Arguments:
        conditioner: maps (B, d) to (B, d, normalizer.n_params), respecting its adjacency.
        normalizer: elementwise bijection.
        permutation: the step sees ``x[:, permutation]`` and answers in the unpermuted order
            (None: identity). The conditioner's adjacency is in the permuted coordinates.
    """

    #: End the inverse at a bitwise fixed point (CPU only; see the module docstring).
    early_stop: bool = True
    #: A level plan of torch ops (:func:`~strnn_fast.flows.levels.traceable_plan`) that the
    #: inverse runs instead of the cached one: set while :mod:`strnn_fast.export` traces.
    traced_plan: Any = None

    def __init__(self, conditioner: Conditioner, normalizer: Normalizer, permutation: Sequence[int] | None = None):
        super().__init__()
        if conditioner.n_params != normalizer.n_params:
            raise ValueError(f"conditioner gives {conditioner.n_params} parameters per variable, "
                             f"the normalizer needs {normalizer.n_params}")
        self.conditioner = conditioner
        self.normalizer = normalizer
        d = conditioner.d
        perm = np.arange(d) if permutation is None else np.asarray(permutation, dtype=np.int64)
        if sorted(perm.tolist()) != list(range(d)):
            raise ValueError(f"permutation must be a permutation of 0..{d - 1}, got {perm.tolist()}")
        self.permuted = permutation is not None and bool((perm != np.arange(d)).any())
        self.register_buffer("perm", torch.from_numpy(perm), persistent=False)
        self.register_buffer("unperm", torch.from_numpy(np.argsort(perm)), persistent=False)
        self.n_passes = depth(conditioner.adjacency) + 1

    @property
    def structure(self) -> np.ndarray:
        """(d, d) bool: which inputs each output's parameters may read, in unpermuted coordinates."""
        p = self.perm.cpu().numpy()
        out = np.zeros_like(self.conditioner.adjacency)
        out[np.ix_(p, p)] = self.conditioner.adjacency
        return out

    @property
    def context_structure(self) -> np.ndarray:
        """(d, C) bool: which context features each output's parameters may read, unpermuted rows."""
        out = np.zeros_like(self.conditioner.context_adjacency)
        out[self.perm.cpu().numpy()] = self.conditioner.context_adjacency
        return out

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        fused = fused_step.step(self, x, context)  # an affine step as one autograd node, where it applies
        if fused is not None:
            return fused
        if self.permuted:
            x = x[:, self.perm]
        h = self.conditioner(x, context)
        if x.dim() == 2 and h.stride(0) == 1:
            # Feature-major parameters (an exported conditioner's GroupedChain.block_view): the
            # normalizer (elementwise over the leading dimensions) runs on the (d, B) transposes,
            # so that Inductor's loops run along the batch, contiguous. d=100 spline log_prob
            # package, batch 4096, 1 thread (CPU time, interleaved): 169 ms, eager 183; batch-major
            # loops over such parameters took 218 ms. Two faster-looking layouts miscompiled in
            # AOTInductor (torch 2.13) on held-out models (bench/results/export_notes.md).
            z, log_det = self.normalizer(x.t(), h.transpose(0, 1))
            z, log_det = z.t(), log_det.t()
        else:
            z, log_det = self.normalizer(x, h)
        if self.permuted:
            z = z[:, self.unperm]
        return z, log_det.sum(-1)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.permuted:
            z = z[:, self.perm]
        plan = self.traced_plan if self.traced_plan is not None else level_plan(self, z)
        if plan is not None:  # no gradient needed: each unit once, as soon as its inputs are final
            self.conditioner.passes += plan.n_stages
            x = plan.inverse(self.normalizer, z, context)
            return x[:, self.unperm] if self.permuted else x
        x = torch.zeros_like(z)
        check = self.early_stop and z.device.type == "cpu"
        for _ in range(self.n_passes):
            new = self.normalizer.inverse(z, self.conditioner(x, context))
            if check and torch.equal(new, x):
                break  # a fixed point: all further passes return it unchanged
            x = new
        return x[:, self.unperm] if self.permuted else x


#: ``(n_params, first, perm) -> Conditioner``, as :func:`build_steps` calls it.
ConditionerFactory = Callable[[int, Conditioner | None, Sequence[int] | None], Conditioner]

#: The arguments every family shares, documented once: the line ``{common_arguments}`` of a
#: family's docstring becomes this paragraph, so that ``help()`` describes every argument.
COMMON_ARGUMENTS = r"""flow_steps: number of steps.
normalizer: "affine" (``z = x exp(s) + t``), "spline" (rational-quadratic, analytic inverse) or
    "umnn" (monotone integral).
names: variable names (taken from an edge list or graph when omitted).
prior: "normal" or "laplace".
activation: hidden activation of the conditioners.
context_features, context_adjacency, context_names: a conditional flow p(x | c) on C
    context features, each variable reading the features its row of the (d, C)
    ``context_adjacency`` allows (default all); see :class:`~strnn_fast.flows.AutoregressiveFlow`.
**normalizer_options: of :class:`~strnn_fast.flows.normalizers.AffineNormalizer` (``scale_bound``),
    :class:`~strnn_fast.flows.normalizers.SplineNormalizer` (``bins``, ``bound``, ...) or
    :class:`~strnn_fast.flows.normalizers.UMNNNormalizer` (``embedding_size``, ``integrand_hidden``,
    ``quadrature_intervals``, ``tol``, ...)."""


class AutoregressiveFlow(Flow):
    r"""The autoregressive flow that StrAF, ARF and GNF specialize: a DAG, its internal
    topological order, and a stack of conditioner + normalizer steps.

    A family (a subclass) differs only in its conditioners: it implements :meth:`_conditioners`,
    whose keyword-only parameters are the family's own options. Those join the family's
    signature after ``activation`` (what ``inspect.signature``, ``help()`` and the saved
    ``config`` show), and its docstring's ``{common_arguments}`` line becomes
    :data:`COMMON_ARGUMENTS`.

    Arguments:
        adjacency: the DAG (matrix, edge list of (parent, child), or networkx DiGraph), or an int
            d for d variables without a graph.
        hidden_sizes, flow_steps, normalizer, activation: of the steps, as in
            :class:`~strnn_fast.flows.StrAF`.
        names: variable names (see :func:`strnn_fast.graph.as_adjacency`).
        prior: "normal" or "laplace".
        context_features: number C of context features to condition on (0: an unconditional flow).
        context_adjacency: (d, C) 0/1 matrix, rows in the user's variable order:
            ``context_adjacency[i, j] = 1`` lets variable i's transforms read context feature j.
            Default: every variable reads every feature.
        context_names: optional names of the context features.
        **options: the family's own options, then the normalizer's.

    Raises:
        ValueError: the graph has a cycle (named in the message), or is malformed; a context
            adjacency of the wrong shape or not 0/1.

    Example:
        Conditional spline flows of each family, b (not a) reading the context feature:

        >>> from strnn_fast.flows import ARF, GNF, StrAF
        >>> c = torch.randn(4, 1)
        >>> for family in (StrAF, ARF, GNF):
        ...     flow = family([("a", "b")], hidden_sizes=(8,), flow_steps=1, normalizer="spline", bins=4,
        ...                   context_features=1, context_adjacency=[[0], [1]])
        ...     x = flow.sample(4, context=c)
        ...     print(family.__name__, tuple(flow.log_prob(x, context=c).shape), flow.context_structure.ravel().tolist())
        StrAF (4,) [False, True]
        ARF (4,) [False, True]
        GNF (4,) [False, True]
    """

    steps: nn.ModuleList
    #: Names of the family's own options (set from :meth:`_conditioners` for each family).
    family_options: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "_conditioners" in cls.__dict__:
            _make_family(cls)
        # Savable's hook comes after, so that it records arguments under the family's signature.
        super().__init_subclass__(**kwargs)

    def __init__(self, adjacency: Any, hidden_sizes: Sequence[int] = (64, 64), flow_steps: int = 5,
                 normalizer: str = "affine", *, names: Sequence[str] | None = None, prior: str = "normal",
                 activation: str = "relu", context_features: int = 0, context_adjacency: Any = None,
                 context_names: Sequence[str] | None = None, **options: Any):
        self.from_count = isinstance(adjacency, (int, np.integer)) and not isinstance(adjacency, bool)
        if self.from_count:
            d = as_positive_int(adjacency, "adjacency (a number of variables)")
            A, found = as_adjacency(np.zeros((d, d), dtype=bool), names)
        else:
            A, found = as_adjacency(adjacency, names)
        check_dag(A, found)
        super().__init__(A.shape[0], names=found, prior=prior, context_features=context_features,
                         context_names=context_names)
        self.adjacency: np.ndarray = A
        self.context_adjacency = self._context_adjacency(context_adjacency)
        order = topological_order(A)
        # Sorted input (the common case) skips two gathers per call.
        self.sorted_input = bool((order == np.arange(self.d)).all())
        self.register_buffer("order", torch.from_numpy(order), persistent=False)
        self.register_buffer("rank", torch.from_numpy(np.argsort(order)), persistent=False)
        own = {k: v for k, v in options.items() if k in self.family_options}
        normalizer_options = {k: v for k, v in options.items() if k not in own}
        self.steps = build_steps(flow_steps, normalizer, normalizer_options,
                                 self._conditioners(hidden_sizes, activation, **own), self._permutation)

    def _conditioners(self, hidden_sizes: Sequence[int], activation: str) -> ConditionerFactory:
        """The family's hook: checks its own options (keyword-only), returns its conditioner factory."""
        raise NotImplementedError(f"{type(self).__name__} defines no conditioners; use StrAF, ARF or GNF")

    def _permutation(self, k: int) -> Sequence[int] | None:
        """The variable order step k sees (None: the internal one); a family may override it."""
        return None

    def graph_config(self) -> int | list[list[int]]:
        """The adjacency as ``config`` records it: the int d, or the matrix as nested lists."""
        return self.d if self.from_count else self.adjacency.astype(int).tolist()

    def _resolved_config(self) -> dict[str, Any]:
        return {**super()._resolved_config(), "adjacency": self.graph_config(), "flow_steps": len(self.steps)}

    def _net_config(self, *keys: str) -> dict[str, Any]:
        # Options as the first step's FastStrNN resolved them (hidden sizes as a list, backend, ...).
        net = self.steps[0].conditioner.net
        return {k: list(net.hidden_sizes) if k == "hidden_sizes" else getattr(net, k) for k in keys}

    @property
    def sorted_context_adjacency(self) -> np.ndarray:
        """The (d, C) context adjacency with rows in the internal (topological) order."""
        return self.context_adjacency[self.order.cpu().numpy()]

    @property
    def sorted_adjacency(self) -> np.ndarray:
        """The adjacency in the internal (topological) order: strictly lower triangular."""
        o = self.order.cpu().numpy()
        return self.adjacency[np.ix_(o, o)]

    @property
    def structure(self) -> np.ndarray:
        r"""(d, d) bool, user order: union over steps of the inputs each step's parameters read.

        The forward map's Jacobian vanishes outside the transitive closure of this plus the diagonal.
        """
        o = self.order.cpu().numpy()
        inner = np.zeros((self.d, self.d), dtype=bool)
        for step in self.steps:
            inner |= step.structure
        out = np.zeros_like(inner)
        out[np.ix_(o, o)] = inner
        return out

    @property
    def context_structure(self) -> np.ndarray:
        r"""(d, C) bool, user order: union over steps of the context features each step's parameters read.

        z_i can depend on c_j only if some ancestor-or-self k of i (in the closure of
        :attr:`structure`) has ``context_structure[k, j]``.
        """
        inner = np.zeros((self.d, self.context_features), dtype=bool)
        for step in self.steps:
            inner |= step.context_structure
        out = np.zeros_like(inner)
        out[self.order.cpu().numpy()] = inner
        return out

    @property
    def passes(self) -> list[int]:
        """Conditioner passes of each step since the last :meth:`reset_passes`."""
        return [step.conditioner.passes for step in self.steps]

    def reset_passes(self) -> None:
        """Sets every step's pass counter to zero."""
        for step in self.steps:
            step.conditioner.passes = 0

    def _transform(self, x: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # Rows in the user's variable order, stepped through in the flow's topological order.
        u = x if self.sorted_input else x[:, self.order]
        log_det = u.new_zeros(u.shape[0])
        for step in self.steps:
            u, step_log_det = step(u, c)
            log_det = log_det + step_log_det
        return (u if self.sorted_input else u[:, self.rank]), log_det

    def _inverse(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        # Each step inverts with at most depth + 1 conditioner passes.
        u = z if self.sorted_input else z[:, self.order]
        for step in reversed(self.steps):
            u = step.inverse(u, c)
        return u if self.sorted_input else u[:, self.rank]


def build_steps(
    flow_steps: int,
    normalizer: str,
    normalizer_options: dict[str, Any],
    conditioner: ConditionerFactory,
    permutation: Callable[[int], Sequence[int] | None] = lambda k: None,
) -> nn.ModuleList:
    r"""Builds ``flow_steps`` steps, each with its own normalizer and conditioner.

    Arguments:
        flow_steps: number of steps.
        normalizer: "affine", "spline" or "umnn".
        normalizer_options: keyword options of the normalizer.
        conditioner: ``(n_params, first, perm) -> Conditioner``; ``first`` is the first step's
            conditioner (None while building it), so later ones can share its factorization;
            ``perm`` is the step's permutation or None (rows of a context adjacency follow it).
        permutation: ``k -> permutation`` of step k, or None for none.
    """
    n = as_positive_int(flow_steps, "flow_steps")
    steps: list[FlowStep] = []
    for k in range(n):
        norm = make_normalizer(normalizer, **normalizer_options)
        perm = permutation(k)
        cond = conditioner(norm.n_params, steps[0].conditioner if steps else None, perm)
        steps.append(FlowStep(cond, norm, perm))
    return nn.ModuleList(steps)


def _make_family(cls: type[AutoregressiveFlow]) -> None:
    """Records a family's own options, fills its docstring and, unless it writes its own
    ``__init__``, gives it the shared one under a signature that lists its options too."""
    own = [p for p in inspect.signature(cls._conditioners).parameters.values() if p.kind is p.KEYWORD_ONLY]
    cls.family_options = tuple(p.name for p in own)
    if cls.__doc__:
        cls.__doc__ = re.sub(r"^([ \t]*)\{common_arguments\}$",
                             lambda m: textwrap.indent(COMMON_ARGUMENTS, m.group(1)), cls.__doc__, flags=re.M)
    if "__init__" in cls.__dict__:
        return
    shared = list(inspect.signature(AutoregressiveFlow.__init__).parameters.values())
    at = [p.name for p in shared].index("activation") + 1
    # The base's **options less the family's own is what reaches the normalizer.
    rest = shared[-1].replace(name="normalizer_options")

    def __init__(self: AutoregressiveFlow, *args: Any, **kwargs: Any) -> None:
        super(cls, self).__init__(*args, **kwargs)

    __init__.__signature__ = inspect.Signature([*shared[:at], *own, *shared[at:-1], rest])  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__module__ = cls.__module__
    cls.__init__ = __init__  # type: ignore[method-assign]
