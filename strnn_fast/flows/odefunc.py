r"""CNF dynamics: a structured network f(t, x), its divergence, and the RNODE regularizer integrands.

The right-hand side integrated by :class:`strnn_fast.flows.StrCNF` lives here; the flow itself
(solver, chaining, base distribution) lives in ``cnf.py``.

Time is reparameterized: the solver runs on ``s`` in [0, 1] and the state moves with
``dx/ds = T f(sT, x)``. The end time ``T`` is then an ordinary parameter of the dynamics, so its
gradient is exact under both backpropagation through the solver and the adjoint method (the
gradient with respect to an integration bound is not, for every torchdiffeq solver).

Example:
    >>> A = np.array([[0, 0], [1, 0]], dtype=bool)
    >>> dyn = CNFDynamics(A, (8,))
    >>> dyn.begin(torch.zeros(3, 2))
    >>> dx, dlogdet = dyn(torch.tensor(0.5), (torch.randn(3, 2), torch.zeros(3)))
    >>> dx.shape, dlogdet.shape
    (torch.Size([3, 2]), torch.Size([3]))
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import vjp, vmap

from .._validate import as_real, choice
from ..nn import FastStrNN

DIVERGENCES = ("exact", "hutchinson")
NOISES = ("gaussian", "rademacher")

__all__ = ["CNFDynamics", "exact_divergence", "hutchinson_divergence", "probe_groups"]


def exact_divergence(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, probes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Evaluates ``f`` and the exact trace of its Jacobian with one batched backward pass.

    The vector-Jacobian products against the probes run as one vmapped call (a single backward
    over a (k * B)-row batch) instead of k sequential autograd calls. With the identity as probes
    (k = d) that is the textbook exact divergence. A sparse Jacobian needs fewer: if the rows of
    one group share no nonzero column (see :func:`probe_groups`), the product with the group's
    indicator holds each of its rows' entries unmixed, so k = number of groups suffices, often a
    handful for a sparse graph whatever d is.

    ``f`` must act on rows independently (no batch statistics). The result stays differentiable by
    ordinary autograd (through the parameters ``f`` closes over), also under ``torch.no_grad``.

    Arguments:
        f: map from (B, d) to (B, d).
        x: (B, d) input.
        probes: (k, d) 0/1 rows partitioning the outputs into groups of structurally orthogonal
            Jacobian rows; None means the identity.

    Returns:
        ``(f(x), div, sq_frobenius)``: (B, d), (B,) trace of df/dx per row, and (B,) the squared
        Frobenius norm of df/dx per row (free here: every Jacobian entry is recovered anyway).

    Example:
        >>> out, div, fro = exact_divergence(lambda z: 3.0 * z, torch.ones(2, 4), torch.ones(1, 4))
        >>> div.tolist(), fro.tolist()
        ([12.0, 12.0], [36.0, 36.0])
    """
    out, pullback = vjp(f, x)
    if probes is None:
        probes = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    probes = probes.to(x)
    (rows,) = vmap(pullback)(probes.unsqueeze(1).expand(-1, x.shape[0], -1))  # (k, B, d): summed Jacobian rows
    div = (rows * probes.unsqueeze(1)).sum(dim=(0, 2))
    return out, div, rows.pow(2).sum(dim=(0, 2))


def probe_groups(pattern: np.ndarray) -> np.ndarray:
    r"""Partitions the rows of a Jacobian pattern into groups that share no nonzero column.

    Greedy coloring, rows with the most conflicts first. Such a partition lets
    :func:`exact_divergence` recover every Jacobian entry from one probe per group.

    Arguments:
        pattern: (d, d) bool, where the Jacobian may be nonzero (A + I for the CNF dynamics).

    Returns:
        (k, d) bool; row c marks the variables of group c; every variable is in exactly one group.

    Example:
        >>> probe_groups(np.eye(4, dtype=bool) | np.eye(4, k=-1, dtype=bool)).astype(int)
        array([[0, 1, 0, 1],
               [1, 0, 1, 0]])
    """
    P = pattern.astype(np.int64)
    conflict = (P @ P.T) > 0
    group = np.full(P.shape[0], -1)
    for i in np.argsort(-conflict.sum(axis=1), kind="stable"):
        taken = set(group[conflict[i]].tolist())
        group[i] = next(c for c in range(P.shape[0] + 1) if c not in taken)
    out = np.zeros((group.max() + 1, P.shape[0]), dtype=bool)
    out[group, np.arange(P.shape[0])] = True
    return out


def hutchinson_divergence(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Evaluates ``f`` and Hutchinson's unbiased estimate ``eᵀ (df/dx) e`` of the divergence.

    Arguments:
        f: map from (B, d) to (B, d).
        x: (B, d) input.
        noise: (B, d) probe ``e`` with E[e eᵀ] = I (Gaussian or Rademacher).

    Returns:
        ``(f(x), div_estimate, sq_frobenius_estimate)``, the last being ``||eᵀ df/dx||²``, unbiased
        for the squared Frobenius norm.

    Example:
        >>> e = torch.tensor([[1.0, -1.0]])
        >>> hutchinson_divergence(lambda z: 2.0 * z, torch.ones(1, 2), e)[1].tolist()
        [4.0]
    """
    out, pullback = vjp(f, x)
    (e_jac,) = pullback(noise)
    return out, (e_jac * noise).sum(-1), e_jac.pow(2).sum(-1)


class CNFDynamics(nn.Module):
    r"""Right-hand side of one CNF block, on the normalized time s in [0, 1].

    The network is a :class:`~strnn_fast.FastStrNN` on ``A + I``: the change of x_i must depend on
    x_i itself, or the flow cannot even rescale a variable, and with the diagonal present the
    divergence ``tr(df/dx)`` involves exactly the diagonal entries the structure guarantees. The
    exact divergence uses the structure too: one probe per group of :func:`probe_groups`. With
    ``time_conditioning`` the time t is one more input connected to every output (time may change
    every variable's velocity) while the structure among the variables is kept.

    The network runs on the dense backend: the divergence needs a vmap rule and its training
    gradient a second derivative, and the Triton kernels' autograd.Function provides neither.

    State: ``(x, logdet)``, or ``(x, logdet, kinetic, frobenius)`` to also integrate ``||f||²`` and
    ``||df/dx||_F²`` along the path (the RNODE regularizers, Finlay et al. 2020); the length of the
    state given to the solver selects which.

    Arguments:
        adjacency: (d, d) bool; ``adjacency[i, j]`` iff the velocity of i may depend on j. The
            diagonal is added here.
        hidden_sizes: hidden widths of the network.
        time_conditioning: feed t to the network.
        activation: smooth activations ("softplus", "tanh", ...) keep the dynamics differentiable.
        opt_type, opt_args: passed to FastStrNN.
        divergence: "exact" or "hutchinson".
        noise: "gaussian" or "rademacher" probes for Hutchinson.
        end_time: initial end time T (> 0).
        train_end_time: learn T (kept positive through a softplus).
        context_adjacency: (d, C) bool: the velocity of x_i may also read context feature j
            where ``context_adjacency[i, j]`` (None: no context). The context of a solve is set
            by :meth:`begin` and is constant in time.

    Example:
        >>> dyn = CNFDynamics(np.zeros((3, 3), dtype=bool), (6,), time_conditioning=True)
        >>> dyn.net.A.astype(int).tolist()
        [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]]
    """

    def __init__(
        self,
        adjacency: np.ndarray,
        hidden_sizes: Sequence[int],
        *,
        time_conditioning: bool = False,
        activation: str = "softplus",
        opt_type: str = "greedy",
        opt_args: dict | None = None,
        divergence: str = "exact",
        noise: str = "gaussian",
        end_time: float = 1.0,
        train_end_time: bool = True,
        context_adjacency: np.ndarray | None = None,
    ):
        super().__init__()
        d = adjacency.shape[0]
        self.d = d
        self.time_conditioning = bool(time_conditioning)
        self.divergence = choice(divergence, DIVERGENCES, "divergence")
        self.noise = choice(noise, NOISES, "noise")
        structure = adjacency.astype(bool) | np.eye(d, dtype=bool)
        self.context_features = 0 if context_adjacency is None else int(context_adjacency.shape[1])
        if self.context_features:
            structure = np.concatenate([structure, np.asarray(context_adjacency, dtype=bool)], axis=1)
        if self.time_conditioning:
            structure = np.concatenate([structure, np.ones((d, 1), dtype=bool)], axis=1)
        self.net = FastStrNN(structure.shape[1], hidden_sizes, d, opt_type=opt_type, opt_args=opt_args,
                             adjacency=structure, activation=activation, backend="dense")
        # Only the outputs' rows of the Jacobian matter (t is not a state variable).
        self.register_buffer("probes", torch.from_numpy(probe_groups(structure[:, :d])).to(torch.get_default_dtype()))
        # A zero output layer makes the untrained flow the identity: training starts at the prior's
        # NLL with cheap, non-stiff solves instead of first undoing a random flow.
        with torch.no_grad():
            self.net.layers[-1].weight.zero_()
            self.net.layers[-1].bias.zero_()
        raw = torch.tensor(_softplus_inverse(end_time), dtype=torch.get_default_dtype())
        if train_end_time:
            self.raw_end_time = nn.Parameter(raw)
        else:
            self.register_buffer("raw_end_time", raw)
        self.nfe = 0
        self._noise: torch.Tensor | None = None
        self._context: torch.Tensor | None = None

    @property
    def end_time(self) -> torch.Tensor:
        """The end time T > 0 (a differentiable 0-d tensor)."""
        return F.softplus(self.raw_end_time)

    def begin(self, x: torch.Tensor, context: torch.Tensor | None = None) -> None:
        """Draws the Hutchinson probe for the solve about to start: one probe per solve, as in FFJORD,
        so that the solver integrates a smooth function and the adjoint pass sees the same one;
        and sets the solve's (B, C) context (required when the dynamics have context features;
        checked by the flow's entry point)."""
        self._context = context if self.context_features else None
        if self.divergence == "exact":
            self._noise = None
        elif self.noise == "gaussian":
            self._noise = torch.randn_like(x)
        else:
            self._noise = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype).mul_(2).sub_(1)

    def velocity(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """f(t, x) in real time t (not s); (B, d) -> (B, d), reading the context set by :meth:`begin`."""
        return self.net(self.net_input(t, x))

    def net_input(self, t: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The network's (B, d [+ C] [+ 1]) input at time t: the state, the context (by default the
        solve's, set by :meth:`begin`), t."""
        parts = [x]
        if self.context_features:
            context = self._context if context is None else context
            if context is None or context.shape[0] != x.shape[0]:
                raise RuntimeError("call begin(x, context) before solving conditional dynamics")
            parts.append(context.to(x))
        if self.time_conditioning:
            parts.append(t.to(x).expand(x.shape[0], 1))
        return torch.cat(parts, dim=1) if len(parts) > 1 else x

    def forward(self, s: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        self.nfe += 1
        x = state[0]
        T = self.end_time.to(x)
        t = s.to(x) * T

        def f(z: torch.Tensor) -> torch.Tensor:
            return self.velocity(t, z)

        if self.divergence == "exact":
            dx, div, fro = exact_divergence(f, x, self.probes)
        else:
            if self._noise is None or self._noise.shape != x.shape:
                raise RuntimeError("call begin(x) before solving with the Hutchinson divergence")
            dx, div, fro = hutchinson_divergence(f, x, self._noise)
        if len(state) == 2:
            return T * dx, T * div
        return T * dx, T * div, T * dx.pow(2).sum(-1), T * fro


def _softplus_inverse(y: float) -> float:
    y = as_real(y, "end_time", positive=True)
    # log(exp(y) - 1), written to stay finite for large y.
    return y + math.log(-math.expm1(-y))
