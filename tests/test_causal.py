"""Causal flows: the do-inverse algorithm against exact oracles, then CausalFlow against SEM ground truth."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from strnn_fast.causal.queries import affected, do_inverse, do_rounds
from strnn_fast.data.adjacency import random_dag
from _trust_world import A3, X, check_api_refuses, saved_causal
import math


# --------------------------------------------------------------------------- the algorithm, exactly


def _linear_flow(A: np.ndarray, steps: int, rng: np.random.Generator):
    """A composition of linear triangular steps z = M x following A, and M itself."""
    d = A.shape[0]
    M = np.eye(d)
    for _ in range(steps):
        step = np.diag(rng.uniform(0.5, 2.0, d)) + np.where(A, rng.normal(0.0, 1.0, (d, d)), 0.0)
        M = step @ M
    Mt = torch.from_numpy(M)
    Minv = torch.from_numpy(np.linalg.inv(M))
    return (lambda x: x @ Mt.T), (lambda z: z @ Minv.T), M


def _oracle(M: np.ndarray, z: np.ndarray, do: dict[int, np.ndarray]) -> np.ndarray:
    """Solves M[i] x = z_i for free variables and x_k = v_k for intervened ones, row by row."""
    K = M.copy()
    out = np.empty_like(z)
    for k in do:
        K[k] = 0.0
        K[k, k] = 1.0
    for r in range(len(z)):
        rhs = z[r].copy()
        for k, v in do.items():
            rhs[k] = v[r]
        out[r] = np.linalg.solve(K, rhs)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_do_inverse_matches_linear_oracle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = int(rng.integers(3, 9))
    A = random_dag(d, density=0.5, seed=rng, ordered=bool(seed % 2))
    transform, inverse, M = _linear_flow(A, steps=int(rng.integers(1, 4)), rng=rng)
    n = 7
    z = torch.from_numpy(rng.normal(size=(n, d)))
    k = int(rng.integers(1, d))
    idx = sorted(rng.choice(d, size=k, replace=False).tolist())
    values = torch.from_numpy(rng.normal(size=(n, k)))
    x = do_inverse(transform, inverse, A, z, idx, values)
    expected = _oracle(M, z.numpy(), {i: values[:, c].numpy() for c, i in enumerate(idx)})
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-9)
    assert torch.equal(x[:, idx], values)


def test_chain_of_interventions_needs_every_round() -> None:
    # x0 -> x1 -> x2 -> x3 with do on x1 and x3: x3's latent must be read after x1 is set.
    A = np.eye(4, k=-1, dtype=bool)
    rng = np.random.default_rng(3)
    transform, inverse, M = _linear_flow(A, steps=2, rng=rng)
    z = torch.from_numpy(rng.normal(size=(5, 4)))
    values = torch.tensor([[1.0, -2.0]], dtype=torch.float64).expand(5, 2)
    assert do_rounds(A, [1, 3]) == 2
    x = do_inverse(transform, inverse, A, z, [1, 3], values)
    expected = _oracle(M, z.numpy(), {1: values[:, 0].numpy(), 3: values[:, 1].numpy()})
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-9)


def test_affected_is_intervened_plus_descendants() -> None:
    A = np.zeros((5, 5), dtype=bool)
    A[1, 0] = A[2, 1] = A[4, 3] = True
    assert affected(A, [1]).tolist() == [False, True, True, False, False]
    assert affected(A, [0, 3]).tolist() == [True, True, True, True, True]
    assert do_rounds(A, []) == 0


# --------------------------------------------------------------------------- CausalFlow on a known SEM

pd = pytest.importorskip("pandas")
from strnn_fast import load  # noqa: E402
from strnn_fast.causal import CausalFlow  # noqa: E402
from strnn_fast.data.sem import LinearGaussianSEM  # noqa: E402

NAMES = ["a", "b", "c", "d"]
# a -> b -> c -> d and a -> c. Edge weights are moderate so that do-values within two standard
# deviations stay inside the observed support of (parents, child): a flow cannot be asked to
# extrapolate what the data never showed it.
SEM_EDGES = [("a", "b", 0.8), ("b", "c", -1.0), ("a", "c", 0.5), ("c", "d", 0.8)]
SEM_STD = [1.0, 1.0, 0.7, 0.7]
# Tolerances, in data units (the variables' standard deviations are 1 to 1.6; every intervention
# below moves some mean by 0.8 or more, so a model that ignored it would fail).
MEAN_TOL = 0.25
CF_TOL = 0.12
ATE_TOL = 0.15


@pytest.fixture(scope="module")
def sem() -> LinearGaussianSEM:
    return LinearGaussianSEM(SEM_EDGES, SEM_STD, names=NAMES)


@pytest.fixture(scope="module")
def fitted(sem: LinearGaussianSEM) -> CausalFlow:
    torch.manual_seed(0)
    # Two steps: the composed map reads ancestors two edges away, which the do-inverse must handle.
    model = CausalFlow([(p, c) for p, c, _ in SEM_EDGES], hidden_sizes=(32, 32), flow_steps=2)
    model.fit(sem.sample(4000, seed=0), epochs=100, lr=3e-3, batch_size=128, seed=0, verbose=False)
    return model


@pytest.mark.parametrize("do", [{"a": 1.5}, {"b": -1.0}, {"c": -1.0}, {"a": 1.0, "c": 0.0}, {"b": 1.0, "d": 1.0}])
def test_interventional_mean_matches_sem(fitted: CausalFlow, sem: LinearGaussianSEM, do: dict) -> None:
    pred = fitted.interventional_mean(do, 20_000, seed=0)
    truth = dict(zip(NAMES, sem.interventional_mean(do)))
    assert set(pred) == set(NAMES)
    for name in NAMES:
        assert abs(pred[name] - truth[name]) < MEAN_TOL, (name, pred, truth)
    for name, value in do.items():
        assert pred[name] == value


@pytest.mark.parametrize("do", [{"b": 1.0}, {"a": 0.0, "c": 1.0}, {"c": 0.5}])
def test_counterfactual_matches_sem(fitted: CausalFlow, sem: LinearGaussianSEM, do: dict) -> None:
    x_obs = sem.sample(300, seed=1)
    cf = fitted.counterfactual(x_obs, do, output="tensor")
    truth = sem.counterfactual(x_obs, do)
    assert cf.dtype == torch.float64  # float64 rows keep their precision
    assert float((cf.numpy() - truth).__abs__().mean()) < CF_TOL
    changed = affected(fitted.graph, [NAMES.index(k) for k in do])
    # Non-descendants keep their factual values bit for bit; intervened ones take their values.
    assert np.array_equal(cf.numpy()[:, ~changed], x_obs[:, ~changed])
    for name, value in do.items():
        assert (cf[:, NAMES.index(name)] == value).all()


def test_counterfactual_per_row_values_and_frames(fitted: CausalFlow, sem: LinearGaussianSEM) -> None:
    x_obs = pd.DataFrame(sem.sample(50, seed=2), columns=NAMES, index=range(100, 150))
    values = np.linspace(-1.0, 1.0, 50)
    cf = fitted.counterfactual(x_obs[["d", "c", "b", "a"]], {"b": values})  # columns matched by name
    assert isinstance(cf, pd.DataFrame) and list(cf.columns) == NAMES and list(cf.index) == list(x_obs.index)
    assert np.array_equal(cf["b"].to_numpy(), values)
    assert np.array_equal(cf["a"].to_numpy(), x_obs["a"].to_numpy())
    truth = sem.counterfactual(x_obs.to_numpy(), {"b": values})
    assert np.abs(cf.to_numpy() - truth).mean() < CF_TOL


def test_interventional_samples_exact_values_and_per_sample_do(fitted: CausalFlow) -> None:
    v = torch.linspace(-2.0, 2.0, 64)
    x = fitted.interventional_samples({"b": v, 3: 0.25}, 64, seed=1)
    assert torch.equal(x["b"], v) and bool((x["d"] == 0.25).all())
    frame = fitted.interventional_samples({"a": 1.0}, 10, seed=1, output="frame")
    assert list(frame.columns) == NAMES and (frame["a"] == 1.0).all()
    # Same seed, same draw; the global RNG is left alone.
    state = torch.get_rng_state()
    again = fitted.interventional_samples({"b": v, 3: 0.25}, 64, seed=1, output="tensor")
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(again[:, 0], x["a"])


def test_average_treatment_effect(fitted: CausalFlow) -> None:
    # Linear SEM: the effect of b on c is its coefficient, on d the product along the path.
    assert abs(fitted.average_treatment_effect("c", {"b": 1.0}, {"b": 0.0}, 20_000, seed=0) + 1.0) < ATE_TOL
    assert abs(fitted.average_treatment_effect("d", {"b": 1.0}, {"b": 0.0}, 20_000, seed=0) + 0.8) < ATE_TOL
    # b is not a cause of a: no effect at all, exactly (a is never recomputed).
    assert fitted.average_treatment_effect("a", {"b": 1.0}, {"b": 0.0}, 1000, seed=0) == 0.0


def test_save_load_roundtrip(fitted: CausalFlow, sem: LinearGaussianSEM, tmp_path) -> None:
    path = tmp_path / "causal.pt"
    fitted.save(path)
    loaded = load(path)
    assert isinstance(loaded, CausalFlow) and loaded.names == NAMES
    x_obs = sem.sample(20, seed=3)
    assert torch.equal(loaded.counterfactual(x_obs, {"a": 0.3}, output="tensor"),
                       fitted.counterfactual(x_obs, {"a": 0.3}, output="tensor"))


def test_full_structure_is_carefl_ordering() -> None:
    # c -> a -> b with names listed out of causal order: CAREFL lets each variable read all its
    # predecessors in the order c, a, b.
    model = CausalFlow([("c", "a"), ("a", "b")], names=["a", "b", "c"], structure="full", hidden_sizes=(8,))
    order = [model.names[i] for i in model.order]
    assert order == ["c", "a", "b"]
    expected = np.zeros((3, 3), dtype=bool)
    expected[0, 2] = expected[1, 2] = expected[1, 0] = True  # a <- c; b <- c, a
    assert np.array_equal(model.flow_adjacency, expected)
    assert np.array_equal(model.graph, np.array([[0, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=bool))


def _fit_small(adjacency, names, data: np.ndarray) -> CausalFlow:
    torch.manual_seed(7)
    model = CausalFlow(adjacency, names=names, hidden_sizes=(16,), flow_steps=2)
    model.fit(data, epochs=8, lr=5e-3, batch_size=128, seed=3, verbose=False)
    return model


def test_unordered_graph_matches_relabelled_graph(sem: LinearGaussianSEM) -> None:
    # The chain a -> b -> c -> d has one topological order, so both labellings give the same
    # internal model; answers must agree after permuting the columns back.
    perm = [2, 0, 3, 1]  # scrambled position k holds variable perm[k]
    A = sem.adjacency
    data = sem.sample(1500, seed=4)
    ordered = _fit_small(A, NAMES, data)
    scrambled = _fit_small(A[np.ix_(perm, perm)], [NAMES[p] for p in perm], data[:, perm])
    x_obs = sem.sample(40, seed=5)
    cf_o = ordered.counterfactual(x_obs, {"b": 0.5}, output="tensor")
    cf_s = scrambled.counterfactual(x_obs[:, perm], {"b": 0.5}, output="tensor")
    # float32 flow through transform and inverse in two variable orders
    torch.testing.assert_close(cf_s, cf_o[:, perm], atol=1e-5, rtol=1e-5)
    m_o = ordered.interventional_mean({"b": 0.5, "d": -1.0}, 20_000, seed=0)
    m_s = scrambled.interventional_mean({"b": 0.5, "d": -1.0}, 20_000, seed=0)
    for name in NAMES:
        assert abs(m_o[name] - m_s[name]) < 0.05, (name, m_o, m_s)  # Monte Carlo error only


def test_device(fitted: CausalFlow, sem: LinearGaussianSEM, device: str) -> None:
    model = fitted.to(device)
    try:
        x = torch.from_numpy(sem.sample(8, seed=6)).float().to(device)
        cf = model.counterfactual(x, {"a": 1.0}, output="tensor")
        samples = model.interventional_samples({"a": 1.0}, 8, output="tensor")
        assert cf.device.type == samples.device.type == torch.device(device).type
    finally:
        fitted.to("cpu")


# --------------------------------------------------------------------------- bad input


def test_cyclic_graph_raises() -> None:
    with pytest.raises(ValueError, match="cycle"):
        CausalFlow([("x", "y"), ("y", "z"), ("z", "x")])


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="structure"):
        CausalFlow([("x", "y")], structure="dense")
    with pytest.raises(TypeError, match="standardize"):
        CausalFlow([("x", "y")], standardize="yes")


def test_not_fitted_raises() -> None:
    model = CausalFlow([("x", "y")], hidden_sizes=(4,), flow_steps=1)
    for call in (lambda: model.interventional_samples({"x": 1.0}, 5), lambda: model.interventional_mean({"x": 1.0}),
                 lambda: model.counterfactual(torch.zeros(2, 2), {"x": 1.0}), lambda: model.sample(3),
                 lambda: model.average_treatment_effect("y", {"x": 1.0}, {"x": 0.0})):
        with pytest.raises(RuntimeError, match="not fitted"):
            call()


@pytest.mark.parametrize("do, error, match", [
    ({"zz": 1.0}, ValueError, "unknown variable 'zz'"),
    ({7: 1.0}, ValueError, "out of range"),
    ({"a": torch.zeros(3)}, ValueError, r"shape \(5,\)"),
    ({"a": np.zeros((5, 1))}, ValueError, r"shape \(5,\)"),
    ({"a": float("nan")}, ValueError, "NaN"),
    ({"a": "high"}, TypeError, "number"),
    ({"a": True}, TypeError, "number"),
    ({1.5: 1.0}, TypeError, "names"),
    ({"a": 1.0, 0: 2.0}, ValueError, "twice"),
    ([("a", 1.0)], TypeError, "mapping"),
])
def test_bad_do_raises(fitted: CausalFlow, do, error, match: str) -> None:
    with pytest.raises(error, match=match):
        fitted.interventional_samples(do, 5)


def test_bad_rows_raise(fitted: CausalFlow) -> None:
    with pytest.raises(ValueError, match=r"shape \(m, 4\)"):
        fitted.counterfactual(torch.zeros(3, 5), {"a": 1.0})
    with pytest.raises(ValueError, match="lacks the columns"):
        fitted.counterfactual(pd.DataFrame(np.zeros((2, 4)), columns=["a", "b", "c", "e"]), {"a": 1.0})
    with pytest.raises(ValueError, match="NaN"):
        fitted.counterfactual(np.full((2, 4), np.nan), {"a": 1.0})
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        fitted.counterfactual(np.zeros((2, 4)), {"a": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="unknown variable 'q'"):
        fitted.average_treatment_effect("q", {"a": 1.0}, {"a": 0.0})
    with pytest.raises(ValueError, match="output"):
        fitted.sample(3, output="json")


def test_unnamed_model_uses_indices_and_adopts_frame_names() -> None:
    model = CausalFlow(np.array([[0, 0], [1, 0]]), hidden_sizes=(4,), flow_steps=1)
    with pytest.raises(ValueError, match="no variable names"):
        model.variables.index("x")
    x = torch.randn(60, 2)
    model.fit(x, epochs=1, verbose=False)
    assert isinstance(model.interventional_samples({0: 1.0}, 4), torch.Tensor)
    framed = CausalFlow(np.array([[0, 0], [1, 0]]), hidden_sizes=(4,), flow_steps=1)
    framed.fit(pd.DataFrame(x.numpy(), columns=["u", "v"]), epochs=1, verbose=False)
    assert framed.names == ["u", "v"] and framed.config["names"] == ["u", "v"]


@pytest.mark.parametrize("normalizer", ["affine", "umnn"])
def test_factual_do_reproduces_the_observation(normalizer: str) -> None:
    # Setting b to the value it had changes nothing, whatever the weights: abduction and
    # prediction must be exact inverses of each other (UMNN inverts numerically).
    torch.manual_seed(1)
    model = CausalFlow([("a", "b"), ("b", "c"), ("a", "c")], normalizer=normalizer, hidden_sizes=(8,), flow_steps=2)
    x = torch.randn(200, 3, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    model.fit(x, epochs=1, verbose=False)
    cf = model.counterfactual(x[:20], {"b": x[:20, 1]}, output="tensor")
    # a fitted float64 flow inverted by fixed-point passes: the inversion error, not roundoff
    torch.testing.assert_close(cf, x[:20], atol=1e-4, rtol=1e-4)


# (id, callable(world), exception type, text the message must contain)
API_BAD_INPUT = [
    ("causal-cf-float32", lambda w: saved_causal(w).counterfactual(np.full((2, 3), 1e40), {"a": 1.0}), ValueError,
     "x_obs"),
    ("causal-cycle", lambda w: CausalFlow([("a", "b"), ("b", "a")]), ValueError, "cycle"),
    ("causal-structure", lambda w: CausalFlow(A3, structure="dense"), ValueError, "structure"),
    ("causal-constant", lambda w: CausalFlow(A3, hidden_sizes=(4,), flow_steps=1).fit(
        np.c_[X[:, :2], np.full(30, 7.0)], epochs=1, verbose=False), ValueError, "column 2"),
    ("causal-val-fraction", lambda w: CausalFlow(A3).fit(X, val_fraction=1.5), ValueError, "val_fraction"),
    ("causal-float32", lambda w: CausalFlow(A3).fit(X * 1e39, epochs=1, verbose=False), ValueError, "float32"),
    ("causal-do-unknown", lambda w: saved_causal(w).interventional_samples({"zz": 1.0}, 5), ValueError, "'zz'"),
    ("causal-do-nan", lambda w: saved_causal(w).interventional_samples({"a": math.nan}, 5), ValueError, "do['a']"),
    ("causal-do-length", lambda w: saved_causal(w).interventional_samples({"a": np.zeros(3)}, 5), ValueError, "do['a']"),
    ("causal-do-not-mapping", lambda w: saved_causal(w).interventional_samples([("a", 1.0)], 5), TypeError, "do"),
    ("causal-n-0", lambda w: saved_causal(w).sample(0), ValueError, "n"),
    ("causal-n-str", lambda w: saved_causal(w).sample("3"), TypeError, "n"),
    ("causal-seed", lambda w: saved_causal(w).sample(3, seed="x"), TypeError, "seed"),
    ("causal-cf-width", lambda w: saved_causal(w).counterfactual(np.zeros((2, 4)), {"a": 1.0}), ValueError, "x_obs"),
    ("causal-output", lambda w: saved_causal(w).sample(3, output="json"), ValueError, "output"),
]


@pytest.mark.parametrize("call,error,expected", [c[1:] for c in API_BAD_INPUT], ids=[c[0] for c in API_BAD_INPUT])
def test_causal_flow_bad_input_names_the_argument(bad_world, call, error, expected) -> None:
    check_api_refuses(bad_world, call, error, expected)
