"""Autoregressive flows (StrAF, ARF, GNF): structure, change of variables, inverse, passes, save/load, graphs."""
from __future__ import annotations

import inspect
import math
import re

import networkx as nx
import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

import strnn_fast
from strnn_fast.flows import ARF, GNF, AutoregressiveFlow, StrAF
from strnn_fast.graph import depth, transitive_closure

from _shake import shake
from _trust_world import A3, check_api_refuses, small_flow

# Not in topological order: 0 <- 2 <- 3 -> 1, and 4 <- 0 (depth 3, two roots: 3 and none else).
UNSORTED = np.zeros((5, 5), dtype=int)
UNSORTED[0, 2] = UNSORTED[2, 3] = UNSORTED[1, 3] = UNSORTED[4, 0] = 1
# Sorted, bipartite: 0, 1 -> 2, 3 (depth 1).
BIPARTITE = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0]])
UMNN = {"normalizer": "umnn", "embedding_size": 3, "integrand_hidden": (8,), "tol": 1e-10}
SPLINE = {"normalizer": "spline", "bins": 5, "bound": 3.0}

FLOWS = {
    "straf-affine": lambda A: StrAF(A, hidden_sizes=(12,), flow_steps=2),
    "straf-umnn": lambda A: StrAF(A, hidden_sizes=(12,), flow_steps=2, **UMNN),
    "straf-spline": lambda A: StrAF(A, hidden_sizes=(12,), flow_steps=2, **SPLINE),
    "straf-laplace": lambda A: StrAF(A, hidden_sizes=(12,), flow_steps=2, prior="laplace"),
    "arf": lambda A: ARF(A, hidden_sizes=(12,), flow_steps=2),
    "arf-permute": lambda A: ARF(A, hidden_sizes=(12,), flow_steps=3, permute=True),
    "arf-umnn": lambda A: ARF(A, hidden_sizes=(12,), flow_steps=2, **UMNN),
    "arf-permute-spline": lambda A: ARF(A, hidden_sizes=(12,), flow_steps=3, permute=True, **SPLINE),
    "gnf-affine": lambda A: GNF(A, hidden_sizes=(12,), flow_steps=2),
    "gnf-umnn": lambda A: GNF(A, hidden_sizes=(12,), flow_steps=2, **UMNN),
    "gnf-spline": lambda A: GNF(A, hidden_sizes=(12,), flow_steps=2, **SPLINE),
}


def build(name: str, A: np.ndarray, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    flow = FLOWS[name](A).double()
    return perturb(flow)


def perturb(flow):
    return shake(flow)


def forward_jacobian(flow, x: torch.Tensor) -> torch.Tensor:
    return jacobian(lambda v: flow.transform(v[None])[0][0], x)


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.parametrize("A", [UNSORTED, BIPARTITE], ids=["unsorted", "bipartite"])
def test_jacobian_vanishes_outside_closure(name: str, A: np.ndarray) -> None:
    flow = build(name, A)
    if name.startswith(("straf", "gnf")):
        assert np.array_equal(flow.structure, A.astype(bool))
    else:  # ARF reads at least the graph's parents: its order is a topological one
        assert (flow.structure | ~A.astype(bool)).all()
    allowed = transitive_closure(flow.structure) | np.eye(len(A), dtype=bool)
    for x in torch.randn(3, len(A), dtype=torch.float64):
        J = forward_jacobian(flow, x).numpy()
        assert np.abs(J[~allowed]).max(initial=0.0) == 0.0
        assert (J[allowed & ~np.eye(len(A), dtype=bool)] != 0).any()
        if "permute" not in name:  # triangular in the internal order: the diagonal is the slope
            assert (np.diagonal(J) > 0).all()


@pytest.mark.parametrize("name", FLOWS)
def test_log_prob_is_change_of_variables(name: str) -> None:
    flow = build(name, UNSORTED)
    x = torch.randn(4, 5, dtype=torch.float64)
    z, log_det = flow.transform(x)
    for i in range(len(x)):
        slogdet = torch.linalg.slogdet(forward_jacobian(flow, x[i]))
        assert slogdet.sign == 1
        assert float(log_det[i].detach()) == pytest.approx(float(slogdet.logabsdet), abs=1e-8)
    if "laplace" in name:
        prior = torch.distributions.Laplace(torch.zeros(()), torch.ones(())).log_prob(z).sum(-1)
    else:
        prior = torch.distributions.Normal(torch.zeros(()), torch.ones(())).log_prob(z).sum(-1)
    assert torch.allclose(flow.log_prob(x), prior + log_det, atol=1e-12)


@pytest.mark.parametrize("name", FLOWS)
def test_inverse_of_transform(name: str) -> None:
    flow = build(name, UNSORTED)
    x = 2 * torch.randn(64, 5, dtype=torch.float64)
    z, _ = flow.transform(x)
    # UMNN solves each variable to tol (1e-10) per pass; composing 2 steps of Lipschitz maps
    # keeps the error within a small multiple of it.
    tol = 1e-6 if "umnn" not in name else 1e-8
    assert (flow.inverse(z) - x).abs().max() < tol
    if "umnn" not in name:  # a UMNN solve is exact in x only (prior draws can land at |x| ~ 1e6)
        z2 = torch.randn(64, 5, dtype=torch.float64)
        assert (flow.transform(flow.inverse(z2))[0] - z2).abs().max() < 1e-6


def full_passes(flow, on: bool) -> None:
    for step in flow.steps:
        step.early_stop = not on


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.parametrize("A", [UNSORTED, BIPARTITE], ids=["unsorted", "bipartite"])
def test_sampling_uses_depth_plus_one_passes(name: str, A: np.ndarray) -> None:
    flow = build(name, A)
    full_passes(flow, True)
    flow.reset_passes()
    flow.sample((3, 2))
    expected = depth(A) + 1 if not name.startswith("arf") else len(A)
    assert flow.passes == [expected] * len(flow.steps)


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.parametrize("perturbed", [True, False], ids=["perturbed", "zero-init"])
def test_early_stop_equals_all_passes_bitwise(name: str, perturbed: bool) -> None:
    torch.manual_seed(0)
    flow = (build(name, UNSORTED) if perturbed else FLOWS[name](UNSORTED).double())
    limit = depth(UNSORTED) + 1 if not name.startswith("arf") else len(UNSORTED)
    z = 2 * torch.randn(64, 5, dtype=torch.float64)
    full_passes(flow, True)
    flow.reset_passes()
    full = flow.inverse(z)
    assert flow.passes == [limit] * len(flow.steps)
    full_passes(flow, False)
    flow.reset_passes()
    early = flow.inverse(z)
    assert torch.equal(early, full)
    assert all(p <= limit for p in flow.passes)
    if not perturbed:  # zero conditioners: one pass gives x, a second confirms it
        assert flow.passes == [2] * len(flow.steps)


def test_early_stop_ends_where_the_conditioner_stops_reading_far_ancestors() -> None:
    # A chain 0 -> 1 -> 2 -> 3 -> 4 (depth 4: 5 passes). With the parameters of variables 1 and 4
    # made constant, the longest chain that acts is 1 -> 2 -> 3: x is exact after 3 passes, the
    # 4th confirms it, and the answer is still the full inverse bit for bit.
    chain = np.diag(np.ones(4, dtype=int), -1)
    torch.manual_seed(2)
    flow = perturb(StrAF(chain, hidden_sizes=(12,), flow_steps=1).double())
    z = torch.randn(32, 5, dtype=torch.float64)
    full_passes(flow, True)
    with torch.no_grad():
        last = flow.steps[0].conditioner.net.layers[-1]
        for p in range(2):
            last.weight[p * 5 + 1].zero_()
            last.weight[p * 5 + 4].zero_()
    full = flow.inverse(z)
    full_passes(flow, False)
    flow.reset_passes()
    assert torch.equal(flow.inverse(z), full)
    assert flow.passes == [4]


@pytest.mark.parametrize("name", ["straf-affine", "straf-spline", "gnf-umnn"])
def test_ending_one_pass_early_would_be_wrong(name: str) -> None:
    # What the bitwise equalities above guard against: with conditioners that read every ancestor,
    # the early-ending inverse needs all depth + 1 passes, and a step cut one pass short is wrong.
    flow = build(name, UNSORTED)
    z = torch.randn(64, 5, dtype=torch.float64)
    flow.reset_passes()
    full = flow.inverse(z)
    assert flow.passes == [depth(UNSORTED) + 1] * len(flow.steps)
    for step in flow.steps:
        step.n_passes -= 1
    assert (flow.inverse(z) - full).abs().max() > 1e-3


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["straf-affine", "straf-spline", "arf-permute-spline"])
def test_cuda_sampling_has_no_host_sync_and_runs_all_passes(name: str) -> None:
    # On CUDA the fixed-point check would synchronize every pass: it is skipped there, and each
    # step runs exactly depth + 1 passes without one host synchronization.
    flow = build(name, UNSORTED).cuda()
    z = torch.randn(64, 5, dtype=torch.float64, device="cuda")
    flow.reset_passes()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            x = flow.inverse(z)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    limit = depth(UNSORTED) + 1 if not name.startswith("arf") else len(UNSORTED)
    assert flow.passes == [limit] * len(flow.steps)
    assert (flow.transform(x)[0] - z).abs().max() < 1e-6


@pytest.mark.parametrize("name", ["straf-affine", "straf-umnn", "arf-umnn"])
def test_rsample_is_differentiable_and_inverse_jacobian_is_exact(name: str) -> None:
    flow = build(name, UNSORTED)
    flow.rsample(8).square().sum().backward()
    grads = [p.grad for p in flow.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # d inverse / dz must be the inverse of d transform / dx (the implicit gradient of the solver).
    x = torch.randn(5, dtype=torch.float64)
    z = flow.transform(x[None])[0][0].detach()
    J_inv = jacobian(lambda v: flow.inverse(v[None])[0], z)
    assert torch.allclose(J_inv @ forward_jacobian(flow, x), torch.eye(5, dtype=torch.float64), atol=1e-7)


@pytest.mark.parametrize("name", FLOWS)
def test_save_load_round_trip(name: str, tmp_path) -> None:
    flow = build(name, UNSORTED).float()  # load() rebuilds in the default dtype
    path = tmp_path / "flow.pt"
    flow.save(path)
    loaded = strnn_fast.load(path)
    assert type(loaded) is type(flow) and loaded.names == flow.names and loaded.config == flow.config
    x = torch.randn(32, 5)
    assert torch.equal(loaded.log_prob(x), flow.log_prob(x))
    torch.manual_seed(1)
    a = flow.sample(4)
    torch.manual_seed(1)
    assert torch.equal(loaded.sample(4), a)


@pytest.mark.parametrize("cls", [ARF, GNF])
def test_flows_from_a_variable_count(cls, tmp_path) -> None:
    flow = cls(4, (8,), 2, names=["a", "b", "c", "d"])
    assert flow.names == ["a", "b", "c", "d"] and flow.config["adjacency"] == 4
    flow.save(tmp_path / "f.pt")
    x = torch.randn(3, 4)
    assert torch.equal(strnn_fast.load(tmp_path / "f.pt").log_prob(x), flow.log_prob(x))
    with pytest.raises(ValueError, match="names"):
        cls(4, (8,), 1, names=["a"])


def test_families_list_and_document_every_argument() -> None:
    # One shared constructor; each family's own options join its signature after activation, and
    # its help text (the shared paragraph filled in) names every argument of that signature.
    shared = ["adjacency", "hidden_sizes", "flow_steps", "normalizer", "names", "prior", "activation"]
    tail = ["context_features", "context_adjacency", "context_names", "normalizer_options"]
    own = {StrAF: ["opt_type", "opt_args", "backend", "init"], ARF: ["permute", "backend", "init"],
           GNF: ["hot_encoding"]}
    for family, options in own.items():
        assert list(inspect.signature(family).parameters) == shared + options + tail
        assert "{common_arguments}" not in family.__doc__
        missing = [n for n in inspect.signature(family).parameters if not re.search(rf"\b{n}\b", family.__doc__)]
        assert not missing, f"{family.__name__}'s docstring does not describe {missing}"
    with pytest.raises(NotImplementedError, match="StrAF, ARF or GNF"):
        AutoregressiveFlow(3)

    class Narrow(StrAF):  # a subclass of a family keeps its signature and recorded arguments
        pass

    flow = Narrow([("a", "b")], (4,), 1, opt_type="zuko")
    assert inspect.signature(Narrow) == inspect.signature(StrAF)
    assert flow.config["opt_type"] == "zuko" and flow.config["init"] == "kaiming"


def test_graph_forms_agree_and_answers_are_in_user_order() -> None:
    edges = [("rain", "wet"), ("sprinkler", "wet"), ("wet", "slippery")]
    names = ["slippery", "wet", "rain", "sprinkler"]  # children first: not a topological order
    A = np.zeros((4, 4), dtype=int)
    A[1, 2] = A[1, 3] = A[0, 1] = 1
    flows = [StrAF(A, (32,), 2, names=names), StrAF(edges, (32,), 2, names=names)]
    G = nx.DiGraph(edges)
    flows.append(StrAF(G, (32,), 2, names=names))
    for flow in flows:
        assert flow.names == names and np.array_equal(flow.adjacency, A.astype(bool))
    # The root 'rain' (column 2) maps to a latent that depends on it alone.
    torch.manual_seed(0)
    flow = perturb(flows[0].double())
    J = forward_jacobian(flow, torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64))
    assert (J[2] != 0).tolist() == [False, False, True, False]
    assert (J[0] != 0).all()  # two steps: 'slippery' reads every variable through 'wet'


def test_cycle_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="cycle a -> b -> c -> a|cycle b -> c -> a -> b|cycle c -> a -> b -> c"):
        StrAF([("a", "b"), ("b", "c"), ("c", "a")], (8,), 1)
    with pytest.raises(ValueError, match="cycle"):
        GNF(np.array([[0, 1], [1, 0]]), (8,), 1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"normalizer": "splines"}, ValueError, "normalizer"),
        ({"normalizer": "spline", "bins": 0}, ValueError, "bins"),
        ({"context_adjacency": [[1]] * 5}, ValueError, "context_adjacency"),
        ({"context_features": 2, "context_adjacency": [[1]] * 5}, ValueError, "context_adjacency"),
        ({"context_features": -1}, ValueError, "context_features"),
        ({"prior": "cauchy"}, ValueError, "prior"),
        ({"embedding_size": 3}, TypeError, "embedding_size"),
        ({"normalizer": "umnn", "tol": -1.0}, ValueError, "tol"),
        ({"scale_bound": 0.0}, ValueError, "scale_bound"),
        ({"flow_steps": 0}, ValueError, "flow_steps"),
        ({"hidden_sizes": (1,)}, ValueError, "hidden_sizes"),
    ],
)
def test_bad_options(kwargs: dict, error: type, match: str) -> None:
    options = {"hidden_sizes": (8,), "flow_steps": 1, **kwargs}
    with pytest.raises(error, match=match):
        StrAF(UNSORTED, **options)


def test_bad_inputs() -> None:
    flow = StrAF(UNSORTED, (8,), 1)
    with pytest.raises(ValueError, match="no edges"):
        StrAF(np.zeros((3, 3)), (8,), 1)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 5\)"):
        flow.transform(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        flow.log_prob(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="z must have shape"):
        flow.inverse(torch.zeros(5))
    with pytest.raises(ValueError, match="sample_shape"):
        flow.sample((-1,))


def test_distribution_shapes() -> None:
    flow = StrAF(UNSORTED, (8,), 1)
    assert flow.event_shape == torch.Size([5]) and flow.batch_shape == torch.Size()
    assert flow.sample().shape == (5,)
    assert flow.sample((2, 3)).shape == (2, 3, 5)
    x = torch.randn(2, 3, 5)
    assert torch.allclose(flow.log_prob(x), flow.log_prob(x.reshape(6, 5)).reshape(2, 3))
    assert flow.log_prob(torch.zeros(5, dtype=torch.int64)).dtype == torch.float32


@pytest.mark.parametrize("prior, mean_abs", [("normal", math.sqrt(2 / math.pi)), ("laplace", 1.0)])
def test_priors_are_normalized_and_sample_their_law(prior: str, mean_abs: float) -> None:
    flow = StrAF([[0, 0], [1, 0]], (4,), 1, prior=prior).double()
    grid = torch.linspace(-40, 40, 400001, dtype=torch.float64)[:, None]
    density = flow.prior.log_prob(grid).exp()
    assert float(torch.trapezoid(density[:, 0] if density.ndim > 1 else density, grid[:, 0])) == pytest.approx(1.0, abs=1e-6)
    torch.manual_seed(0)
    z = flow.sample_latent(200_000)
    assert z.dtype == torch.float64 and torch.isfinite(z).all()
    assert float(z.abs().mean()) == pytest.approx(mean_abs, abs=0.01)


@pytest.mark.slow
def test_straf_beats_arf_on_multimodal_data_with_few_samples() -> None:
    from strnn_fast.data import make_multimodal
    from strnn_fast.train import evaluate_nll, fit

    data = make_multimodal(n=500, seed=0)  # d=15, 300 training rows
    nll = {}
    for name, cls in [("straf", StrAF), ("arf", ARF)]:
        torch.manual_seed(0)
        flow = cls(data.adjacency, hidden_sizes=(64, 64), flow_steps=5)
        fit(flow, data.train, data.val, epochs=150, batch_size=256, lr=1e-3, patience=10, seed=0, verbose=False)
        nll[name] = evaluate_nll(flow, data.test)
    assert nll["straf"] < nll["arf"], nll


# (id, callable(world), exception type, text the message must contain)
API_BAD_INPUT = [
    ("flow-cycle", lambda w: StrAF([[0, 1], [1, 0]], hidden_sizes=(4,)), ValueError, "cycle"),
    ("flow-hidden", lambda w: StrAF(A3, hidden_sizes=(-1,)), ValueError, "hidden_sizes"),
    ("flow-steps", lambda w: StrAF(A3, hidden_sizes=(4,), flow_steps=0), ValueError, "flow_steps"),
    ("flow-logprob-numpy", lambda w: small_flow().log_prob(np.zeros((2, 3))), TypeError, "x"),
    ("flow-logprob-width", lambda w: small_flow().log_prob(torch.zeros(2, 4)), ValueError, "x"),
    ("flow-sample-str", lambda w: small_flow().sample("12"), TypeError, "sample_shape"),
    ("flow-sample-negative", lambda w: small_flow().sample(-1), ValueError, "sample_shape"),
    ("flow-sample-float", lambda w: small_flow().sample(2.5), TypeError, "sample_shape"),
]


@pytest.mark.parametrize("call,error,expected", [c[1:] for c in API_BAD_INPUT], ids=[c[0] for c in API_BAD_INPUT])
def test_flow_bad_input_names_the_argument(bad_world, call, error, expected) -> None:
    check_api_refuses(bad_world, call, error, expected)


def test_flow_sample_shape_types() -> None:
    flow = StrAF(A3, hidden_sizes=(6,), flow_steps=1)
    with pytest.raises(TypeError, match="sample_shape"):
        flow.sample("12")
    assert flow.sample(np.int64(3)).shape == (3, 3)
    assert flow.sample((2, np.int32(2))).shape == (2, 2, 3)
    with pytest.raises(TypeError, match="sample_shape"):
        flow.sample(2.0)


@pytest.mark.parametrize("backend", ["dense", "sparse", "cpu", "auto"])
@pytest.mark.parametrize("normalizer", ["affine", "spline"])
def test_every_step_starts_as_the_identity_packed_or_not(backend: str, normalizer: str) -> None:
    # The conditioners' last layer starts at zero, so the untrained flow is the identity on every
    # backend. A packed layer ("sparse", "cpu", and "auto" at this size) stores its weights as CSR
    # values; zeroing the dense weight view it hands out left those random before the fix.
    from strnn_fast.data.adjacency import random_dag

    A = random_dag(50, parents=(1, 4), seed=50)
    torch.manual_seed(0)
    flow = StrAF(A, hidden_sizes=(64, 64), flow_steps=3, normalizer=normalizer, backend=backend)
    last = [step.conditioner.net.layers[-1] for step in flow.steps]
    assert all(layer.packed for layer in last) == (backend != "dense")
    x = torch.randn(64, 50)
    for step in flow.steps:
        assert not step.conditioner(x).any()
    z, log_det = flow.transform(x)
    torch.testing.assert_close(z, x, atol=1e-6, rtol=0)
    assert log_det.abs().max() < 1e-4


def test_state_dicts_of_packed_flows_with_random_last_layers_still_load() -> None:
    # Files saved before the zero start of packed layers hold nonzero last layers (random ones if
    # saved untrained); they load into a new (zero-started) flow and give the same density.
    from strnn_fast.data.adjacency import random_dag

    A = random_dag(50, parents=(1, 4), seed=50)
    torch.manual_seed(0)
    old = StrAF(A, hidden_sizes=(64, 64), flow_steps=2, normalizer="spline", backend="sparse")
    for step in old.steps:
        step.conditioner.net.layers[-1].reset_parameters()  # the state a packed layer had before the fix
    x = torch.randn(32, 50)
    assert not torch.equal(old.transform(x)[0], x)
    new = StrAF(A, hidden_sizes=(64, 64), flow_steps=2, normalizer="spline", backend="sparse")
    new.load_state_dict(old.state_dict())
    assert torch.equal(new.log_prob(x), old.log_prob(x))
