r"""Rational-quadratic spline normalizer: a monotone spline on [-B, B], the identity outside.

Each variable's map is a monotone rational-quadratic spline (RQS) with K bins on ``[-B, B]``
(knot widths and heights from softmaxes, interior knot slopes within a factor of their bins'
slopes) and the identity in the
tails, so the slope is 1 at ±B on both sides and the map is C¹. In bin k with knots (x_k, y_k),
width w, height h, ``s = h / w``, knot slopes δ_k, δ_{k+1} and ``ξ = (x - x_k) / w``:

``y = y_k + h (s ξ² + δ_k ξ(1-ξ)) / (s + (δ_k + δ_{k+1} - 2s) ξ(1-ξ))``.

The denominator is at least s/2, so the map is finite for any finite parameters; the inverse is
the root of a quadratic in ξ, taken as ``2c / (-b - sqrt(b² - 4ac))`` where b >= 0 (Durkan et al.'s
form) and as ``(-b + sqrt(b² - 4ac)) / 2a`` where b < 0, so that neither form ever cancels. Inputs outside [-B, B] take the identity branch and the spline is
evaluated at the clamped input, so neither values nor gradients ever see an overflow, however
far out the input is. Zero parameters give the identity (uniform bins, unit slopes), which is
how every flow step starts.

The forward map and its log-slope run as one autograd node with a hand-written backward
(:class:`_RQSForward`): the gradient reaches only the two knots of each input's bin. On the CPU in
float32 and float64, forward, backward and the (non-differentiable) inverse run in C++
(``csrc/spline.cpp``: one pass over the elements, the backward recomputing the forward's cheap
quantities), where torch needs ~100 tiny ops per call; a spline StrAF's training step (d=15, 5
steps, hidden (64, 64), batch 256) takes 10 ms instead of 13 ms through torch (2-core box, one
thread; the conditioners are most of the rest). Elsewhere (CUDA, half precision)
the same maths runs as torch ops, checked against the C++ path in tests/test_spline.py. Both are
once-differentiable (no double backward); torch.func transforms and ``rsample`` (which
differentiates the inverse) take plain autograd.

References:
    Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows" (NeurIPS 2019).

Example:
    >>> norm = SplineNormalizer(bins=4, bound=3.0).double()
    >>> x = torch.tensor([[-1e3, 0.5], [2.9, 1e3]], dtype=torch.float64)
    >>> h = torch.randn(2, 2, norm.n_params, dtype=torch.float64)
    >>> z, log_det = norm(x, h)
    >>> bool((norm.inverse(z, h) - x).abs().max() < 1e-9), z[0, 0].item(), log_det[1, 1].item()
    (True, -1000.0, 0.0)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ... import _C
from ..._function import apply
from ..._validate import as_positive_int, as_real
from .base import Normalizer
from .rqs_core import (
    LOGIT_BOUND,
    _core_applies,
    _core_arrays,
    _harmonic_mean,
    _RQSForward,
)

__all__ = ["SplineNormalizer"]

# Default bounds of the knot-slope factor exp(L tanh(raw / L)), L = log(max_slope). Relative rule:
# within [1/3, 3] of the harmonic mean of the two bins' slopes. Absolute rule (files saved
# by strnn_fast 0.2.0 and earlier): the slope itself within [1e-3, 1e3].
RELATIVE_MAX_SLOPE = 3.0
ABSOLUTE_MAX_SLOPE = 1e3
# Default half-width of the spline's interval, and the one of files saved before it was 8 (they
# have no "spline_bound" buffer and did not record a bound they were not given).
DEFAULT_BOUND = 8.0
LEGACY_BOUND = 6.0


class SplineNormalizer(Normalizer):
    r"""Monotone rational-quadratic spline on ``[-bound, bound]``, identity (linear tails) outside.

    Parameters per variable (``n_params = 3 * bins - 1``): ``h[..., :K]`` bin width logits,
    ``h[..., K:2K]`` bin height logits (each squashed to ``u / (1 + |u| / 10)`` before the
    softmax), ``h[..., 2K:]`` the K - 1 interior knot slopes (raw).
    Interior knot k's slope is ``hm(s_{k-1}, s_k) exp(L tanh(raw / L))`` with ``L = log(max_slope)``
    and ``hm(a, b) = 2ab / (a + b)`` the harmonic mean of its two bins' slopes (height / width):
    within a factor ``max_slope`` (3) of the slopes around it, as monotone cubic interpolation
    (Fritsch-Carlson) chooses its derivatives. So no inner bin turns flat in its middle between
    two steep knots (its slope there is at least ``2 s / (1 + 2 max_slope)``). After training,
    float32 round trips at 20x the data's scale were within 1e-5 against up to 7e-3 with
    independent knot slopes (3 seeds, bench/results/spline_tails.md). Model files saved before this rule keep their rule, ``exp(L tanh(raw
    / L))`` with ``max_slope`` 1000, and load to the same density.

    Arguments:
        bins: number of bins K.
        bound: half-width B of the spline's interval (data beyond ±B pass unchanged). 8 by
            default: values beyond ±B keep the base's tails (x²/2 nats each under the normal
            prior), so on heavy-tailed data a wider interval pays. On bench/bench_quality.py
            (8 graph x joint/conditional cells, 5 seeds) 8 instead of 6 lowered the test NLL by
            0.011-0.014 nats/dim on the six cells with standardized values beyond ±6 and raised it
            by 0.004 on ecoli70 (all within ±3.1); mean -0.008 (bench/results/quality_ablation.md,
            round 3). On the light-tailed multimodal d=15 data, 6 had the lower validation NLL
            (bench/results/flows_nll_spline.md). Files saved while the default was 6 keep 6 (the
            bound is saved with the weights).
        min_bin: smallest bin width and height, as a fraction of 2B (K * min_bin < 1).
        max_slope: largest factor (> 1) between a knot slope and the harmonic mean of its
            bins' slopes; the smallest is its reciprocal. Default 3.

    Example:
        >>> norm = SplineNormalizer(bins=8, bound=5.0)
        >>> z, log_det = norm(torch.zeros(2, 3), torch.zeros(2, 3, norm.n_params))  # zero parameters: identity
        >>> norm.n_params, z.abs().max().item(), log_det.abs().max().item() < 1e-6
        (23, 0.0, True)
    """

    def __init__(self, bins: int = 8, bound: float | None = None, min_bin: float = 1e-3,
                 max_slope: float | None = None):
        super().__init__()
        self.bins = as_positive_int(bins, "bins")
        self._bound_given = bound is not None
        self._bound = as_real(DEFAULT_BOUND if bound is None else bound, "bound", positive=True)
        self.min_bin = as_real(min_bin, "min_bin", positive=True)
        if self.bins * self.min_bin >= 1:
            raise ValueError(f"min_bin must be below 1 / bins = {1 / self.bins:g}, got {min_bin!r}")
        if max_slope is not None and not as_real(max_slope, "max_slope", positive=True) > 1:
            raise ValueError(f"max_slope must be greater than 1, got {max_slope!r}")
        self._max_slope = max_slope
        self.n_params = 3 * self.bins - 1
        #: Whether knot slopes are relative to their bins' slopes (every model built after strnn_fast
        #: 0.2.0). A plain bool, so that tracing (torch.export) never reads a tensor for it.
        self.relative = True
        # The rule, saved with the weights (1: relative). A file without it predates the rule and
        # loads with the absolute one (see _load_from_state_dict).
        self.register_buffer("relative_slopes", torch.ones((), dtype=torch.uint8))
        # The bound, saved with the weights: a file without it kept the default of its time, 6,
        # unless its flow was built with a bound (then recorded in its config, and given here).
        self.register_buffer("spline_bound", torch.tensor(self._bound, dtype=torch.float64))

    @property
    def bound(self) -> float:
        """The half-width B of the spline's interval (a float; saved as the ``spline_bound`` buffer)."""
        return self._bound

    @bound.setter
    def bound(self, value: float) -> None:
        self._bound = as_real(value, "bound", positive=True)
        self.spline_bound.fill_(self._bound)

    @property
    def max_slope(self) -> float:
        """The bound of the knot-slope factor: 3 (relative rule) or 1000 (absolute rule) by default."""
        if self._max_slope is not None:
            return float(self._max_slope)
        return RELATIVE_MAX_SLOPE if self.relative else ABSOLUTE_MAX_SLOPE

    def _options(self) -> tuple[int, float, float, float, bool]:
        # What _RQSForward and the C++ kernels take: bins, bound, min_bin, log(max_slope), relative.
        return self.bins, self.bound, self.min_bin, math.log(self.max_slope), self.relative

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Files saved before the relative rule have no "relative_slopes": they keep the absolute
        # rule (and its default bound) they were trained with, so they load to the same density.
        key = prefix + "relative_slopes"
        if key not in state_dict:
            state_dict[key] = torch.zeros((), dtype=torch.uint8)
        key = prefix + "spline_bound"
        if key not in state_dict:
            state_dict[key] = torch.tensor(self.bound if self._bound_given else LEGACY_BOUND, dtype=torch.float64)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.relative = bool(self.relative_slopes)
        self._bound = float(self.spline_bound)

    def _knots(self, h: torch.Tensor) -> torch.Tensor:
        # (..., 3, K+1): knot abscissae and ordinates from -B to B, and knot slopes (1 at both ends).
        K, B = self.bins, self.bound
        # Conditioners hand h over as a transposed view; strided elementwise ops cost 2-5x more.
        h = h.contiguous()
        # Both softmaxes at once, written out: torch's CPU softmax (and amax) over a last dimension
        # of ~8 is several times slower than elementwise ops. The logits are squashed into
        # (-LOGIT_BOUND, LOGIT_BOUND) first (the identity near 0), so exp needs no max shift.
        logits = h[..., : 2 * K].reshape(*h.shape[:-1], 2, K)
        e = torch.exp(logits / (1 + logits.abs() * (1 / LOGIT_BOUND)))
        frac = self.min_bin + (1 - K * self.min_bin) * (e / e.sum(dim=-1, keepdim=True))
        inner = torch.cumsum(frac[..., :-1], dim=-1) * (2 * B) - B
        # The ends are exactly ±B (no cumsum rounding), where the tails start.
        edges = F.pad(inner, (1, 0), value=-B)
        edges = F.pad(edges, (0, 1), value=B)
        L = math.log(self.max_slope)
        factor = torch.exp(L * torch.tanh(h[..., 2 * K:] / L))
        if self.relative:  # times the harmonic mean of the two bins' slopes (2B cancels in s)
            sl = frac[..., 1, :] / frac[..., 0, :]
            factor = factor * _harmonic_mean(sl[..., :-1], sl[..., 1:])
        slopes = F.pad(factor, (1, 1), value=1.0)
        return torch.cat([edges, slopes.unsqueeze(-2)], dim=-2)

    @staticmethod
    def _bin(table: torch.Tensor, row: int, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Entries k and k+1 of every row of ``table`` (..., 3, K+1), k the bin of v among the knots of
        # ``table[..., row, :]`` (clamped to [0, K-1]); each (..., 3).
        knots = table[..., row, 1:-1]
        k = (v.unsqueeze(-1) >= knots).sum(-1, keepdim=True)  # (..., 1)
        idx = torch.cat([k, k + 1], dim=-1).unsqueeze(-2).expand(*table.shape[:-1], 2)
        pair = table.gather(-1, idx)  # (..., 3, 2)
        return pair[..., 0], pair[..., 1]

    def _unrolled_bin(self, h: torch.Tensor, row: int, v: torch.Tensor) -> tuple[list, list]:
        # What _knots and _bin give, as elementwise ops on (...) slices of h, one per knot (K is
        # known when tracing): ([x_k, y_k, δ_k], [x_{k+1}, y_{k+1}, δ_{k+1}]), k the bin of v among
        # the interior knots of row 0 (x) or 1 (y). torch.export traces this: Inductor fuses it
        # into loops over the elements, vectorized along them, where the table's softmax, cumsum
        # and gather over a last dimension of K + 1 compiled to masked 9-lane loops that took 2.5x
        # the whole eager log_prob (d=15, batch 4096; bench/results/export_notes.md).
        K, B, m = self.bins, self.bound, self.min_bin
        rows, fracs = [], []
        for start in (0, K):  # abscissae, then ordinates: -B, cumulated bin sizes, B
            e = [torch.exp(q / (1 + q.abs() * (1 / LOGIT_BOUND))) for q in h[..., start:start + K].unbind(-1)]
            scale = (1 - K * m) / sum(e)
            frac = [m + e_j * scale for e_j in e]
            edges, run = [torch.full_like(v, -B)], None
            for j in range(K - 1):
                run = frac[j] if run is None else run + frac[j]
                edges.append(run * (2 * B) - B)
            rows.append(edges + [torch.full_like(v, B)])
            fracs.append(frac)
        above = [v >= rows[row][j] for j in range(1, K)]  # knots ascend: k = how many hold

        def pick(seq: list, shift: int) -> torch.Tensor:  # seq[k + shift], elementwise
            out = seq[shift]
            for j, a in enumerate(above, start=1):
                out = torch.where(a, seq[j + shift], out)
            return out

        L = math.log(self.max_slope)
        if row == 0:
            # The forward: the slopes' raw values (and the relative rule's bin slopes) are picked
            # before tanh and exp. log_prob packages at batch 4096 (wall, interleaved, 1 thread):
            # d=15 16.1 ms vs 18.6 with every slope computed first, d=100 151 vs 168.
            zero = torch.zeros_like(v)
            raw = [zero, *h[..., 2 * K:].unbind(-1), zero]  # raw 0 at ±B: slope exp(0) = 1
            slope = [torch.exp(L * torch.tanh(pick(raw, shift) / L)) for shift in (0, 1)]
            if self.relative and K > 1:  # times the harmonic mean of the two bins' slopes, as in _knots
                sl = [fy / fx for fx, fy in zip(*fracs)]
                sl = [sl[0], *sl, sl[-1]]  # bins k-1, k, k+1 clamped: the ends' factors are dropped below
                prev, own, nxt = (pick(sl, shift) for shift in (0, 1, 2))
                slope = [torch.where(above[0], slope[0] * _harmonic_mean(prev, own), slope[0]),
                         torch.where(above[-1], slope[1], slope[1] * _harmonic_mean(own, nxt))]
        else:
            # The inverse: every knot slope first, then picked. The d=15 sample package (level
            # plan) at batch 4096: 11.9 ms vs 16.3 with the forward's order (cause not found).
            slopes = [torch.exp(L * torch.tanh(r / L)) for r in h[..., 2 * K:].unbind(-1)]
            if self.relative:  # times the harmonic mean of the two bins' slopes, as in _knots
                sl = [fy / fx for fx, fy in zip(*fracs)]
                slopes = [f * _harmonic_mean(sl[j], sl[j + 1]) for j, f in enumerate(slopes)]
            one = torch.ones_like(v)
            knot_slopes = [one, *slopes, one]
            slope = [pick(knot_slopes, 0), pick(knot_slopes, 1)]
        lo = [pick(rows[0], 0), pick(rows[1], 0), slope[0]]
        hi = [pick(rows[0], 1), pick(rows[1], 1), slope[1]]
        return lo, hi

    def _knot_pair(self, h: torch.Tensor, row: int, v: torch.Tensor, unrolled: bool) -> tuple:
        # (x0, y0, d0), (x1, y1, d1): the knots around v's bin, through the table or unrolled.
        if unrolled:
            return self._unrolled_bin(h, row, v)
        lo, hi = self._bin(self._knots(h), row, v)
        return lo.unbind(-1), hi.unbind(-1)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch._C._are_functorch_transforms_active():
            return self._forward_autograd(x, h)
        if self.torch_only:
            return self._forward_autograd(x, h, unrolled=True)
        return apply(_RQSForward, x, h, *self._options(), _core_applies(x, h))

    def _forward_autograd(self, x: torch.Tensor, h: torch.Tensor,
                          unrolled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        # The same map through plain autograd ops: for torch.func transforms (vmap, jacrev, jvp),
        # which a classic autograd.Function does not support, and (unrolled) for torch.export.
        inside = x.abs() < self.bound
        u = x.clamp(-self.bound, self.bound)  # the spline branch never sees a far-out input
        (x0, y0, d0), (x1, y1, d1) = self._knot_pair(h, 0, u, unrolled)
        w, hh = x1 - x0, y1 - y0
        s = hh / w
        xi = ((u - x0) / w).clamp(0, 1)
        t = xi * (1 - xi)
        denom = s + (d0 + d1 - 2 * s) * t
        y = y0 + hh * (s * xi.square() + d0 * t) / denom
        numer = d1 * xi.square() + 2 * s * t + d0 * (1 - xi).square()
        log_slope = torch.log(s.square() * numer) - 2 * torch.log(denom)
        return torch.where(inside, y, x), torch.where(inside, log_slope, torch.zeros_like(log_slope))

    def inverse(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        # The C++ inverse has no backward: it serves sampling, rsample differentiates through torch.
        differentiable = torch.is_grad_enabled() and (z.requires_grad or h.requires_grad)
        if (not differentiable and not self.torch_only and not torch._C._are_functorch_transforms_active()
                and _core_applies(z, h)):
            x = torch.empty_like(z, memory_format=torch.contiguous_format)
            bins, bound, min_bin, log_max_slope, relative = self._options()
            _C.rqs_inverse(*_core_arrays(h, z, x), bins, bound, min_bin, log_max_slope, torch.get_num_threads(),
                           relative=relative)
            return x
        return self._inverse_torch(z, h, unrolled=self.torch_only)

    def _inverse_torch(self, z: torch.Tensor, h: torch.Tensor, unrolled: bool = False) -> torch.Tensor:
        inside = z.abs() < self.bound
        v = z.clamp(-self.bound, self.bound)
        (x0, y0, d0), (x1, y1, d1) = self._knot_pair(h, 1, v, unrolled)
        w, hh = x1 - x0, y1 - y0
        s = hh / w
        dy = v - y0
        mix = d0 + d1 - 2 * s
        a = hh * (s - d0) + dy * mix
        b = hh * d0 - dy * mix
        c = -s * dy
        sq = torch.sqrt((b.square() - 4 * a * c).clamp_min(0))
        # The root in [0, 1] is (-b + sq) / 2a = 2c / (-b - sq). Each form is taken where it adds
        # numbers of one sign (no cancellation): the second where b >= 0, the first where b < 0
        # (there a > 0, as f(0) = c <= 0 < f(1)). The guards only replace 0 denominators of the
        # branch not taken, keeping its gradient finite.
        den = -b - sq
        den = torch.where(den == 0, torch.full_like(den, -1.0), den)
        two_a = torch.where(a == 0, torch.ones_like(a), 2 * a)
        xi = torch.where(b >= 0, 2 * c / den, (sq - b) / two_a).clamp(0, 1)
        return torch.where(inside, x0 + xi * w, z)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, bound={self.bound}{'' if self.relative else ', absolute knot slopes'}"
