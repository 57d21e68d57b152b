"""strnn_fast.data.sem: sampling, interventions, exact counterfactuals, analytic linear-Gaussian answers."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from strnn_fast.data import SEM, LinearGaussianSEM, LinearSEM, random_sparse_sem
from strnn_fast.graph import descendants, find_cycle

KINDS = ["linear", "nonlinear"]


def _gaussian_chain() -> LinearGaussianSEM:
    # a -> b -> c, a -> c; d isolated.
    return LinearGaussianSEM(
        [("a", "b", 1.5), ("b", "c", -0.8), ("a", "c", 0.5)],
        noise_std={"a": 1.0, "b": 0.5, "c": 2.0, "d": 1.0},
        names=["a", "b", "c", "d"],
        intercept=[1.0, 0.0, -2.0, 3.0],
    )


@pytest.mark.parametrize("d", [5, 10])
@pytest.mark.parametrize("kind", KINDS)
def test_random_sparse_sem(d: int, kind: str) -> None:
    sem = random_sparse_sem(d, kind=kind, seed=0)
    assert sem.d == d and sem.names == [f"x{i}" for i in range(d)]
    A = sem.adjacency
    assert find_cycle(A) is None and not A.diagonal().any()
    assert A.sum() <= 3 * d  # sparse: about d edges expected
    x = sem.sample(500, seed=1)
    assert x.shape == (500, d) and np.isfinite(x).all()
    np.testing.assert_array_equal(x, random_sparse_sem(d, kind=kind, seed=0).sample(500, seed=1))
    assert isinstance(sem, LinearSEM) == (kind == "linear")


def test_unordered_sem_still_samples_in_causal_order() -> None:
    sem = random_sparse_sem(10, kind="linear", seed=3, ordered=False, density=0.5)
    noise = sem.sample_noise(50, seed=0)
    np.testing.assert_allclose(sem.abduct(sem.from_noise(noise)), noise, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_abduction_inverts_generation(kind: str) -> None:
    sem = random_sparse_sem(10, kind=kind, seed=4)
    noise = sem.sample_noise(200, seed=5)
    np.testing.assert_allclose(sem.abduct(sem.from_noise(noise)), noise, atol=1e-10)


@pytest.mark.parametrize("noise", ["gaussian", "laplace"])
def test_noise_scale_and_family(noise: str) -> None:
    sem = LinearSEM([], [0.5, 2.0], noise=noise)
    e = sem.sample_noise(200_000, seed=0)
    # Monte Carlo error of moments from 200,000 samples (not a dtype tolerance)
    np.testing.assert_allclose(e.std(axis=0), [0.5, 2.0], rtol=0.02)
    excess_kurtosis = ((e / e.std(axis=0)) ** 4).mean(axis=0) - 3.0
    np.testing.assert_allclose(excess_kurtosis, 0.0 if noise == "gaussian" else 3.0, atol=0.3)


@pytest.mark.parametrize("kind", KINDS)
def test_interventional_samples_set_intervened_values_exactly(kind: str) -> None:
    sem = random_sparse_sem(5, kind=kind, seed=2)
    per_row = np.linspace(-1.0, 1.0, 100)
    x = sem.interventional_samples({"x1": 2.5, 3: per_row}, 100, seed=0)
    assert (x[:, 1] == 2.5).all()
    np.testing.assert_array_equal(x[:, 3], per_row)
    # Non-descendants of the intervened variables have their observational values (same noise).
    untouched = ~descendants(sem.adjacency, [1, 3])
    untouched[[1, 3]] = False
    np.testing.assert_array_equal(x[:, untouched], sem.sample(100, seed=0)[:, untouched])


def test_linear_gaussian_mean_matches_monte_carlo() -> None:
    sem = _gaussian_chain()
    n = 200_000
    for do in ({}, {"a": 2.0}, {"b": -1.0}, {"a": 0.0, "d": 5.0}):
        mean, cov = sem.interventional_distribution(do)
        estimate = sem.interventional_mean(do, n=n, seed=1)
        # Five standard errors of a mean of n samples: a false failure has probability ~1e-6.
        tolerance = 5.0 * np.sqrt(np.diag(cov) / n) + 1e-12
        assert (np.abs(estimate - mean) <= tolerance).all(), (do, estimate, mean)
        np.testing.assert_array_equal(sem.interventional_mean(do), mean)


def test_linear_gaussian_covariance_matches_samples() -> None:
    sem = _gaussian_chain()
    _, cov = sem.interventional_distribution({"b": 1.0})
    x = sem.interventional_samples({"b": 1.0}, 200_000, seed=2)
    # Monte Carlo error of a covariance from 200,000 samples (not a dtype tolerance)
    np.testing.assert_allclose(np.cov(x, rowvar=False), cov, atol=0.05)
    assert cov[1, 1] == 0.0 and cov[0, 1] == 0.0
    # do(b) cuts the path a -> b -> c; only the direct a -> c (coefficient 0.5) remains.
    assert cov[0, 2] == pytest.approx(0.5)
    assert sem.interventional_distribution({})[1][0, 2] == pytest.approx(0.5 + 1.5 * -0.8)


def test_analytic_linear_mean_by_hand() -> None:
    sem = _gaussian_chain()
    # E[a] = 1, E[b] = 1.5, E[c] = -2 - 0.8 * 1.5 + 0.5 * 1, E[d] = 3.
    np.testing.assert_allclose(sem.interventional_mean({}), [1.0, 1.5, -2.7, 3.0])
    np.testing.assert_allclose(sem.interventional_mean({"b": 0.0}), [1.0, 0.0, -1.5, 3.0])


@pytest.mark.parametrize("kind", KINDS)
def test_counterfactual_with_empty_do_is_identity(kind: str) -> None:
    sem = random_sparse_sem(10, kind=kind, seed=6)
    x = sem.sample(20, seed=0)
    np.testing.assert_array_equal(sem.counterfactual(x, {}), x)
    np.testing.assert_array_equal(sem.counterfactual(x[3], {}), x[3])


@pytest.mark.parametrize("kind", KINDS)
def test_counterfactual_changes_only_descendants(kind: str) -> None:
    sem = random_sparse_sem(10, kind=kind, seed=7, density=0.4)
    x = sem.sample(50, seed=1)
    target = int(np.argmax([descendants(sem.adjacency, v).sum() for v in range(10)]))
    cf = sem.counterfactual(x, {target: 3.0})
    assert (cf[:, target] == 3.0).all()
    below = descendants(sem.adjacency, target)
    others = ~below
    others[target] = False
    np.testing.assert_array_equal(cf[:, others], x[:, others])
    assert below.any() and not np.allclose(cf[:, below], x[:, below])
    # Same noise: abducting the counterfactual world gives back the factual noise off the target.
    keep = np.arange(10) != target
    np.testing.assert_allclose(sem.abduct(cf)[:, keep], sem.abduct(x)[:, keep], atol=1e-10)


def test_counterfactual_setting_observed_value_returns_observation() -> None:
    sem = random_sparse_sem(5, kind="nonlinear", seed=8)
    x = sem.sample(10, seed=2)
    np.testing.assert_allclose(sem.counterfactual(x, {"x0": x[:, 0]}), x, atol=1e-12)


def test_linear_counterfactual_shift_equals_causal_effect() -> None:
    sem = _gaussian_chain()
    x = sem.sample(5, seed=3)
    for row in x:
        effect = sem.interventional_mean({"a": 4.0}) - sem.interventional_mean({"a": float(row[0])})
        np.testing.assert_allclose(sem.counterfactual(row, {"a": 4.0}), row + effect, atol=1e-12)


def test_generic_sem_with_custom_mechanisms() -> None:
    sem = SEM([("u", "v"), ("u", "w"), ("v", "w")],
              [None, lambda p: p[:, 0] ** 2, lambda p: np.sin(p[:, 0]) * p[:, 1]],
              {"u": 1.0, "v": 0.1, "w": 0.1}, noise="laplace")
    assert sem.names == ["u", "v", "w"] and sem.parents("w").tolist() == [0, 1]
    x = sem.interventional_samples({"u": 2.0}, 10_000, seed=0)
    assert x[:, 1].mean() == pytest.approx(4.0, abs=0.01)
    mean = sem.interventional_mean({"u": 2.0}, n=10_000)
    assert mean[0] == 2.0 and mean[1] == pytest.approx(4.0, abs=0.01)


def test_sems_pickle() -> None:
    for kind in KINDS:
        sem = random_sparse_sem(5, kind=kind, seed=9)
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(sem)).sample(5, seed=0), sem.sample(5, seed=0))


def test_index_based_linear_sem_infers_d_from_noise() -> None:
    sem = LinearSEM([(0, 1, 2.0)], noise_std=[1.0, 1.0, 1.0])
    assert sem.d == 3 and sem.names is None
    assert sem.coefficients[1, 0] == 2.0 and sem.coefficients.sum() == 2.0


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda s: s.interventional_samples({"zz": 1.0}, 5), ValueError, "unknown variable 'zz'"),
        (lambda s: s.interventional_samples({7: 1.0}, 5), ValueError, "out of range"),
        (lambda s: s.interventional_samples({"a": [1.0, 2.0]}, 5), ValueError, r"shape \(5,\)"),
        (lambda s: s.interventional_samples({"a": np.nan}, 5), ValueError, "finite"),
        (lambda s: s.interventional_samples({"a": 1.0, 0: 2.0}, 5), ValueError, "twice"),
        (lambda s: s.interventional_samples([("a", 1.0)], 5), TypeError, "mapping"),
        (lambda s: s.interventional_mean({"a": [1.0]}), ValueError, "scalar"),
        (lambda s: s.counterfactual(np.zeros(3), {}), ValueError, r"shape \(n, 4\)"),
        (lambda s: s.counterfactual(np.full(4, np.inf), {}), ValueError, "finite"),
        (lambda s: s.sample(0), ValueError, "n must be positive"),
    ],
)
def test_query_errors(call, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        call(_gaussian_chain())


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda: LinearSEM([("a", "b", 1.0), ("b", "a", 1.0)], 1.0), ValueError, "a -> b -> a"),
        (lambda: LinearSEM([("a", "b", 1.0)], {"a": 1.0}), ValueError, r"lacks values for variables \['b'\]"),
        (lambda: LinearSEM([("a", "b", 1.0)], -1.0), ValueError, "non-negative"),
        (lambda: LinearSEM([("a", "b", 1.0)], 1.0, noise="cauchy"), ValueError, "unknown noise"),
        (lambda: LinearSEM([("a", "b", 0.0)], 1.0), ValueError, "non-zero coefficient"),
        (lambda: LinearSEM([("a", "b", 1.0), ("a", "b", 2.0)], 1.0), ValueError, "twice"),
        (lambda: LinearSEM([("a", "b")], 1.0), ValueError, "triples"),
        (lambda: SEM([(0, 1)], [None, None], 1.0), ValueError, "has parents"),
        (lambda: SEM([(0, 1)], [None], 1.0), ValueError, "one entry per variable"),
        (lambda: SEM([(0, 1)], [None, lambda p: p], 1.0).sample(3), ValueError, "returned shape"),
        (lambda: random_sparse_sem(5, kind="quadratic"), ValueError, "unknown kind"),
    ],
)
def test_construction_errors(call, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        call()
