r"""StrCNF: an FFJORD continuous normalizing flow whose dynamics are a structured network; FFJORD.

``x`` (data, time 0) flows to ``z`` (base, time T) along ``dx/dt = f(t, x)``, and
``log p(x) = log prior(z) + ∫₀ᵀ tr(∂f/∂x) dt``. In :class:`StrCNF`, f is a
:class:`~strnn_fast.FastStrNN` on ``A + I``; :class:`FFJORD` is the same flow with dense dynamics.

Graphs: a CNF is invertible for any Lipschitz dynamics (the ODE solution is unique and can be run
backwards), so unlike an autoregressive flow it needs neither a DAG nor a variable order, and
cycles are accepted (the paper uses DAGs). The adjacency constrains the *instantaneous* velocity:
through the solve, z_i depends on every ancestor of x_i in A (the transitive closure of A + I),
which :attr:`StrCNF.jacobian_pattern` reports.

Example:
    >>> flow = StrCNF([[0, 0, 0], [1, 0, 0], [0, 1, 0]], hidden_sizes=(16,), atol=1e-4, rtol=1e-4)
    >>> x = torch.randn(5, 3)
    >>> flow.log_prob(x).shape
    torch.Size([5])
    >>> z, logdet = flow.transform(x)
    >>> bool(torch.allclose(flow.inverse(z), x, atol=1e-3))
    True
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .._validate import as_positive_int, as_real, as_sizes, choice
from ..graph import as_adjacency, transitive_closure
from . import fixed_step
from .base import Flow
from .odefunc import CNFDynamics

__all__ = ["FFJORD", "StrCNF"]


@functools.cache
def _solvers() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(fixed-step, adaptive) solver names of torchdiffeq, imported on first use: torchdiffeq pulls
    in scipy.integrate, which ``import strnn_fast`` should not pay for."""
    from torchdiffeq._impl.odeint import SOLVERS
    from torchdiffeq._impl.solvers import FixedGridODESolver

    # scipy_solver is left out: it integrates outside autograd, so it cannot train a flow.
    fixed = tuple(k for k, v in SOLVERS.items() if isinstance(v, type) and issubclass(v, FixedGridODESolver))
    return fixed, tuple(k for k in SOLVERS if k not in fixed and k != "scipy_solver")


def __getattr__(name: str) -> Any:
    # FIXED_STEP_SOLVERS and ADAPTIVE_SOLVERS, computed lazily (see _solvers).
    if name == "FIXED_STEP_SOLVERS":
        return _solvers()[0]
    if name == "ADAPTIVE_SOLVERS":
        return _solvers()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

EXACT_UP_TO = 64


class StrCNF(Flow):
    r"""Continuous normalizing flow (FFJORD) with StrNN dynamics: velocity of x_i depends on x_j only if A[i, j] = 1.

    The dynamics network is a FastStrNN on ``A + I``, the diagonal added automatically: the
    velocity of x_i must see x_i itself (otherwise the flow cannot even rescale a variable), and
    the divergence ``tr(∂f/∂x)`` then involves only the diagonal entries that the structure
    keeps. Any square adjacency is accepted, cycles included (see the module docstring).

    Arguments:
        adjacency: (d, d) adjacency (matrix, edge list or networkx graph, see
            :func:`strnn_fast.graph.as_adjacency`); a diagonal, if given, is accepted.
        hidden_sizes: hidden widths of each block's network.
        flow_steps: number of CNF blocks chained (each with its own network and end time).
        divergence: "exact" or "hutchinson"; None picks exact up to d = 64 and Hutchinson beyond.
            Exact runs one vmapped backward (``torch.func``) over one probe per group of
            variables whose Jacobian rows share no column in A + I: k groups instead of d basis
            vectors, a handful for sparse graphs (:func:`~strnn_fast.flows.odefunc.probe_groups`).
        names: variable names in matrix order.
        prior: base distribution, "normal" or "laplace".
        noise: Hutchinson probes, "gaussian" or "rademacher" (one draw per solve, as FFJORD).
        time_conditioning: feed t to the network as one more input, connected to every output.
        activation: hidden activation; smooth ones ("softplus", "tanh", ...) suit ODE solvers.
        opt_type, opt_args: how FastStrNN factorizes A + I.
        end_time: initial integration time T of each block.
        train_end_time: learn T (kept positive through a softplus).
        solver: a torchdiffeq method: adaptive ("dopri5", "dopri8", "bosh3", "fehlberg2",
            "adaptive_heun") or fixed-step ("euler", "midpoint", "heun2", "heun3", "rk4",
            "explicit_adams", "implicit_adams", "fixed_adams").
        atol, rtol: tolerances of adaptive solvers (and of implicit_adams' corrector).
        step_size: largest step in units of t, required by fixed-step solvers and refused by
            adaptive ones; [0, T] is divided into ceil(T / step_size) equal steps.
        adjoint: backpropagate with the adjoint method (memory independent of the number of steps)
            instead of through the solver's operations (faster for small networks).
        kinetic_weight: weight of the kinetic energy ``∫ ||f||² dt`` in :meth:`extra_loss`.
        jacobian_weight: weight of ``∫ ||∂f/∂x||_F² dt`` in :meth:`extra_loss` (exact with the
            exact divergence, Hutchinson-estimated otherwise).
        context_features, context_adjacency, context_names: a conditional flow p(x | c): the
            velocity of x_i also reads the context features its row of the (d, C)
            ``context_adjacency`` allows (default all). Gradients reach the context under
            backpropagation and the adjoint method alike.

    Example:
        >>> flow = StrCNF(np.eye(3, k=-1), hidden_sizes=(8,), solver="rk4", step_size=0.25)
        >>> flow.sample((4,)).shape
        torch.Size([4, 3])
        >>> cond = StrCNF(np.eye(3, k=-1), hidden_sizes=(8,), solver="rk4", step_size=0.25, context_features=1,
        ...               context_adjacency=[[1], [0], [0]])
        >>> cond.set_solver(adjoint=True)  # the context still gets its gradient
        >>> c = torch.ones(4, 1, requires_grad=True)
        >>> cond.log_prob(torch.randn(4, 3), context=c).sum().backward()
        >>> c.grad is not None and c.grad.shape == c.shape
        True
        >>> cond.sample(4, context=torch.ones(1)).shape, cond.context_jacobian_pattern.astype(int).ravel().tolist()
        (torch.Size([4, 3]), [1, 1, 1])
    """

    def __init__(
        self,
        adjacency: Any,
        hidden_sizes: Sequence[int] = (64, 64),
        flow_steps: int = 1,
        divergence: str | None = None,
        *,
        names: Sequence[str] | None = None,
        prior: str = "normal",
        noise: str = "gaussian",
        time_conditioning: bool = False,
        activation: str = "softplus",
        opt_type: str = "greedy",
        opt_args: dict | None = None,
        end_time: float = 1.0,
        train_end_time: bool = True,
        solver: str = "dopri5",
        atol: float = 1e-5,
        rtol: float = 1e-5,
        step_size: float | None = None,
        adjoint: bool = False,
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        context_features: int = 0,
        context_adjacency: Any = None,
        context_names: Sequence[str] | None = None,
    ):
        A, found_names = as_adjacency(adjacency, names, allow_self_loops=True)
        d = A.shape[0]
        super().__init__(d, names=found_names, prior=prior, context_features=context_features,
                         context_names=context_names)
        self.context_adjacency = self._context_adjacency(context_adjacency)
        self.A = A & ~np.eye(d, dtype=bool)
        self.hidden_sizes = as_sizes(hidden_sizes)
        self.flow_steps = as_positive_int(flow_steps, "flow_steps")
        if divergence is None:
            divergence = "exact" if d <= EXACT_UP_TO else "hutchinson"
        self.kinetic_weight = as_real(kinetic_weight, "kinetic_weight", non_negative=True)
        self.jacobian_weight = as_real(jacobian_weight, "jacobian_weight", non_negative=True)
        self.blocks = nn.ModuleList(
            CNFDynamics(self.A, self.hidden_sizes, time_conditioning=time_conditioning, activation=activation,
                        opt_type=opt_type, opt_args=opt_args, divergence=divergence, noise=noise,
                        end_time=end_time, train_end_time=train_end_time,
                        context_adjacency=self.context_adjacency if self.context_features else None)
            for _ in range(self.flow_steps)
        )
        first = self.blocks[0]
        self.divergence = first.divergence
        self._set_solver(solver, atol, rtol, step_size, adjoint)
        self._penalty: torch.Tensor | None = None
        # Steps per block while the solve runs unrolled in torch ops (set by export_mode), else None.
        self.unrolled_steps: list[int] | None = None

    def set_solver(
        self,
        solver: str | None = None,
        *,
        atol: float | None = None,
        rtol: float | None = None,
        step_size: float | None = None,
        adjoint: bool | None = None,
    ) -> None:
        r"""Changes how the ODEs are solved (e.g. tighter tolerances for evaluation); None keeps a setting.

        A fixed-step solver keeps the current ``step_size`` unless given one; an adaptive solver
        drops it.

        Example:
            >>> flow = StrCNF(np.eye(2, k=-1), hidden_sizes=(4,))
            >>> flow.set_solver("euler", step_size=0.1)
            >>> flow.solver, flow.step_size
            ('euler', 0.1)
        """
        solver = self.solver if solver is None else solver
        if step_size is None and solver in _solvers()[0]:
            step_size = self.step_size
        self._set_solver(solver, self.atol if atol is None else atol, self.rtol if rtol is None else rtol,
                         step_size, self.adjoint if adjoint is None else adjoint)

    def _set_solver(self, solver: Any, atol: Any, rtol: Any, step_size: Any, adjoint: Any) -> None:
        fixed, adaptive = _solvers()
        solver = choice(solver, adaptive + fixed, "solver")
        if solver in fixed:
            if step_size is None:
                raise ValueError(f"solver {solver!r} takes fixed steps: pass step_size (in units of t)")
            step_size = as_real(step_size, "step_size", positive=True)
        elif step_size is not None:
            raise ValueError(f"step_size applies to fixed-step solvers ({', '.join(fixed)}); "
                             f"{solver!r} chooses its steps from atol and rtol")
        if not isinstance(adjoint, bool):
            raise TypeError(f"adjoint must be a bool, got {adjoint!r}")
        self.solver, self.step_size, self.adjoint = solver, step_size, adjoint
        self.atol, self.rtol = as_real(atol, "atol", positive=True), as_real(rtol, "rtol", positive=True)

    def _resolved_config(self) -> dict[str, Any]:
        # The solver settings are the current ones (set_solver changes them after construction).
        first = self.blocks[0]
        return {**super()._resolved_config(), "adjacency": self.A.astype(int).tolist(),
                "hidden_sizes": list(self.hidden_sizes), "flow_steps": self.flow_steps,
                "divergence": first.divergence, "noise": first.noise,
                "time_conditioning": first.time_conditioning, "activation": first.net.activation,
                "opt_type": first.net.opt_type, "opt_args": first.net.opt_args,
                "kinetic_weight": self.kinetic_weight, "jacobian_weight": self.jacobian_weight,
                "solver": self.solver, "atol": self.atol, "rtol": self.rtol, "step_size": self.step_size,
                "adjoint": self.adjoint}

    @property
    def jacobian_pattern(self) -> np.ndarray:
        """(d, d) bool: where ∂z/∂x may be nonzero, the transitive closure of A plus the diagonal.

        Exact for fixed-step solvers. Adaptive solvers pick step sizes from an error norm over all
        variables, which adds entries of the order of the tolerance elsewhere."""
        return transitive_closure(self.A) | np.eye(self.d, dtype=bool)

    @property
    def context_jacobian_pattern(self) -> np.ndarray:
        """(d, C) bool: where ∂z/∂c may be nonzero: z_i reads c_j through any ancestor-or-self k
        of i (in :attr:`jacobian_pattern`) whose velocity reads c_j."""
        return (self.jacobian_pattern.astype(np.int64) @ self.context_adjacency.astype(np.int64)) > 0

    @property
    def end_times(self) -> list[float]:
        """Current integration time T of each block."""
        return [float(b.end_time.detach()) for b in self.blocks]

    @property
    def nfe(self) -> int:
        """Function evaluations of the dynamics since the last :meth:`reset_nfe`, all blocks, both
        directions (the adjoint pass included)."""
        return sum(b.nfe for b in self.blocks)

    def reset_nfe(self) -> None:
        """Sets :attr:`nfe` to zero."""
        for b in self.blocks:
            b.nfe = 0

    @property
    def regularized(self) -> bool:
        """Whether a kinetic-energy or Jacobian penalty is on (then training solves carry 2 more states)."""
        return self.kinetic_weight > 0 or self.jacobian_weight > 0

    def fixed_steps(self) -> list[int]:
        r"""The number of steps of each block on its current end time, for unrolling the solve (export).

        Raises:
            ValueError: the solver is adaptive, or one :mod:`~strnn_fast.flows.fixed_step` does not
                reproduce (implicit_adams: its corrector iterates until it converges).

        Example:
            >>> StrCNF(np.eye(2, k=-1), hidden_sizes=(4,), solver="rk4", step_size=0.3).fixed_steps()
            [4]
        """
        methods = ", ".join(fixed_step.SOLVERS)
        if self.step_size is None:
            raise ValueError(f"StrCNF with the adaptive solver {self.solver!r} is not exportable (its steps depend "
                             f"on the data); call set_solver(...) with a fixed-step method ({methods}) and a "
                             "step_size first, e.g. set_solver('rk4', step_size=0.1)")
        if self.solver not in fixed_step.SOLVERS:
            raise ValueError(f"StrCNF with the solver {self.solver!r} is not exportable (its corrector iterates "
                             f"until it converges); call set_solver(...) with one of {methods} first")
        return [_grid_steps(float(b.end_time.detach()) / self.step_size) for b in self.blocks]

    def _solve(self, x: torch.Tensor, reverse: bool, penalize: bool = False,
               context: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if self.unrolled_steps is not None:  # export: the same integration in torch ops (fixed_step.py)
            return fixed_step.solve(list(self.blocks), self.solver, self.unrolled_steps, x, reverse=reverse,
                                    context=context)
        zeros = x.new_zeros(x.shape[0])
        totals = [zeros, zeros, zeros] if penalize else [zeros]
        blocks = list(self.blocks)[::-1] if reverse else list(self.blocks)
        span = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=x.dtype, device=x.device)
        for block in blocks:
            block.begin(x, context)
            options = {}
            if self.step_size is not None:
                options["grid_constructor"] = _uniform_grid(float(block.end_time.detach()) / self.step_size)
            state = (x, *(zeros for _ in totals))
            settings = dict(method=self.solver, atol=self.atol, rtol=self.rtol, options=options)
            from torchdiffeq import odeint, odeint_adjoint  # lazily: see _solvers

            try:
                solution = self._integrate(odeint, odeint_adjoint, block, state, span, settings)
            except AssertionError as err:  # torchdiffeq's "underflow in dt": the step size collapsed
                raise FloatingPointError(f"the ODE solver failed ({err}): the dynamics became too stiff; "
                                         "lower lr, standardize the data or loosen atol/rtol") from None
            final = [s[-1] for s in solution]
            x = final[0]
            totals = [total + f for total, f in zip(totals, final[1:])]
        return (x, *totals)

    def _integrate(self, odeint: Any, odeint_adjoint: Any, block: Any, state: Any, span: Any,
                   settings: dict[str, Any]) -> Any:
        if self.adjoint:
            # The context is an input of the dynamics like the weights: as an adjoint parameter
            # its gradient is integrated with theirs (torchdiffeq drops it if it needs none).
            return odeint_adjoint(_Pinned(block), state, span, **settings,
                                  adjoint_params=(*block.parameters(), *_context_of(block)))
        return odeint(block, state, span, **settings)

    def _transform(self, x: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # In training mode with autograd on and a penalty weight set, the solve also integrates the
        # regularizers, which extra_loss then returns.
        penalize = self.regularized and self.training and torch.is_grad_enabled()
        z, logdet, *penalties = self._solve(x, reverse=False, penalize=penalize, context=c)
        if penalize:
            kinetic, frobenius = penalties
            self._penalty = self.kinetic_weight * kinetic.mean() + self.jacobian_weight * frobenius.mean()
        return z, logdet

    def _inverse(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        # The ODEs solved backwards in time.
        return self._solve(z, reverse=True, context=c)[0]

    def extra_loss(self) -> torch.Tensor:
        r"""The RNODE penalty of the last training-mode :meth:`transform` (zero when both weights are 0).

        :func:`strnn_fast.train.fit` adds it to the NLL. The value is handed out once, so a stale
        graph is never kept alive.

        Raises:
            RuntimeError: regularizers are on but no training-mode transform ran since the last call.
        """
        if not self.regularized:
            return torch.zeros((), dtype=self.blocks[0].raw_end_time.dtype, device=self.blocks[0].raw_end_time.device)
        if self._penalty is None:
            raise RuntimeError("extra_loss() needs a log_prob/transform in training mode with autograd enabled first")
        penalty, self._penalty = self._penalty, None
        return penalty


class FFJORD(StrCNF):
    r"""Unstructured FFJORD: :class:`StrCNF` whose dynamics network is dense (every velocity sees every variable).

    Same options and API as StrCNF; the baseline of the paper's CNF experiments.

    Arguments:
        d: number of variables.
        hidden_sizes, flow_steps, divergence, **options: as in :class:`StrCNF`.

    Example:
        >>> flow = FFJORD(3, hidden_sizes=(8,), atol=1e-4, rtol=1e-4)
        >>> flow.log_prob(torch.randn(2, 3)).shape
        torch.Size([2])
    """

    def __init__(self, d: int, hidden_sizes: Sequence[int] = (64, 64), flow_steps: int = 1,
                 divergence: str | None = None, **options: Any):
        d = as_positive_int(d, "d")
        if "adjacency" in options:
            raise TypeError("FFJORD is unstructured and takes no adjacency; use StrCNF for a structured flow")
        super().__init__(np.ones((d, d), dtype=bool), hidden_sizes, flow_steps, divergence, **options)

    def _resolved_config(self) -> dict[str, Any]:
        config = super()._resolved_config()
        del config["adjacency"]  # always dense: d rebuilds it
        return {"d": self.d, **config}


class _Pinned:
    r"""One block's dynamics pinned to the context and Hutchinson probe of one solve.

    The adjoint method evaluates the dynamics again during backward, when a later solve (another
    ``log_prob`` before ``backward``) may have re-begun the block with another context or probe:
    each evaluation first restores this solve's, so the backward pass integrates the same function
    as the forward pass.
    """

    def __init__(self, block: CNFDynamics):
        self.block, self.context, self.noise = block, block._context, block._noise

    def __call__(self, s: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        self.block._context, self.block._noise = self.context, self.noise
        return self.block(s, state)


def _context_of(block: CNFDynamics) -> tuple[torch.Tensor, ...]:
    # The solve's (B, C) context as a tuple of adjoint parameters (empty without one).
    return () if block._context is None else (block._context,)


def _grid_steps(steps: float) -> int:
    # ceil(T / step_size) equal steps. torchdiffeq's own step_size grid ends with a sliver step
    # whenever T / step_size is a hair above an integer, which rounding of the learned T causes.
    return max(1, math.ceil(steps - 1e-6))


def _uniform_grid(steps: float) -> Callable[[Any, Any, torch.Tensor], torch.Tensor]:
    n = _grid_steps(steps)

    def grid(func: Any, y0: Any, t: torch.Tensor) -> torch.Tensor:
        return torch.linspace(float(t[0]), float(t[-1]), n + 1, dtype=t.dtype, device=t.device)

    return grid
