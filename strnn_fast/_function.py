r"""An autograd.Function applied without ``Function.apply``'s Python wrapper.

``Function.apply`` looks for ``setup_context``, binds default arguments where there is one, checks
for functorch transforms and unwraps dead functorch wrappers from every argument before calling
``_FunctionBase.apply``. :func:`apply` does the same in fewer steps: ~2 us a call less on a small
masked layer (its forward+backward at batch 64-256 took 3.5-4.4 us less, measured), which small
layers and flow steps pay on every call. Under functorch transforms, and for a Function with
``setup_context``, it calls ``Function.apply`` itself.

Example:
    >>> class Double(torch.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         return 2 * x
    ...     @staticmethod
    ...     def backward(ctx, g):
    ...         return 2 * g
    >>> x = torch.ones(2, requires_grad=True)
    >>> apply(Double, x).sum().backward()
    >>> x.grad
    tensor([2., 2.])
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

_RAW: dict[type, tuple[Callable[..., Any], bool]] = {}  # cls -> (its apply, whether it is _FunctionBase's)


def apply(cls: type[Function], *args: Any) -> Any:
    """``cls.apply(*args)``, without Function.apply's Python where no functorch transform is active."""
    hit = _RAW.get(cls)
    if hit is None:
        own = cls.setup_context is not Function.setup_context  # needs Function.apply's argument binding
        hit = _RAW[cls] = (cls.apply, False) if own else (super(Function, cls).apply, True)
    raw, base = hit
    if not base or torch._C._are_functorch_transforms_active():
        return cls.apply(*args)
    unwrap = torch._C._functorch.unwrap_if_dead
    return raw(*[unwrap(a) if isinstance(a, Tensor) else a for a in args])
