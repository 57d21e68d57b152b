r"""The rational-quadratic spline's C++ path as a torch autograd Function, and its shared pieces.

:class:`~strnn_fast.flows.normalizers.spline.SplineNormalizer` runs its forward map through
:class:`_RQSForward` where the C++ kernels apply (``csrc/spline.cpp``: CPU, float32/float64) and
through torch ops elsewhere; both read the knots by the same rules (``LOGIT_BOUND``,
``_harmonic_mean``), defined here once.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ... import _C

# Bin logits are squashed into (-LOGIT_BOUND, LOGIT_BOUND): widths within a factor e^40 of each
# other, min_bin bounds them anyway, and exp never overflows, even in float16.
LOGIT_BOUND = 10.0


def _harmonic_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # The relative rule's scale of an interior knot slope: at most twice the smaller bin slope.
    return 2 * a * b / (a + b)


def _core_applies(x: torch.Tensor, h: torch.Tensor) -> bool:
    # The C++ kernels (csrc/spline.cpp): CPU, float32 or float64, one dtype, h of shape x.shape + (P,).
    return (x.device.type == "cpu" and h.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and h.dtype == x.dtype and x.dim() >= 1 and h.shape[:-1] == x.shape)


def _core_arrays(h: torch.Tensor, *xs: torch.Tensor) -> list:
    # numpy views for the C++ kernels: h as (N, P, d) parameter-major, each x as (N, d), all
    # C-contiguous. Outputs among xs must already be contiguous (they are written in place).
    d, P = h.shape[-2], h.shape[-1]
    N = math.prod(h.shape[:-2])
    hT = h.detach().transpose(-1, -2)
    arrays = [hT.contiguous().view(N, P, d).numpy()]
    return arrays + [x.detach().contiguous().view(N, d).numpy() for x in xs]


class _RQSForward(torch.autograd.Function):
    r"""The spline's forward map and log-slope in one pass, with a hand-written backward.

    With ``p = softmax(q)`` and ``frac = m + (1 - K m) p`` (m = min_bin), a bin's left edge is
    ``-B + 2B (k m + (1 - K m) Σ_{j<k} p_j)`` and its size ``2B frac_k``, from one cumsum of the
    exponentials and two gathers. Only the two knot slopes of each input's bin are squashed
    (their raw values gathered first). The backward touches the table
    only for the softmax: ``∂/∂q_j = p_j (g_j - Σ p g) / a_j²``, with ``g_j`` the left-edge
    gradient for j < k and the size gradient for j = k. Autograd through the knot table instead
    records ~60 small ops per step. Checked by ``gradcheck`` and against autograd through zuko's
    formulas in tests/test_spline.py.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, h: torch.Tensor, bins: int, bound: float, min_bin: float,
                log_max_slope: float, relative: bool, core: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.core = core
        if core:  # one C++ pass; the backward recomputes the cheap forward quantities
            y = torch.empty(x.shape, dtype=x.dtype)
            log_det = torch.empty(x.shape, dtype=x.dtype)
            h_arr, x_arr, y_arr, ld_arr = _core_arrays(h, x, y, log_det)
            _C.rqs_forward(h_arr, x_arr, y_arr, ld_arr, bins, bound, min_bin, log_max_slope, torch.get_num_threads(),
                           relative=relative)
            ctx.options = (bins, bound, min_bin, log_max_slope)  # as the C++ backward takes them
            ctx.relative = relative
            ctx.save_for_backward(x, h)
            return y, log_det
        K, B, L, m = bins, bound, log_max_slope, min_bin
        c = 1 - K * m
        # Parameter-major layout (..., P, d): conditioners hand h over as the transposed view of a
        # contiguous (..., P, d) tensor, so this costs no copy (a transposing copy of h, and
        # another of its gradient, took a quarter of the time), and the gradient goes back as a
        # view of the same layout.
        hT = h.transpose(-1, -2)
        if not hT.is_contiguous():
            hT = hT.contiguous()
        logits = hT[..., : 2 * K, :].unflatten(-2, (2, K))  # (..., 2, K, d)
        a = logits.abs().mul_(1 / LOGIT_BOUND).add_(1)
        e = torch.exp(logits / a)  # squashed into (-LOGIT_BOUND, LOGIT_BOUND): no max shift needed
        C = torch.cumsum(e, -2)
        S = C[..., K - 1:, :]  # (..., 2, 1, d)
        inside = x.abs() < B
        u = x.clamp(-B, B)
        # Bin of u: the number of interior x-knots (as fractions of 2B) at or below it.
        ar = torch.arange(1, K, dtype=e.dtype, device=e.device).unsqueeze(-1)
        knots = C[..., 0, : K - 1, :] * (c / S[..., 0, :, :]) + ar * m  # (..., K-1, d)
        k = (((u + B) * (1 / (2 * B))).unsqueeze(-2) >= knots).sum(-2, keepdim=True)  # (..., 1, d)
        idx = k.unsqueeze(-3).expand(*S.shape)
        pk = e.gather(-2, idx) / S  # (..., 2, 1, d): p_k, widths and heights
        below = C.gather(-2, idx) / S - pk  # Σ_{j<k} p_j
        edge = (k.unsqueeze(-3).to(e.dtype) * m + c * below).squeeze(-2) * (2 * B) - B  # (..., 2, d)
        size = (m + c * pk).squeeze(-2) * (2 * B)
        # Slope raws at knots k and k+1, 0 (slope 1) at ±B.
        raw = F.pad(hT[..., 2 * K:, :], (0, 0, 1, 1)).gather(-2, torch.cat([k, k + 1], -2))  # (..., 2, d)
        th = torch.tanh(raw * (1 / L))
        d01 = torch.exp(th * L)
        x0, y0 = edge.unbind(-2)
        w, hh = size.unbind(-2)
        s = hh / w
        near = None
        if relative:
            # The neighbour bins' masses (index clamped at the ends, where the knot slope is 1 and
            # the weights below are 0) and slopes; each interior knot slope is scaled by the
            # harmonic mean of its two bins' slopes: hm(a, b) = 2ab / (a + b).
            nb = torch.cat([(k - 1).clamp_min(0), (k + 1).clamp_max(K - 1)], -2)  # (..., 2, d): bins k-1, k+1
            p_nb = e.gather(-2, nb.unsqueeze(-3).expand(*S.shape[:-2], 2, k.shape[-1])) / S  # (..., 2 rows, 2, d)
            s_nb = (m + c * p_nb[..., 1, :, :]) / (m + c * p_nb[..., 0, :, :])  # (..., 2, d): s_{k-1}, s_{k+1}
            inner = torch.cat([k > 0, k < K - 1], -2).to(e.dtype)  # knots k, k+1 interior
            share = s_nb / (s_nb + s.unsqueeze(-2))  # d log hm / d log s (own bin)
            hm = torch.where(inner > 0, 2 * s.unsqueeze(-2) * share, torch.ones_like(share))
            d01 = d01 * hm
            near = (nb, p_nb, inner, share)
        d0, d1 = d01.unbind(-2)
        xi = ((u - x0) / w).clamp(0, 1)
        om = 1 - xi
        t = xi * om
        den = s + (d0 + d1 - 2 * s) * t
        r = (s * xi.square() + d0 * t) / den
        y = y0 + hh * r
        numer = d1 * xi.square() + 2 * s * t + d0 * om.square()
        log_slope = torch.log(s.square() * numer) - 2 * torch.log(den)
        ctx.constants = (K, B, c, m)
        ctx.near = near is not None
        ctx.save_for_backward(inside, k, e, a, S, below, pk, th, d01, xi, w, hh, s, den, r, numer,
                              *(near if near is not None else ()))
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return torch.where(inside, y, x), torch.where(inside, log_slope, zero)

    @staticmethod
    @once_differentiable
    def backward(ctx, gz: torch.Tensor, gld: torch.Tensor):
        if ctx.core:
            x, h = ctx.saved_tensors
            gx = torch.empty(x.shape, dtype=x.dtype)
            # Parameter-major like the forward's input, handed back as the (..., d, P) view.
            ghT = torch.empty(*h.shape[:-2], h.shape[-1], h.shape[-2], dtype=h.dtype)
            h_arr, x_arr, gz_arr, gld_arr, gx_arr = _core_arrays(h, x, gz, gld, gx)
            gh_arr = ghT.view(h_arr.shape).numpy()
            _C.rqs_backward(h_arr, x_arr, gz_arr, gld_arr, gx_arr, gh_arr, *ctx.options, torch.get_num_threads(),
                            relative=ctx.relative)
            return gx, ghT.transpose(-1, -2), None, None, None, None, None, None
        K, B, c, m = ctx.constants
        inside, k, e, a, S, below, pk, th, d01, xi, w, hh, s, den, r, numer, *near = ctx.saved_tensors
        d0, d1 = d01.unbind(-2)
        zero = torch.zeros((), dtype=gz.dtype, device=gz.device)
        gy = torch.where(inside, gz, zero)
        gl = torch.where(inside, gld, zero)
        om = 1 - xi
        t = xi * om
        one_2xi = 1 - 2 * xi
        # y = y0 + hh num / den, log_slope = log(s² numer) - 2 log den; num, den, numer in ξ, s, d0, d1.
        g_num = gy * hh / den
        g_den = -g_num * r - 2 * gl / den
        g_numer = gl / numer
        g_xi = (g_num * (2 * s * xi + d0 * one_2xi) + g_den * (d0 + d1 - 2 * s) * one_2xi
                + g_numer * 2 * (d1 * xi + s * one_2xi - d0 * om))
        g_s = g_num * xi.square() + g_den * (1 - 2 * t) + g_numer * 2 * t + gl * 2 / s
        g_d0 = (g_num + g_den) * t + g_numer * om.square()
        g_d1 = g_den * t + g_numer * xi.square()
        g_log_d = torch.stack([g_d0, g_d1], -2) * d01  # (..., 2, d): gradients of log d0, log d1
        if near:
            # Relative rule: log d = log hm(s, s_nb) + L tanh(raw / L); the harmonic mean passes
            # `share` of the log-gradient to the own bin's log s and 1 - share to the neighbour's.
            nb, p_nb, inner, share = near
            g_s = g_s + (g_log_d * share * inner).sum(-2) / s
            g_log_nb = g_log_d * (1 - share) * inner  # (..., 2, d): neighbours k-1, k+1
            # log s_nb = log(m + c p_y) - log(m + c p_x): gradients in the size units of g_size.
            size_nb = (m + c * p_nb) * (2 * B)  # (..., 2 rows, 2 neighbours, d)
            g_size_nb = torch.stack([-g_log_nb, g_log_nb], -3) / size_nb
        # s = hh / w, ξ = (u - x0) / w, y = y0 + hh r.
        g_u = g_xi / w
        g_w = -(g_s * s + g_xi * xi) / w
        g_hh = gy * r + g_s / w
        gx = torch.where(inside, g_u, gz)
        # Edge and size gradients (rows: x, y), then the softmax and the squash (dq/dl = 1 / a²).
        g_edge = torch.stack([-g_u, gy], -2).unsqueeze(-2)  # (..., 2, 1, d)
        g_size = torch.stack([g_w, g_hh], -2).unsqueeze(-2)
        ar = torch.arange(K, device=k.device).unsqueeze(-1)
        # g_j: the edge gradient for j < k (a float mask: a broadcasting torch.where costs several
        # times more on CPU), plus the size gradient added at j = k; then in place.
        g_logits = g_edge * (ar < k).unsqueeze(-3).to(gz.dtype)  # (..., 2, K, d)
        g_logits.scatter_add_(-2, k.unsqueeze(-3).expand(*g_size.shape), g_size)
        base = g_edge * below + g_size * pk
        if near:
            g_logits.scatter_add_(-2, nb.unsqueeze(-3).expand(*g_size_nb.shape), g_size_nb)
            base = base + (g_size_nb * p_nb).sum(-2, keepdim=True)
        g_logits.sub_(base).mul_(e).mul_((2 * B * c) / S).div_(a.square())
        # Slopes: d = hm exp(L tanh(raw / L)), so dd/draw = d (1 - tanh²); raws at k, k+1 of the padded rows.
        g_raw = g_log_d * (1 - th.square())
        g_pad = torch.zeros(*k.shape[:-2], K + 1, k.shape[-1], dtype=gz.dtype, device=gz.device)
        g_pad.scatter_(-2, torch.cat([k, k + 1], -2), g_raw)
        gh = torch.cat([g_logits.flatten(-3, -2), g_pad[..., 1:-1, :]], -2).transpose(-1, -2)
        return gx, gh, None, None, None, None, None, None
