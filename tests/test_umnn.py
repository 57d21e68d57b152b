"""Clenshaw–Curtis quadrature and the UMNN normalizer: integral, slope, inverse, implicit gradient."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from strnn_fast.flows.normalizers import UMNNNormalizer, clenshaw_curtis


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 16, 33])
def test_clenshaw_curtis_is_exact_on_polynomials(n: int) -> None:
    s, w = clenshaw_curtis(n)
    assert s.shape == w.shape == (n + 1,)
    assert s[0] == 0.0 and s[-1] == 1.0 and (np.diff(s) > 0).all()
    assert (w > 0).all() and math.isclose(w.sum(), 1.0, abs_tol=1e-14)
    assert np.allclose(s + s[::-1], 1.0, atol=1e-15) and np.allclose(w, w[::-1], atol=1e-15)
    top = n + 1 if n % 2 == 0 else n  # symmetric rules with an odd node count gain a degree
    for p in range(top + 1):
        assert w @ s**p == pytest.approx(1.0 / (p + 1), abs=1e-14)
    if n <= 8:  # one degree more is not exact (beyond that the miss is below rounding)
        assert abs(w @ s ** (top + 1) - 1.0 / (top + 2)) > 1e-9


def test_clenshaw_curtis_converges_geometrically_on_analytic_functions() -> None:
    for f, exact in [(np.exp, math.e - 1), (lambda s: np.cos(3 * s), math.sin(3) / 3),
                     (lambda s: 1 / (1 + s**2), math.pi / 4)]:
        errors = [abs(clenshaw_curtis(n)[1] @ f(clenshaw_curtis(n)[0]) - exact) for n in (4, 8, 16)]
        assert errors[2] < 1e-12 and errors[1] < errors[0] / 100


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_clenshaw_curtis_rejects_bad_n(n) -> None:
    with pytest.raises((ValueError, TypeError), match="n must be"):
        clenshaw_curtis(n)


def normalizer(**options) -> UMNNNormalizer:
    torch.manual_seed(0)
    return UMNNNormalizer(embedding_size=3, integrand_hidden=(16, 16), **options).double()


def test_integral_matches_adaptive_quadrature_and_slope_is_log_det() -> None:
    norm = normalizer(quadrature_intervals=40)
    x = torch.tensor([[-3.0, -0.5, 0.0, 0.7, 4.0]], dtype=torch.float64)
    h = torch.randn(1, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        z, log_det = norm(x, h)
    for i in range(5):
        e = h[:, i : i + 1, 1:]

        @torch.no_grad()
        def g(t: float) -> float:
            return float(norm.integrand(torch.tensor([[[t]]], dtype=torch.float64), e))

        reference = quad(g, 0.0, float(x[0, i]), epsabs=1e-13, epsrel=1e-13)[0]
        assert float(z[0, i] - h[0, i, 0]) == pytest.approx(reference, abs=1e-10)
        assert float(log_det[0, i]) == pytest.approx(math.log(g(float(x[0, i]))), abs=1e-12)


def test_map_is_increasing_with_slope_at_least_min_slope() -> None:
    norm = normalizer(min_slope=0.05)
    x = torch.linspace(-30, 30, 2001, dtype=torch.float64)[:, None].expand(-1, 2)
    h = torch.randn(1, 2, 4, dtype=torch.float64).expand(len(x), -1, -1)
    z, log_det = norm(x, h)
    assert (torch.diff(z, dim=0) > 0).all()
    assert (log_det >= math.log(0.05) - 1e-12).all()


@pytest.mark.parametrize("tol", [1e-4, 1e-8, 1e-12])
@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0])
def test_inverse_meets_the_stated_tolerance(tol: float, scale: float) -> None:
    norm = normalizer(tol=tol)
    torch.manual_seed(1)
    x = scale * torch.randn(256, 3, dtype=torch.float64)  # |x| up to ~100: brackets must grow
    h = torch.randn(256, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        z, _ = norm(x, h)
        x_hat = norm.inverse(z, h)
    assert ((x_hat - x).abs() <= tol * (1 + x.abs())).all()


def test_inverse_in_float32() -> None:
    torch.manual_seed(2)
    norm = UMNNNormalizer(embedding_size=2, integrand_hidden=(8,))
    x, h = 3 * torch.randn(512, 4), torch.randn(512, 4, 3)
    with torch.no_grad():
        x_hat = norm.inverse(norm(x, h)[0], h)
    assert ((x_hat - x).abs() <= 2e-6 * (1 + x.abs())).all()


def test_inverse_gradient_is_the_implicit_one() -> None:
    norm = normalizer(tol=1e-12)
    z = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    h = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda zz, hh: norm.inverse(zz, hh), (z, h), atol=1e-6)


@pytest.mark.parametrize(
    "options, match",
    [({"embedding_size": 0}, "embedding_size"), ({"integrand_hidden": ()}, "integrand_hidden"),
     ({"min_slope": 0.0}, "min_slope"), ({"tol": "small"}, "tol"), ({"positive": "abs"}, "positive"),
     ({"quadrature_intervals": 0}, "quadrature_intervals"), ({"integrand_activation": "step"}, "integrand_activation")],
)
def test_bad_options(options: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        UMNNNormalizer(**options)


def test_elu_positive_and_dtype_change_keep_an_exact_rule() -> None:
    norm = UMNNNormalizer(positive="elu", quadrature_intervals=12).double()
    s, w = clenshaw_curtis(12)
    assert torch.equal(norm.nodes, torch.from_numpy(s)) and torch.equal(norm.weights, torch.from_numpy(w))
    x, h = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, 9, dtype=torch.float64)
    with torch.no_grad():
        assert (norm.inverse(norm(x, h)[0], h) - x).abs().max() < 1e-5
