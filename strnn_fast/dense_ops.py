r"""The dense path of a masked layer: ``F.linear`` on weights masked at rest, gradients kept on the mask.

Weights are kept masked at rest (zero off the mask), so the forward is the plain dense matmul
and needs no ``W * M``; :func:`masked_dense_linear` restricts the weight's gradient to the mask
by differentiable ops, so gradients of gradients stay masked too. :func:`linear` keeps the
column-major layout that the sparse kernels hand on (:func:`is_transposed`).

Example:
    >>> import torch
    >>> w = torch.tensor([[1.0, 0.0], [2.0, 3.0]], requires_grad=True)
    >>> mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    >>> masked_dense_linear(torch.ones(1, 2), w, None, mask).sum().backward()
    >>> w.grad.tolist()
    [[1.0, 0.0], [1.0, 1.0]]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["empty_transposed", "is_transposed", "linear", "masked_dense_linear", "randn_transposed"]


def is_transposed(x: torch.Tensor) -> bool:
    """Whether a 2-D `x` is laid out column-major: the transpose of an (in, batch) tensor with
    contiguous rows (the rows may be padded, as the C++ kernels pad theirs).

    The CSR kernels want the batch on the columns and return their outputs that way; layers
    keep such a layout instead of copying (elementwise ops between tensors of different layouts,
    an activation and its gradient for instance, run several times slower).

    >>> is_transposed(torch.zeros(3, 5).T), is_transposed(torch.zeros(5, 3))
    (True, False)
    """
    return x.dim() == 2 and x.shape[0] > 1 and x.shape[1] > 1 and x.stride(0) == 1 and x.stride(1) >= x.shape[0]


def empty_transposed(batch: int, width: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialized (batch, width) CPU tensor laid out as the C++ kernels return activations:
    column-major, each column padded to ``_C.feature_major_ld`` (outputs that the next kernel reads
    along the batch, as the affine StrAF step's z).

    >>> empty_transposed(1024, 3).stride()
    (1, 1040)
    """
    from . import _C

    # One call (a slice of a (width, ld) tensor, then its transpose, cost ~5 us more at these sizes)
    return torch.empty_strided((batch, width), (1, _C.feature_major_ld(batch, dtype.itemsize)), dtype=dtype)


def randn_transposed(batch: int, width: int, *, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> torch.Tensor:
    """A standard normal (batch, width) tensor laid out as the C++ kernels return activations:
    column-major, each column padded to ``_C.feature_major_ld`` (the probes that time a layer or a
    chain feed it the layout it will be fed).

    >>> x = randn_transposed(1024, 3)
    >>> x.shape, x.stride()
    (torch.Size([1024, 3]), (1, 1040))
    """
    from . import _C

    ld = _C.feature_major_ld(batch, torch.empty((), dtype=dtype).element_size())
    return torch.randn(width, ld, dtype=dtype, device=device, generator=generator)[:, :batch].T


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` that keeps a column-major input's layout in its output (and so in the gradients)."""
    if not is_transposed(x):
        return F.linear(x, weight, bias)
    yt = weight @ x.T if bias is None else torch.addmm(bias.unsqueeze(1), weight, x.T)
    return yt.T


#: Weights up to this many entries are masked by a multiply (see masked_dense_linear).
SMALL_WEIGHT = 1 << 17


class _MaskGradEager(torch.autograd.Function):
    # Identity on the weight; its gradient is multiplied by the mask. The backward is made of
    # differentiable ops, so gradients of gradients (a CNF's divergence, gradient penalties) are
    # masked too: a hand-written backward of the whole linear map left the second-order weight
    # gradient unmasked, which moved masked-out weights off zero. No setup_context: apply then
    # skips binding the arguments with inspect (about 0.1 ms a call). Eager mode only.
    @staticmethod
    def forward(ctx, weight, mask):
        ctx.save_for_backward(mask)
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None


class _MaskGrad(torch.autograd.Function):
    # The same for torch.func transforms (the CNFs' jacrev/vmap): setup_context, vmap rule, jvp.
    generate_vmap_rule = True

    @staticmethod
    def forward(weight, mask):
        return weight.view_as(weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[1])

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None

    @staticmethod
    def jvp(ctx, dw, dmask):
        return dw


def masked_dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    r"""``F.linear(x, weight, bias)`` whose weight gradient is zero where `mask` is zero.

    The weight must already be zero off the mask (masked at rest): the forward is the plain dense
    matmul, and masked-out weights never receive gradient, so optimizers keep them at zero.
    Without gradients this is exactly ``F.linear`` (a column-major input keeps its layout).
    """
    if not (torch.is_grad_enabled() and weight.requires_grad):
        return linear(x, weight, bias)
    if weight.numel() <= SMALL_WEIGHT:
        # W * M (= W, masked at rest) in C++ autograd: 20 us less per layer forward+backward than
        # the Function's Python apply at 64 x 64 (batch 256), 1.5 % less at 256 x 256, but 7 %
        # more at 2000 x 2000, where the multiply itself costs.
        return linear(x, weight * mask, bias)
    masked = _MaskGrad if torch._C._are_functorch_transforms_active() else _MaskGradEager
    return linear(x, masked.apply(weight, mask), bias)
