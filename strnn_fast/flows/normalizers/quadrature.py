r"""Clenshaw–Curtis quadrature on [0, 1].

With n intervals the rule has n + 1 nodes at the Chebyshev extrema and integrates polynomials of
degree n exactly (n + 1 for even n); for analytic integrands the error falls geometrically in n.
The nodes include both end points, so a rule for ∫_0^x also evaluates the integrand at x.

References:
    Waldvogel, "Fast construction of the Fejér and Clenshaw–Curtis quadrature rules" (2006).

Example:
    >>> s, w = clenshaw_curtis(4)
    >>> float(w @ s**3)  # ∫_0^1 s^3 ds
    0.25
"""
from __future__ import annotations

import numpy as np

from ..._validate import as_positive_int

__all__ = ["clenshaw_curtis"]


def clenshaw_curtis(n: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Nodes and weights of the (n + 1)-point Clenshaw–Curtis rule on [0, 1].

    Arguments:
        n: number of intervals (>= 1).

    Returns:
        ``(nodes, weights)``: float64 arrays of length n + 1, nodes increasing from 0 to 1, weights
        positive and summing to 1; ``∫_0^1 f(s) ds ≈ weights @ f(nodes)``.

    Example:
        >>> s, w = clenshaw_curtis(2)  # Simpson's rule
        >>> s.tolist(), np.round(w * 6, 12).tolist()
        ([0.0, 0.5, 1.0], [1.0, 4.0, 1.0])
    """
    n = as_positive_int(n, "n")
    theta = np.pi * np.arange(n + 1) / n
    # Weights on [-1, 1] from the cosine series of the integrand at the nodes cos(theta_k).
    w = np.ones(n + 1)
    for j in range(1, n // 2 + 1):
        b = 1.0 if 2 * j == n else 2.0
        w -= b / (4.0 * j * j - 1.0) * np.cos(2.0 * j * theta)
    w *= 2.0 / n
    w[0] /= 2.0
    w[-1] /= 2.0
    # Map [-1, 1] -> [0, 1]: s = (1 - cos theta) / 2 increases with k; the interval halves. The sine
    # form of cos(theta_k) is exactly symmetric about the midpoint.
    cos_theta = np.sin(np.pi * (n - 2 * np.arange(n + 1)) / (2 * n))
    return (1.0 - cos_theta) / 2.0, w / 2.0
