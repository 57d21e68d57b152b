r"""The distribution face shared by every flow: ``log_prob``, ``sample``, ``rsample``, ``transform``, ``inverse``.

A subclass implements ``_transform(x, context) -> (z, log_abs_det)`` and ``_inverse(z, context)``
on (B, d) rows in the flow's dtype (context: (B, C) rows or None), checked once by the public
methods here (:mod:`strnn_fast._context`); :class:`~strnn_fast.serialization.Savable` records its constructor
arguments (``config``, JSON-friendly values resolved by ``_resolved_config``) so that
``save``/:func:`strnn_fast.load` work. The base adds the distribution
methods on any batch shape, the prior, ``d``, ``names`` and ``event_shape``, and ``flow(context)``
returns a real :class:`torch.distributions.Distribution` (:class:`FlowDistribution`).

Model order: a flow's variables are ``flow.names`` (shown by ``repr(flow)``), in the order the
graph gave them (an edge list: the order names first appear; a matrix: its rows). Tensors are
read in that order. A pandas DataFrame is matched by column name instead (every variable present,
no unknown column): ``log_prob``, ``sample``/``rsample`` contexts and ``transform`` take one, and
``sample(n, as_frame=True)`` returns one.

Density: ``log p(x | c) = log prior(z) + log|det dz/dx|`` with ``(z, log|det|) = transform(x, c)``.

Contexts broadcast like batch dimensions: ``log_prob(x, c)`` takes x (..., d) and c (..., C) with
broadcastable leading shapes, ``sample(shape, c)`` draws one sample per context row (c of shape
(*shape, C)) or shares one context (c of shape (C,)).

Example:
    >>> import numpy as np
    >>> from strnn_fast.flows import StrAF
    >>> flow = StrAF(np.tril(np.ones((3, 3)), -1), hidden_sizes=(8,), flow_steps=2)
    >>> flow.log_prob(torch.randn(4, 3)).shape, flow.sample((2, 5)).shape
    (torch.Size([4]), torch.Size([2, 5, 3]))
    >>> cond = StrAF(np.tril(np.ones((3, 3)), -1), hidden_sizes=(8,), flow_steps=2, context_features=2)
    >>> c = torch.randn(5, 2)
    >>> cond.log_prob(torch.randn(5, 3), context=c).shape, cond.sample(5, context=c).shape
    (torch.Size([5]), torch.Size([5, 3]))
    >>> cond(c).sample((7,)).shape  # a torch Distribution with batch_shape (5,)
    torch.Size([7, 5, 3])
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from torch.distributions import Distribution, constraints

from .._context import as_context_adjacency, as_context_features, as_context_names, broadcast_context, check_context
from .._validate import as_flag, as_non_negative_int, as_positive_int, as_sample_shape
from ..serialization import Savable
from ..variables import Variables, is_frame
from .priors import make_prior

__all__ = ["Flow", "FlowDistribution"]


class Flow(Savable, nn.Module):
    r"""Base class of the normalizing flows: a torch-Distribution-like module on R^d.

    Arguments:
        d: number of variables.
        names: optional variable names (d distinct strings).
        prior: base distribution, "normal" or "laplace" (see :mod:`strnn_fast.flows.priors`).
        context_features: number C of context features the flow is conditioned on (0: none).
        context_names: optional names of the context features (C strings).
    """

    def __init__(self, d: int, *, names: Sequence[str] | None = None, prior: str = "normal",
                 context_features: int = 0, context_names: Sequence[str] | None = None):
        super().__init__()
        self.d = as_positive_int(d, "d")
        if names is not None and len(names) != self.d:
            raise ValueError(f"names must have d={self.d} entries, got {len(names)}")
        self.names: list[str] | None = list(names) if names is not None else None
        self.prior = make_prior(prior)
        self.context_features = as_context_features(context_features)
        self.context_names: list[str] | None = as_context_names(context_names, self.context_features)

    def _context_adjacency(self, context_adjacency: Any) -> np.ndarray:
        """The (d, C) bool context adjacency (all ones when None), or a ValueError naming it."""
        return as_context_adjacency(context_adjacency, self.d, self.context_features)

    def context_config(self) -> dict[str, Any]:
        """The context options as ``config`` records them (empty for an unconditional flow)."""
        if not self.context_features:
            return {}
        return {"context_features": self.context_features,
                "context_adjacency": self.context_adjacency.astype(int).tolist(),
                "context_names": self.context_names}

    def _resolved_config(self) -> dict[str, Any]:
        # Names found in a graph or edge list, and the context adjacency as a 0/1 matrix.
        return {"names": self.names, **self.context_config()}

    @property
    def event_shape(self) -> torch.Size:
        """(d,), as in ``torch.distributions``."""
        return torch.Size([self.d])

    @property
    def batch_shape(self) -> torch.Size:
        """Empty: one distribution, as in ``torch.distributions``."""
        return torch.Size()

    def forward(self, context: torch.Tensor | None = None) -> FlowDistribution:
        r"""The flow as a :class:`torch.distributions.Distribution` (conditioned on ``context``).

        Example:
            >>> from strnn_fast.flows import StrAF
            >>> dist = StrAF([[0, 0], [1, 0]], hidden_sizes=(4,), flow_steps=1)()
            >>> isinstance(dist, torch.distributions.Distribution), dist.event_shape
            (True, torch.Size([2]))
        """
        return FlowDistribution(self, context)

    def transform(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Maps data to the base space.

        Arguments:
            x: (B, d) data in model order, or a DataFrame (cast to the flow's dtype and device).
            context: (B, C) or (C,) context of a conditional flow (None otherwise).

        Returns:
            ``(z, log_abs_det)``: (B, d) latents in model order and (B,) log|det dz/dx|.
        """
        x = self._check_input(x, "x")
        z, log_det = self._transform(x, self._check_context(context, x.shape[0]))
        return z.contiguous(), log_det  # steps may hand z over column-major (strnn_fast.flows.fused_step)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Maps (B, d) base-space points (given a (B, C) or (C,) context) to data space."""
        z = self._check_input(z, "z")
        return self._inverse(z, self._check_context(context, z.shape[0]))

    def _transform(self, x: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`transform` of checked (B, d) rows and (B, C) context rows (or None)."""
        raise NotImplementedError

    def _inverse(self, z: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """:meth:`inverse` of checked (B, d) rows and (B, C) context rows (or None)."""
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        r"""Log-density of ``x`` of shape (..., d) (given ``context`` of shape (..., C)); returns shape (...).

        Example:
            >>> from strnn_fast.flows import StrAF
            >>> StrAF([[0, 0], [1, 0]], hidden_sizes=(4,), flow_steps=1).log_prob(torch.zeros(2)).shape
            torch.Size([])
        """
        x = self._from_frame(x, "x")
        self._rows(x, "x")  # validates x before any broadcasting
        like = self._like()
        batch, context = broadcast_context(self._from_frame(context, "context", context=True), x.shape[:-1],
                                           self.context_features, like)
        rows = x.expand(*batch, self.d).reshape(-1, self.d).to(dtype=like.dtype, device=like.device)
        z, log_det = self._transform(rows, context)
        return (self.prior.log_prob(z) + log_det).reshape(batch)

    def rsample(self, sample_shape: Sequence[int] | int | torch.Size = (),
                context: torch.Tensor | None = None) -> torch.Tensor:
        r"""Reparameterized samples, differentiable in the parameters.

        Without context the shape is ``(*sample_shape, d)``; with a context (..., C) it is the
        broadcast of sample_shape and the context's leading shape, then d.

        Example:
            >>> from strnn_fast.flows import StrAF
            >>> StrAF([[0, 0], [1, 0]], hidden_sizes=(4,), flow_steps=1).rsample(3).shape
            torch.Size([3, 2])
        """
        shape, context = broadcast_context(self._from_frame(context, "context", context=True),
                                           torch.Size(as_sample_shape(sample_shape)), self.context_features,
                                           self._like())
        return self._inverse(self.sample_latent(math.prod(shape)), context).reshape(*shape, self.d)

    def sample(self, sample_shape: Sequence[int] | int | torch.Size = (),
               context: torch.Tensor | None = None, *, as_frame: bool = False) -> Any:
        """Samples as :meth:`rsample` gives them, without gradients.

        ``as_frame=True`` returns a pandas DataFrame with one column per variable, named by
        ``flow.names`` (indices when the flow has none); it needs a 1-D ``sample_shape`` (n rows).

        Example:
            >>> from strnn_fast.flows import StrAF
            >>> flow = StrAF([("rain", "wet"), ("sprinkler", "wet")], hidden_sizes=(4,), flow_steps=1)
            >>> list(flow.sample(5, as_frame=True).columns)
            ['rain', 'wet', 'sprinkler']
        """
        as_flag(as_frame, "as_frame")
        with torch.no_grad():
            x = self.rsample(sample_shape, context)
        return Variables(self.names, self.d).to_frame(x) if as_frame else x

    def sample_latent(self, n: int) -> torch.Tensor:
        """(n, d) draws from the prior, in the flow's dtype and on its device."""
        n = as_non_negative_int(n, "n")
        return self.prior.sample((int(n), self.d), self._like())

    def _like(self) -> torch.Tensor:
        # Parameters and float buffers carry the flow's dtype and device.
        # Lazily: the first parameter answers, without listing them all on every call.
        for t in itertools.chain(self.parameters(), self.buffers()):
            if t.is_floating_point():
                return t
        return torch.empty(0)

    def _check_input(self, x: Any, name: str) -> torch.Tensor:
        """Returns ``x`` (a tensor, or a DataFrame matched by name) as a (B, d) tensor in the flow's
        dtype and device, or raises naming ``name``."""
        x = self._from_frame(x, name)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (batch, {self.d}), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ValueError(f"{name} must have shape (batch, {self.d}), got {tuple(x.shape)}")
        like = self._like()
        return x.to(dtype=like.dtype, device=like.device)

    def extra_repr(self) -> str:
        # The model order, first thing in the repr: tensors are read and written in this order.
        labels = Variables(self.names, self.d).labels()
        shown = labels if len(labels) <= 12 else [*labels[:10], "...", labels[-1]]
        extra = f", context={self.context_names or self.context_features}" if self.context_features else ""
        return f"d={self.d}, variables={shown}{extra}"

    def _from_frame(self, value: Any, name: str, *, context: bool = False) -> Any:
        """A DataFrame's values as a tensor with its columns in model order (matched by name: every
        variable present, no unknown column); any other value is returned as it is.

        Example:
            >>> import pandas as pd
            >>> from strnn_fast.flows import StrAF
            >>> flow = StrAF([("a", "b")], hidden_sizes=(4,), flow_steps=1)
            >>> flow._from_frame(pd.DataFrame({"b": [2.0], "a": [1.0]}), "x")
            tensor([[1., 2.]])
            >>> flow._from_frame(pd.DataFrame({"a": [1.0], "c": [0.0]}), "x")
            Traceback (most recent call last):
            ...
            ValueError: x lacks the columns of some variables: missing ['b'], unknown ['c']; its columns ['a', 'c'] do not match the model's variables ['a', 'b']
        """
        if not is_frame(value):
            return value
        names, width = (self.context_names, self.context_features) if context else (self.names, self.d)
        like = self._like()
        return torch.tensor(Variables(names, width).frame_rows(value, name)).to(dtype=like.dtype, device=like.device)

    def _check_context(self, context: Any, rows: int) -> torch.Tensor | None:
        """Returns ``context`` as (rows, C) in the flow's dtype and device (a (C,) one is repeated), or raises."""
        if context is None and not self.context_features:
            return None
        context = self._from_frame(context, "context", context=True)
        return check_context(context, rows, self.context_features, self._like())

    def _rows(self, x: Any, name: str) -> torch.Tensor:
        # (..., d) -> (B, d), so that subclasses only ever see rows.
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (..., {self.d}), got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.d:
            raise ValueError(f"{name} must have shape (..., {self.d}), got {tuple(x.shape)}")
        return x.reshape(-1, self.d)


class FlowDistribution(Distribution):
    r"""A flow (conditioned on a context) as a :class:`torch.distributions.Distribution`.

    ``batch_shape`` is the context's leading shape (empty without context), ``event_shape`` is
    (d,), the support is all of R^d, and ``rsample`` is reparameterized. ``log_prob``, ``sample``
    and ``rsample`` run the flow; gradients reach its parameters. Build it as ``flow(context)``.

    Arguments:
        flow: the flow.
        context: (*batch_shape, C) context (None for an unconditional flow).
        validate_args: as in torch (checks that ``log_prob``'s value has a compatible shape).

    Example:
        >>> from strnn_fast.flows import StrAF
        >>> flow = StrAF([[0, 0], [1, 0]], hidden_sizes=(4,), flow_steps=1, context_features=1)
        >>> dist = flow(torch.randn(3, 1))
        >>> dist.batch_shape, dist.sample((2,)).shape, dist.log_prob(torch.zeros(3, 2)).shape
        (torch.Size([3]), torch.Size([2, 3, 2]), torch.Size([3]))
        >>> base = torch.distributions.Independent(dist, 1)
        >>> base.event_shape
        torch.Size([3, 2])
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, flow: Flow, context: torch.Tensor | None = None, validate_args: bool | None = None):
        if not isinstance(flow, Flow):
            raise TypeError(f"flow must be a strnn_fast Flow, got {type(flow).__name__}")
        broadcast_context(context, torch.Size(), flow.context_features, flow._like())  # checks it, or raises
        self.flow = flow
        self.context = context
        batch_shape = context.shape[:-1] if context is not None else torch.Size()
        super().__init__(batch_shape, torch.Size([flow.d]), validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: FlowDistribution | None = None) -> FlowDistribution:
        batch_shape = torch.Size(batch_shape)
        new = self._get_checked_instance(FlowDistribution, _instance)
        new.flow = self.flow
        new.context = (self.context.expand(*batch_shape, self.flow.context_features)
                       if self.context is not None else None)
        super(FlowDistribution, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        out = self.flow.log_prob(value, self.context)
        return out.expand(torch.broadcast_shapes(out.shape, self.batch_shape))

    def rsample(self, sample_shape: Sequence[int] | torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        return self.flow.rsample(shape[:-1], self.context)

    def sample(self, sample_shape: Sequence[int] | torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)
