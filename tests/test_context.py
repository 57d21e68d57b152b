"""Conditional flows p(x | c): Jacobian structure in x and c, inverse, broadcasting, save/load, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian
from tolerances import tolerance

import strnn_fast

from strnn_fast.flows import ARF, GNF, StrAF
from strnn_fast.graph import transitive_closure

from _shake import shake

# Not in topological order: 0 <- 2 <- 3 -> 1, and 4 <- 0.
A = np.zeros((5, 5), dtype=int)
A[0, 2] = A[2, 3] = A[1, 3] = A[4, 0] = 1
# Context feature 0 is read by variable 2 only (so by 0, 2, 4 through the graph, never by 1 or 3);
# feature 1 by variable 1 only; feature 2 by nothing at all.
AC = np.zeros((5, 3), dtype=int)
AC[2, 0] = AC[1, 1] = 1
UMNN = {"normalizer": "umnn", "embedding_size": 3, "integrand_hidden": (8,), "tol": 1e-10}
SPLINE = {"normalizer": "spline", "bins": 4, "bound": 3.0}
CTX = {"context_features": 3, "context_adjacency": AC}

FLOWS = {
    "straf-affine": lambda: StrAF(A, hidden_sizes=(16,), flow_steps=3, **CTX),
    "straf-spline": lambda: StrAF(A, hidden_sizes=(16,), flow_steps=3, **SPLINE, **CTX),
    "straf-umnn": lambda: StrAF(A, hidden_sizes=(16,), flow_steps=3, **UMNN, **CTX),
    "arf": lambda: ARF(A, hidden_sizes=(16,), flow_steps=3, **CTX),
    "arf-permute-spline": lambda: ARF(A, hidden_sizes=(16,), flow_steps=3, permute=True, **SPLINE, **CTX),
    "gnf": lambda: GNF(A, hidden_sizes=(16,), flow_steps=3, **CTX),
    "gnf-spline": lambda: GNF(A, hidden_sizes=(16,), flow_steps=3, **SPLINE, **CTX),
}


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return shake(FLOWS[name]().double())


def allowed(flow) -> tuple[np.ndarray, np.ndarray]:
    closure = transitive_closure(flow.structure) | np.eye(flow.d, dtype=bool)
    return closure, (closure.astype(int) @ flow.context_structure.astype(int)) > 0


def jacobians(flow, x: torch.Tensor, c: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    Jx, Jc = jacobian(lambda u, v: flow.transform(u[None], v[None])[0][0], (x, c))
    return Jx.numpy(), Jc.numpy()


@pytest.mark.parametrize("name", FLOWS)
def test_jacobian_in_x_and_c_vanishes_exactly_where_the_structure_says(name: str) -> None:
    flow = build(name)
    assert np.array_equal(flow.context_structure, AC.astype(bool))
    closure, ctx = allowed(flow)
    assert not ctx[:, 2].any()
    if not name.startswith("arf"):  # the example's premise (ARF's triangles reach further)
        assert not ctx[1, 0] and not ctx[3, 0] and ctx[0, 0] and ctx[4, 0]
    seen_x, seen_c = np.zeros_like(closure), np.zeros_like(ctx)
    for x, c in zip(torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)):
        Jx, Jc = jacobians(flow, x, c)
        assert np.abs(Jx[~closure]).max(initial=0.0) == 0.0
        assert np.abs(Jc[~ctx]).max(initial=0.0) == 0.0
        seen_x |= Jx != 0
        seen_c |= Jc != 0
    # The test can fail: every direct edge and context edge acts (longer paths may be cut off by
    # ReLUs that are dead at these points).
    assert seen_x[flow.structure | np.eye(5, dtype=bool)].all()
    assert seen_c[flow.context_structure].all()
    if name == "straf-affine":  # three steps realize every path of the graph (its depth is 3)
        assert np.array_equal(seen_x, closure) and np.array_equal(seen_c, ctx)


@pytest.mark.parametrize("name", FLOWS)
def test_conditional_change_of_variables_and_inverse(name: str) -> None:
    # Seed 0's UMNN draw has a nearly flat integrand (samples beyond 1e6, outside UMNN's range).
    flow = build(name, seed=1 if "umnn" in name else 0)
    x, c = 2 * torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    z, log_det = flow.transform(x, c)
    for i in range(len(x)):
        Jx, _ = jacobians(flow, x[i], c[i])
        assert float(log_det[i].detach()) == pytest.approx(float(np.linalg.slogdet(Jx)[1]), abs=1e-8)
    tol = 1e-8 if "umnn" in name else 1e-9
    assert (flow.inverse(z, c) - x).abs().max() < tol
    # A different context gives a different latent (the context is used) ...
    assert (flow.transform(x, c + 1)[0] - z).abs().max() > 1e-3
    # ... and the sampler inverts with the same context, one per sample.
    torch.manual_seed(3)
    xs = flow.sample(6, context=c)
    torch.manual_seed(3)
    zs = flow.sample_latent(6)
    # UMNN's quadrature holds for |x| up to a few tens (its docstring); these shaken conditioners
    # send some latents to 1e6 and beyond, where z = T(x) is flat, so only rows in range count.
    keep = xs.abs().amax(1) < 30 if "umnn" in name else torch.ones(len(xs), dtype=torch.bool)
    assert keep.any()
    torch.testing.assert_close(flow.transform(xs[keep], c[keep])[0], zs[keep], atol=1e-8, rtol=0)


def test_context_broadcasting_shapes() -> None:
    flow = build("straf-spline")
    c1 = torch.randn(3, dtype=torch.float64)
    assert flow.sample(4, context=c1).shape == (4, 5)  # one context shared by all samples
    assert flow.sample((2, 4), context=torch.randn(4, 3, dtype=torch.float64)).shape == (2, 4, 5)
    assert flow.sample((), context=torch.randn(7, 3, dtype=torch.float64)).shape == (7, 5)
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    assert flow.log_prob(x, torch.randn(4, 3, dtype=torch.float64)).shape == (2, 4)
    assert flow.log_prob(x[0, 0], torch.randn(6, 3, dtype=torch.float64)).shape == (6,)
    # A broadcast context is the same as the context repeated.
    lp = flow.log_prob(x[0], c1)
    torch.testing.assert_close(lp, flow.log_prob(x[0], c1.expand(4, 3)), **tolerance("exact"))
    # transform/inverse take (B, C) rows or one (C,) context.
    z, _ = flow.transform(x[0], c1)
    torch.testing.assert_close(flow.inverse(z, c1), x[0], atol=1e-9, rtol=0)


def test_context_errors_name_the_argument() -> None:
    flow = build("straf-affine")
    x = torch.randn(4, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="context is required"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match="context must have shape"):
        flow.transform(x, torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="context must have shape"):
        flow.log_prob(x, torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="does not broadcast"):
        flow.log_prob(x, torch.randn(3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="context must be a torch.Tensor"):
        flow.sample(2, context=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="context must be None"):
        StrAF(A, (8,), 1).log_prob(torch.randn(2, 5), torch.randn(2, 3))
    with pytest.raises(ValueError, match="context_adjacency"):
        StrAF(A, (8,), 1, context_features=2, context_adjacency=np.ones((5, 3)))
    with pytest.raises(ValueError, match="context_adjacency"):
        StrAF(A, (8,), 1, context_features=2, context_adjacency=np.full((5, 2), 2))
    with pytest.raises(ValueError, match="context_names"):
        StrAF(A, (8,), 1, context_features=2, context_names=["a"])


def test_edgeless_graph_with_context_is_a_conditional_flow() -> None:
    flow = StrAF(np.zeros((3, 3)), (8,), 1, context_features=2)
    assert flow.log_prob(torch.randn(4, 3), torch.randn(4, 2)).shape == (4,)


@pytest.mark.parametrize("name", ["straf-spline", "arf-permute-spline", "gnf"])
def test_save_load_round_trip_with_context(name: str, tmp_path) -> None:
    flow = build(name).float()
    flow.context_names = None
    path = tmp_path / "flow.pt"
    flow.save(path)
    loaded = strnn_fast.load(path)
    assert loaded.config == flow.config and np.array_equal(loaded.context_structure, flow.context_structure)
    x, c = torch.randn(8, 5), torch.randn(8, 3)
    assert torch.equal(loaded.log_prob(x, c), flow.log_prob(x, c))


def test_cnf_jacobian_structure_with_context() -> None:
    pytest.importorskip("torchdiffeq")
    from strnn_fast.flows import StrCNF

    torch.manual_seed(0)
    flow = StrCNF(A, hidden_sizes=(16,), solver="rk4", step_size=0.25, **CTX).double()
    shake(flow, only=None)
    closure, ctx = flow.jacobian_pattern, flow.context_jacobian_pattern
    assert not ctx[1, 0] and not ctx[3, 0] and ctx[0, 0] and ctx[1, 1] and not ctx[:, 2].any()
    seen = np.zeros_like(ctx)
    for x, c in zip(torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)):
        Jx, Jc = jacobians(flow, x, c)
        assert np.abs(Jx[~closure]).max(initial=0.0) == 0.0
        assert np.abs(Jc[~ctx]).max(initial=0.0) == 0.0
        seen |= Jc != 0
    assert np.array_equal(seen, ctx)
    z, _ = flow.transform(x[None], c[None])
    assert (flow.inverse(z, c[None]) - x).abs().max() < 1e-3  # rk4 forward and back, not exact


def test_fit_with_context_learns_the_conditional() -> None:
    from strnn_fast.train import evaluate_nll, fit

    # x = 2 c + noise: knowing c shrinks the NLL far below the marginal's.
    g = torch.Generator().manual_seed(0)
    c = torch.randn(600, 1, generator=g)
    x = torch.cat([2 * c + 0.3 * torch.randn(600, 1, generator=g), torch.randn(600, 1, generator=g)], dim=1)
    torch.manual_seed(0)
    flow = StrAF([[0, 0], [1, 0]], (16,), 2, context_features=1, normalizer="spline")
    before = evaluate_nll(flow, x[400:], context=c[400:])
    history = fit(flow, x[:400], x[400:], context=c[:400], val_context=c[400:], epochs=40, lr=1e-2,
                  verbose=False)
    after = evaluate_nll(flow, x[400:], context=c[400:])
    assert after == pytest.approx(history.best_val_nll, abs=1e-9)
    assert after < before - 0.8  # the marginal of x_0 has variance 4.09; the conditional 0.09
    with pytest.raises(ValueError, match="val_context is required"):
        fit(flow, x[:400], x[400:], context=c[:400], epochs=1, verbose=False)
    with pytest.raises(ValueError, match="val_context needs context"):
        fit(flow, x[:400], x[400:], val_context=c[400:], epochs=1, verbose=False)
    with pytest.raises(ValueError, match="context has 3 rows"):
        fit(flow, x[:400], context=c[:3], epochs=1, verbose=False)


@pytest.mark.parametrize("data_type", ["binary", "gaussian"])
def test_density_estimator_with_context_respects_both_adjacencies(data_type: str) -> None:
    from strnn_fast.density import StrNNDensityEstimator

    torch.manual_seed(0)
    model = StrNNDensityEstimator(A, (32,), data_type=data_type, context_features=3, context_adjacency=AC).double()
    shake(model, only=None)
    x, c = torch.randn(5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    # Each raw output (logit, mean, log-std of variable i) reads exactly i's parents and context row.
    Jx, Jc = jacobian(lambda u, v: model(u[None], v[None])[0], (x, c))
    k = 1 if data_type == "binary" else 2
    assert np.array_equal(Jx.numpy() != 0, np.tile(A.astype(bool), (k, 1)))
    assert np.array_equal(Jc.numpy() != 0, np.tile(AC.astype(bool), (k, 1)))
    xs = model.sample(6, context=c)
    assert xs.shape == (6, 5) and model.log_prob(xs, c).shape == (6,)
    with pytest.raises(ValueError, match="context is required"):
        model.log_prob(xs)
    # Context names are kept (the command line matches --context columns to them) and checked.
    named = StrNNDensityEstimator(A, (8,), context_features=3, context_names=("u", "v", "w"))
    assert named.context_names == ["u", "v", "w"] and named.config["context_names"] == ["u", "v", "w"]
    with pytest.raises(ValueError, match="context_names"):
        StrNNDensityEstimator(A, (8,), context_features=3, context_names=["u"])


def test_causal_flow_with_a_covariate(tmp_path) -> None:
    from strnn_fast.causal import CausalFlow

    # c -> x0 -> x1 with x0 = 3 + c + noise, x1 = 2 x0 + noise; c is a covariate, never intervened.
    g = torch.Generator().manual_seed(0)
    c = 5 + 2 * torch.randn(1500, 1, generator=g)
    x0 = 3 + c + 0.3 * torch.randn(1500, 1, generator=g)
    x = torch.cat([x0, 2 * x0 + 0.3 * torch.randn(1500, 1, generator=g)], dim=1)
    torch.manual_seed(0)
    model = CausalFlow([("a", "b")], hidden_sizes=(16,), flow_steps=2, normalizer="spline",
                       context_features=1, context_adjacency=[[1], [0]])
    model.fit(x, context=c, epochs=60, lr=1e-2, verbose=False)
    # Observational: x0 | c = 7 is about 10; interventional: x1 | do(x0 = 9) is about 18 whatever c.
    obs = model.sample(4000, seed=0, context=torch.tensor([7.0]), output="tensor")
    assert obs[:, 0].mean().item() == pytest.approx(10.0, abs=0.4)
    # Covariate values inside the data's support: at c = 3, a = 9 lies 10 noise sds from any
    # training row and the answer is pure extrapolation (18.1-19.3 over seeds).
    for cv in (5.0, 7.0):
        mean = model.interventional_mean({"a": 9.0}, 4000, seed=1, context=torch.tensor([cv]))
        assert mean["a"] == 9.0 and mean["b"] == pytest.approx(18.0, abs=0.6)
    # Counterfactual with the observed covariates: b follows a, c stays as observed.
    cf = model.counterfactual(x[:5], {"a": x[:5, 0] + 1.0}, context=c[:5], output="tensor")
    assert torch.allclose(cf[:, 1] - x[:5, 1], torch.full((5,), 2.0), atol=0.5)
    assert model.log_prob(x[:3], c[:3]).shape == (3,)
    path = tmp_path / "causal.pt"
    model.save(path)
    loaded = strnn_fast.load(path)
    assert torch.equal(loaded.log_prob(x[:20], c[:20]), model.log_prob(x[:20], c[:20]))
    with pytest.raises(ValueError, match="context is required"):
        model.sample(3)
    with pytest.raises(ValueError, match="context is required"):
        model.fit(x, epochs=1, verbose=False)
    with pytest.raises(ValueError, match="context must be None"):
        CausalFlow([("a", "b")], hidden_sizes=(4,), flow_steps=1).fit(x, context=c, epochs=1, verbose=False)


@pytest.mark.parametrize("model", ["straf", "gnf", "density"])
def test_cli_fit_and_sample_with_context(tmp_path, capsys, model: str) -> None:
    from strnn_fast.cli import main

    g = np.random.default_rng(0)
    age = g.normal(50, 10, size=(300, 1))
    a = 0.1 * age + g.normal(size=(300, 1))
    b = a + g.normal(size=(300, 1))
    data = tmp_path / "data.csv"
    np.savetxt(data, np.hstack([a, age, b]), delimiter=",", header="a,age,b", comments="")
    graph = tmp_path / "graph.csv"
    graph.write_text("parent,child\na,b\n")
    out = tmp_path / "m.pt"
    assert main(["fit", str(data), "-a", str(graph), "--model", model, "--normalizer", "spline", "--context", "age",
                 "--epochs", "2", "--hidden", "8", "--flow-steps", "1", "--quiet", "-o", str(out)]) == 0
    assert "test  NLL" in capsys.readouterr().out
    loaded = strnn_fast.load(out)
    assert loaded.names == ["a", "b"] and loaded.context_features == 1
    one = tmp_path / "one.csv"
    one.write_text("age\n70\n")
    samples = tmp_path / "s.csv"
    assert main(["sample", str(out), "--context", str(one), "-n", "7", "-o", str(samples)]) == 0
    assert samples.read_text().splitlines()[0] == '"a","b"' and len(samples.read_text().splitlines()) == 8
    per_row = tmp_path / "rows.npy"
    np.save(per_row, np.linspace(30, 70, 5)[:, None])
    assert main(["sample", str(out), "--context", str(per_row), "-o", str(samples), "--force"]) == 0
    assert len(samples.read_text().splitlines()) == 6
    assert main(["sample", str(out), "-n", "3", "-o", str(samples), "--force"]) != 0
    assert "--context" in capsys.readouterr().err
    assert main(["fit", str(data), "-a", str(graph), "--context", "height", "-o", str(tmp_path / "x.pt")]) != 0
    assert "height" in capsys.readouterr().err
