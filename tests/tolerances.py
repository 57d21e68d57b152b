"""The test suite's one tolerance table (FlagGems style, per dtype), references in float64.

Errors of a reduction grow with the square root of its length, so ``atol`` is given per unit
term and scaled by sqrt(reduce_dim); ``rtol`` covers the rounding of the stored result.

Besides the kernels' dtypes the table names the float64 comparisons of the other tests, by what
lies between the two sides; ``tolerance(name)`` gives the keyword arguments of
``torch.testing.assert_close``:

    >>> tolerance("exact"), tolerance("float64")
    ({'atol': 0.0, 'rtol': 0.0}, {'atol': 1e-12, 'rtol': 0.0})

Tolerances that belong to one problem (an ODE solver's ``atol``, Monte Carlo or statistical
thresholds, a bound derived in the test) stay inline in their test with a comment that says so.
"""
from __future__ import annotations

import math

import torch

# name -> (atol per sqrt(term), rtol); "tf32" is float32 inputs rounded to 10 mantissa bits.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float32": (2e-6, 1e-5),
    "tf32": (1e-3, 2e-3),
    "tf32x3": (1e-5, 5e-5),  # fp32 as three TF32 products (the kernels' fp32 without TF32)
    "float16": (1e-3, 2e-3),
    "bfloat16": (8e-3, 1.6e-2),
    # float64 comparisons (use with reduce_dim=1):
    "exact": (0.0, 0.0),  # the same operations on the same inputs: bit for bit
    "float64": (1e-12, 0.0),  # closed-form float64 maths two ways: a few ulps of O(1) values
    "float64_kernels": (1e-12, 1e-12),  # the same float64 maths through other kernels or orders (dense vs sparse)
    "float64_autograd": (1e-10, 0.0),  # a float64 value against one built from autograd derivatives
}


def tolerance(dtype: torch.dtype | str, reduce_dim: int = 1) -> dict[str, float]:
    """Keyword arguments for torch.testing.assert_close at this dtype and reduction length."""
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    atol, rtol = TOLERANCES[name]
    return {"atol": atol * math.sqrt(max(reduce_dim, 1)), "rtol": rtol}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | str, reduce_dim: int = 1) -> None:
    """Compares `actual` (any dtype) with a float64 reference under the table's tolerance."""
    torch.testing.assert_close(actual.double(), expected.double(), **tolerance(dtype, reduce_dim))
