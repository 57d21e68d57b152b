"""StrCNF / FFJORD: structure of the dynamics, divergence, change of variables, solvers, persistence.

Fast by default: d <= 5, small networks, loose solver tolerances; float64 where values are compared
against a reference. The NLL comparison with FFJORD on the multimodal data is marked slow.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import jacrev, vmap
from tolerances import tolerance

from strnn_fast import load
from strnn_fast.flows import FFJORD, StrCNF
from strnn_fast.flows.cnf import ADAPTIVE_SOLVERS, FIXED_STEP_SOLVERS
from strnn_fast.data import random_dag
from strnn_fast.flows.odefunc import CNFDynamics, exact_divergence, hutchinson_divergence, probe_groups
from strnn_fast.graph import transitive_closure

CHAIN = np.eye(4, k=-1, dtype=bool)  # 0 -> 1 -> 2 -> 3
SPARSE = np.array([[0, 0, 0, 0, 0],
                   [1, 0, 0, 0, 0],
                   [0, 0, 0, 0, 0],
                   [0, 1, 1, 0, 0],
                   [1, 0, 0, 0, 0]], dtype=bool)
CYCLE = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=bool)  # 0 -> 1 -> 2 -> 0

# Most tolerances below follow the ODE solver's atol/rtol set in the same test (the integration
# error, problem-specific); pure float64 roundoff uses tests/tolerances.py.


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomized(module: torch.nn.Module) -> torch.nn.Module:
    """Draws random output layers: untrained CNFs are the identity, which would make most checks vacuous."""
    for m in module.modules():
        if isinstance(m, CNFDynamics):
            m.net.layers[-1].reset_parameters()
    return module


def _flow(A=CHAIN, dtype=torch.float64, **kw) -> StrCNF:
    kw.setdefault("hidden_sizes", (16, 16))
    kw.setdefault("atol", 1e-6)
    kw.setdefault("rtol", 1e-6)
    return _randomized(StrCNF(A, **kw)).to(dtype)


def _dynamics(A, hidden_sizes, **kw) -> CNFDynamics:
    return _randomized(CNFDynamics(A, hidden_sizes, **kw)).double()


def _jacobian(f, x: torch.Tensor) -> torch.Tensor:
    """Per-row Jacobians (B, d_out, d_in) of a row-wise map, by plain autograd."""
    return vmap(jacrev(lambda row: f(row.unsqueeze(0)).squeeze(0)))(x)


def _flow_jacobian(flow: StrCNF, x: torch.Tensor) -> torch.Tensor:
    """Per-row Jacobians of ``flow.transform``, one row per solve (adaptive steps couple a batch's rows)."""
    return torch.stack([torch.autograd.functional.jacobian(lambda r: flow.transform(r[None])[0][0], row)
                        for row in x])


def test_untrained_flow_is_the_identity():
    flow = StrCNF(SPARSE, hidden_sizes=(8,), time_conditioning=True).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    z, logdet = flow.transform(x)
    torch.testing.assert_close(z, x, **tolerance("float64"))
    assert torch.equal(logdet, torch.zeros(4, dtype=torch.float64))


# --- structure -------------------------------------------------------------------------------

@pytest.mark.parametrize("A", [CHAIN, SPARSE, CYCLE], ids=["chain", "sparse", "cycle"])
@pytest.mark.parametrize("time_conditioning", [False, True])
def test_dynamics_jacobian_zero_outside_A_plus_I(A, time_conditioning):
    dyn = _dynamics(A, (24, 24), time_conditioning=time_conditioning)
    x = torch.randn(6, A.shape[0], dtype=torch.float64)
    J = _jacobian(lambda z: dyn.velocity(torch.tensor(0.3, dtype=torch.float64), z), x)
    allowed = torch.from_numpy(A | np.eye(A.shape[0], dtype=bool))
    assert (J[:, ~allowed] == 0).all()
    # The structure is not vacuous: the diagonal and every edge carry a nonzero derivative.
    assert (J.abs().amax(0)[allowed] > 0).all()


def test_time_conditioning_reaches_every_output():
    dyn = _dynamics(SPARSE, (24,), time_conditioning=True)
    x = torch.randn(3, 5, dtype=torch.float64)
    t = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    dv_dt = torch.autograd.functional.jacobian(lambda s: dyn.velocity(s, x), t)  # (3, 5)
    assert (dv_dt.abs().amax(0) > 0).all()


def test_flow_jacobian_follows_transitive_closure():
    flow = _flow(SPARSE, hidden_sizes=(16,), solver="rk4", step_size=0.1)
    x = torch.randn(4, 5, dtype=torch.float64)
    pattern = torch.from_numpy(flow.jacobian_pattern)
    assert np.array_equal(flow.jacobian_pattern, transitive_closure(SPARSE) | np.eye(5, dtype=bool))
    J = _flow_jacobian(flow, x)
    assert (J[:, ~pattern] == 0).all()
    # 3 reaches 0 only through 1 (a path of length 2): the solve creates that dependence.
    assert J[:, 3, 0].abs().min() > 1e-6
    # Adaptive solvers choose steps from an error norm over all variables; the derivative of the
    # step size leaks entries outside the pattern, at the scale of the tolerance.
    flow.set_solver("dopri5", atol=1e-8, rtol=1e-8)
    J = _flow_jacobian(flow, x)
    assert J[:, ~pattern].abs().max() < 1e-6


# --- divergence --------------------------------------------------------------------------------

@pytest.mark.parametrize("A", [CHAIN, SPARSE, CYCLE, random_dag(12, parents=(1, 3), seed=1)],
                         ids=["chain", "sparse", "cycle", "dag12"])
@pytest.mark.parametrize("grouped", [False, True], ids=["identity", "groups"])
def test_exact_divergence_equals_trace_of_autograd_jacobian(A, grouped):
    dyn = _dynamics(A, (16, 16), time_conditioning=True)
    x = torch.randn(7, A.shape[0], dtype=torch.float64)
    t = torch.tensor(0.7, dtype=torch.float64)
    f = lambda z: dyn.velocity(t, z)  # noqa: E731
    out, div, fro = exact_divergence(f, x, dyn.probes if grouped else None)
    J = _jacobian(f, x)
    torch.testing.assert_close(out, f(x))
    torch.testing.assert_close(div, J.diagonal(dim1=1, dim2=2).sum(-1))
    torch.testing.assert_close(fro, J.pow(2).sum((1, 2)))


@settings(max_examples=40)
@given(st.integers(1, 12).flatmap(lambda d: st.lists(st.booleans(), min_size=d * d, max_size=d * d)))
def test_probe_groups_partition_rows_into_orthogonal_groups(cells):
    d = math.isqrt(len(cells))
    pattern = np.array(cells, dtype=bool).reshape(d, d) | np.eye(d, dtype=bool)
    groups = probe_groups(pattern)
    assert (groups.sum(0) == 1).all()
    for g in groups:
        rows = pattern[g].astype(int)
        assert (rows.sum(0) <= 1).all()  # no column shared by two rows of a group


def test_probe_groups_are_few_for_sparse_graphs():
    assert len(probe_groups(CHAIN | np.eye(4, dtype=bool))) == 2
    assert len(probe_groups(np.ones((6, 6), dtype=bool))) == 6
    A = random_dag(200, parents=(1, 3), seed=0)
    assert len(probe_groups(A | np.eye(200, dtype=bool))) < 20


def test_exact_divergence_is_differentiable_and_works_without_grad():
    dyn = _dynamics(CHAIN, (8,))
    x = torch.randn(3, 4, dtype=torch.float64)
    f = lambda z: dyn.velocity(torch.tensor(0.0), z)  # noqa: E731
    _, div, _ = exact_divergence(f, x)
    grads = torch.autograd.grad(div.sum(), list(dyn.net.parameters()), allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    with torch.no_grad():
        _, div_ng, _ = exact_divergence(f, x)
    torch.testing.assert_close(div_ng, div.detach())


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(noise):
    # Mean of 20000 probes within 5 standard errors (estimated from the same probes) of the trace.
    dyn = _dynamics(SPARSE, (16,), divergence="hutchinson", noise=noise)
    x = torch.randn(1, 5, dtype=torch.float64).expand(20000, 5)
    dyn.begin(x)
    f = lambda z: dyn.velocity(torch.tensor(0.0), z)  # noqa: E731
    with torch.no_grad():
        _, est, fro_est = hutchinson_divergence(f, x, dyn._noise)
        _, exact, fro = exact_divergence(f, x[:1])
    for sample, target in ((est, exact), (fro_est, fro)):
        se = sample.std() / math.sqrt(len(sample))
        assert abs(float(sample.mean() - target)) < 5 * float(se)
    if noise == "rademacher":
        assert set(dyn._noise.unique().tolist()) == {-1.0, 1.0}


def test_hutchinson_noise_is_fixed_within_a_solve():
    dyn = _dynamics(CHAIN, (8,), divergence="hutchinson")
    x = torch.randn(5, 4, dtype=torch.float64)
    dyn.begin(x)
    state = (x, x.new_zeros(5))
    first = dyn(torch.tensor(0.2), state)[1]
    assert torch.equal(first, dyn(torch.tensor(0.2), state)[1])
    dyn.begin(x)
    assert not torch.equal(first, dyn(torch.tensor(0.2), state)[1])


def test_default_divergence_switches_above_64_variables():
    assert StrCNF(np.zeros((64, 64)), hidden_sizes=(70,)).divergence == "exact"
    assert StrCNF(np.zeros((65, 65)), hidden_sizes=(70,)).divergence == "hutchinson"
    assert StrCNF(np.zeros((65, 65)), hidden_sizes=(70,), divergence="exact").divergence == "exact"


# --- change of variables, inverse, sampling ----------------------------------------------------

def test_log_abs_det_matches_autograd_determinant():
    flow = _flow(CYCLE, time_conditioning=True, atol=1e-9, rtol=1e-9)
    x = torch.randn(5, 3, dtype=torch.float64)
    _, logdet = flow.transform(x)
    J = _flow_jacobian(flow, x)
    torch.testing.assert_close(logdet, torch.linalg.slogdet(J)[1], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_log_prob_agrees_with_tight_reference_solve(divergence):
    flow = _flow(SPARSE, flow_steps=2, divergence=divergence, atol=1e-5, rtol=1e-5)
    x = torch.randn(32, 5, dtype=torch.float64)
    torch.manual_seed(1)
    loose = flow.log_prob(x)
    flow.set_solver("dopri8", atol=1e-10, rtol=1e-10)
    torch.manual_seed(1)  # same Hutchinson probes in both solves
    tight = flow.log_prob(x)
    torch.testing.assert_close(loose, tight, atol=1e-3, rtol=0)


def test_inverse_of_transform_is_identity():
    flow = _flow(SPARSE, flow_steps=2, time_conditioning=True, atol=1e-7, rtol=1e-7)
    x = 2 * torch.randn(64, 5, dtype=torch.float64)
    z, _ = flow.transform(x)
    assert (z - x).abs().max() > 1e-2  # the flow is not the identity
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-5, rtol=0)


def test_sample_and_rsample():
    flow = _flow(CHAIN, hidden_sizes=(8,), atol=1e-4, rtol=1e-4)
    s = flow.sample((10,))
    assert s.shape == (10, 4) and torch.isfinite(s).all() and not s.requires_grad
    r = flow.rsample((6,))
    r.pow(2).sum().backward()
    assert flow.blocks[0].raw_end_time.grad is not None
    assert flow.blocks[0].net.layers[0].weight.grad.abs().sum() > 0


def test_sampled_points_have_consistent_log_prob():
    # Samples map back to standard-normal latents: transform(sample) must be N(0, I) distributed.
    flow = _flow(CHAIN, hidden_sizes=(8,), atol=1e-6, rtol=1e-6)
    z = torch.randn(2000, 4, dtype=torch.float64)
    x = flow.inverse(z)
    torch.testing.assert_close(flow.transform(x)[0], z, atol=1e-4, rtol=0)


# --- solvers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("solver", ADAPTIVE_SOLVERS + FIXED_STEP_SOLVERS)
def test_every_solver_runs_and_agrees(solver):
    # The low-order adaptive solvers (fehlberg2, bosh3) land 0.02-0.03 nats from the reference on
    # some random draws of these dynamics at these tolerances (seeds 1 and 2 of the current
    # initialization); this draw checks agreement, not each solver's worst case.
    torch.manual_seed(3)
    flow = _flow(CHAIN, hidden_sizes=(8,), atol=1e-9, rtol=1e-9)
    x = torch.randn(16, 4, dtype=torch.float64)
    with torch.no_grad():
        reference = flow.log_prob(x)
    fixed = solver in FIXED_STEP_SOLVERS
    # Euler is first order (error about 60 h on these dynamics); the others are second order or better.
    # Explicit Adams is a multistep method with a small stability region: at h = 1e-2 it diverges
    # on some random draws of these dynamics, so it gets the smaller step.
    step, tol = (1e-3, 1e-1) if solver in ("euler", "explicit_adams") else (1e-2, 2e-2)
    flow.set_solver(solver, atol=1e-6, rtol=1e-6, step_size=step if fixed else None)
    flow.reset_nfe()
    lp = flow.log_prob(x)
    lp.mean().backward()
    assert flow.nfe > 0
    assert all(p.grad is not None for p in flow.parameters())
    torch.testing.assert_close(lp.detach(), reference, atol=tol, rtol=0)


@pytest.mark.parametrize("solver,step", [("dopri5", None), ("rk4", 0.1)])
@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_adjoint_gradients_match_backprop(solver, step, divergence):
    flow = _flow(SPARSE, solver=solver, step_size=step, divergence=divergence, time_conditioning=True,
                 kinetic_weight=0.1, jacobian_weight=0.1, atol=1e-8, rtol=1e-8)
    x = torch.randn(8, 5, dtype=torch.float64)

    def grads(adjoint: bool) -> list[torch.Tensor]:
        flow.set_solver(adjoint=adjoint)
        flow.zero_grad()
        torch.manual_seed(3)
        (-flow.log_prob(x).mean() + flow.extra_loss()).backward()
        return [p.grad.clone() for p in flow.parameters()]

    for a, b in zip(grads(False), grads(True)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


CONTEXT_ADJACENCY = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 1]], dtype=bool)


# Every pair of (solver, divergence, one context per row or one broadcast) once: the four cases
# cover all pairs that the eight of the full product did.
@pytest.mark.parametrize("solver,step,divergence,broadcast", [
    ("dopri5", None, "exact", False), ("dopri5", None, "hutchinson", True),
    ("rk4", 0.05, "exact", True), ("rk4", 0.05, "hutchinson", False)])
def test_adjoint_gradients_reach_the_context(solver, step, divergence, broadcast):
    # d = 5, C = 3, B = 7, two blocks, t as an input: d/dc under the adjoint equals backprop's.
    flow = _flow(SPARSE, hidden_sizes=(8,), flow_steps=2, solver=solver, step_size=step, divergence=divergence,
                 time_conditioning=True, context_features=3, context_adjacency=CONTEXT_ADJACENCY,
                 atol=1e-8, rtol=1e-8)
    x = torch.randn(7, 5, dtype=torch.float64)
    c0 = torch.randn(3 if broadcast else 7, 3, dtype=torch.float64)[0 if broadcast else slice(None)]

    def grads(adjoint: bool, context_grad: bool = True) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        flow.set_solver(adjoint=adjoint)
        flow.zero_grad()
        c = c0.clone().requires_grad_(context_grad)
        torch.manual_seed(3)  # the same Hutchinson probes in both passes
        flow.log_prob(x, c).pow(2).mean().backward()
        return c.grad, [p.grad.clone() for p in flow.parameters()]

    (dc, dp), (dc_adj, dp_adj) = grads(False), grads(True)
    assert dc_adj is not None and dc_adj.shape == c0.shape and dc.abs().min() > 1e-6
    # Integration error, not roundoff, separates the two: the continuous adjoint is solved
    # backwards to the solver's tolerance (1e-8 here); measured differences are below 1e-7.
    torch.testing.assert_close(dc_adj, dc, atol=1e-6, rtol=1e-6)
    for a, b in zip(dp, dp_adj):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    # The parameters' adjoint gradients do not change when the context needs one too: bit for bit
    # with fixed steps; dopri5's backward steps also watch the context's adjoint (torchdiffeq's
    # default adjoint norm covers every adjoint parameter), so there to the integration error.
    _, dp_plain = grads(True, context_grad=False)
    for a, b in zip(dp_adj, dp_plain):
        torch.testing.assert_close(a, b, **(tolerance("exact") if step else {"atol": 1e-5, "rtol": 1e-6}))


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_adjoint_backward_after_a_second_solve_uses_each_solves_context(divergence):
    # Two log_probs (other rows, other contexts, other probes) before one backward: the adjoint pass
    # of the first solve must integrate the first solve's dynamics, not the block's latest context.
    flow = _flow(CHAIN, hidden_sizes=(8,), solver="rk4", step_size=0.05, divergence=divergence,
                 context_features=2, atol=1e-8, rtol=1e-8)
    # Same batch size, so that a stale context would not fail loudly but give wrong gradients.
    x1, x2 = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    c1, c2 = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)

    def grads(adjoint: bool) -> list[torch.Tensor]:
        flow.set_solver(adjoint=adjoint)
        flow.zero_grad()
        a, b = c1.clone().requires_grad_(), c2.clone().requires_grad_()
        torch.manual_seed(5)
        (flow.log_prob(x1, a).sum() + 2 * flow.log_prob(x2, b).sum()).backward()
        return [a.grad, b.grad, *(p.grad for p in flow.parameters())]

    for a, b in zip(grads(False), grads(True)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)  # rk4's integration error, as above


def test_fixed_step_size_is_measured_in_t():
    # With T = 2 and step 0.5, rk4 takes 4 steps of 4 evaluations each.
    flow = _flow(CHAIN, hidden_sizes=(8,), solver="rk4", step_size=0.5, end_time=2.0)
    flow.reset_nfe()
    flow.transform(torch.randn(3, 4, dtype=torch.float64))
    assert flow.nfe == 16


def test_end_time_is_trainable_and_positive():
    flow = _flow(CHAIN, hidden_sizes=(8,), end_time=0.5)
    assert flow.end_times == pytest.approx([0.5])
    flow.log_prob(torch.randn(4, 4, dtype=torch.float64)).sum().backward()
    assert float(flow.blocks[0].raw_end_time.grad) != 0.0
    with torch.no_grad():
        flow.blocks[0].raw_end_time.fill_(-30.0)
    assert 0 < flow.end_times[0]
    frozen = _flow(CHAIN, hidden_sizes=(8,), train_end_time=False)
    assert "blocks.0.raw_end_time" not in dict(frozen.named_parameters())


# --- regularizers ------------------------------------------------------------------------------

def test_regularizers_integrate_kinetic_energy_and_frobenius_norm():
    flow = _flow(SPARSE, hidden_sizes=(8,), kinetic_weight=1.0, jacobian_weight=0.0, atol=1e-9, rtol=1e-9)
    x = torch.randn(4, 5, dtype=torch.float64)
    flow.train()
    flow.log_prob(x)
    kinetic = flow.extra_loss()
    # Trapezoid rule on a fine grid along the trajectory, computed independently of the solver state.
    block = flow.blocks[0]
    T = block.end_time.detach()
    ts = torch.linspace(0, 1, 401, dtype=torch.float64)
    from torchdiffeq import odeint

    path = odeint(lambda s, z: T * block.velocity(s * T, z), x, ts, method="dopri8", atol=1e-10, rtol=1e-10)
    with torch.no_grad():
        speed = torch.stack([block.velocity(s * T, z).pow(2).sum(-1) for s, z in zip(ts, path)])
        jac = torch.stack([_jacobian(lambda q: block.velocity(s * T, q), z).pow(2).sum((1, 2))
                           for s, z in zip(ts, path)])
    expected_kinetic = T * torch.trapezoid(speed, ts, dim=0).mean()
    torch.testing.assert_close(kinetic.detach(), expected_kinetic, atol=0, rtol=1e-4)

    flow.kinetic_weight, flow.jacobian_weight = 0.0, 2.0
    flow.log_prob(x)
    expected_frobenius = 2.0 * T * torch.trapezoid(jac, ts, dim=0).mean()
    torch.testing.assert_close(flow.extra_loss().detach(), expected_frobenius, atol=0, rtol=1e-4)


def test_extra_loss_is_zero_when_off_and_single_use_when_on():
    off = _flow(CHAIN, hidden_sizes=(8,))
    assert float(off.extra_loss()) == 0.0
    on = _flow(CHAIN, hidden_sizes=(8,), kinetic_weight=0.5)
    on.train()
    on.log_prob(torch.randn(4, 4, dtype=torch.float64))
    penalty = on.extra_loss()
    assert float(penalty.detach()) > 0 and penalty.requires_grad
    with pytest.raises(RuntimeError, match="extra_loss"):
        on.extra_loss()
    on.eval()
    with torch.no_grad():
        on.log_prob(torch.randn(4, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError):
        on.extra_loss()


# --- baseline, persistence, training -----------------------------------------------------------

def test_ffjord_is_dense_and_shares_the_api():
    flow = _randomized(FFJORD(4, hidden_sizes=(8,), atol=1e-6, rtol=1e-6)).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    J = _jacobian(lambda z: flow.blocks[0].velocity(torch.tensor(0.0), z), x)
    assert (J.abs().amin(0) > 0).all()
    z, logdet = flow.transform(x)
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-4, rtol=0)
    assert flow.sample((3,)).shape == (3, 4)
    with pytest.raises(TypeError, match="adjacency"):
        FFJORD(4, adjacency=CHAIN)


@pytest.mark.parametrize("make", [
    lambda: StrCNF(SPARSE, hidden_sizes=(8,), names=list("abcde"), time_conditioning=True, solver="rk4",
                   step_size=0.25, kinetic_weight=0.1, flow_steps=2, end_time=0.7),
    lambda: FFJORD(3, hidden_sizes=(8,), divergence="hutchinson", noise="rademacher", adjoint=True),
], ids=["strcnf", "ffjord"])
def test_save_load_round_trip(make, tmp_path):
    flow = _randomized(make()).double()
    with torch.no_grad():
        flow.blocks[0].raw_end_time.add_(0.3)  # a trained value, not the constructor's
    path = tmp_path / "cnf.pt"
    flow.save(path)
    loaded = load(path).double()
    assert type(loaded) is type(flow) and loaded.config == flow.config
    x = torch.randn(6, flow.d, dtype=torch.float64)
    torch.manual_seed(5)
    a = flow.log_prob(x)
    torch.manual_seed(5)
    torch.testing.assert_close(loaded.log_prob(x), a)
    assert loaded.end_times == pytest.approx(flow.end_times)


def test_set_solver_changes_are_saved(tmp_path):
    flow = _flow(CHAIN, hidden_sizes=(8,))
    flow.set_solver("midpoint", step_size=0.2, adjoint=True)
    flow.save(tmp_path / "m.pt")
    loaded = load(tmp_path / "m.pt")
    assert (loaded.solver, loaded.step_size, loaded.adjoint) == ("midpoint", 0.2, True)
    loaded.set_solver("dopri5")
    assert loaded.step_size is None


def test_fit_trains_with_regularizers():
    from strnn_fast.train import fit

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 2, generator=g) * torch.tensor([0.3, 2.0]) + torch.tensor([1.0, -1.0])
    flow = StrCNF(np.eye(2, k=-1), hidden_sizes=(16,), solver="rk4", step_size=0.25, kinetic_weight=0.01,
                  jacobian_weight=0.01)
    history = fit(flow, x[:192], x[192:], epochs=15, batch_size=64, lr=1e-2, verbose=False)
    assert history.val_nll[history.best_epoch] < history.val_nll[0] - 0.2


@pytest.mark.parametrize("model", ["strcnf", "ffjord"])
def test_cli_fit_sample_logprob(tmp_path, capsys, model):
    from strnn_fast.cli import main
    from strnn_fast.data import make_multimodal

    ds = make_multimodal(n=80, d=3, seed=0)
    data, graph, path = tmp_path / "x.csv", tmp_path / "a.csv", tmp_path / "m.pt"
    np.savetxt(data, np.concatenate([ds.train, ds.val, ds.test]), delimiter=",")
    np.savetxt(graph, ds.adjacency.astype(int), delimiter=",", fmt="%d")
    assert main(["fit", str(data), "-a", str(graph), "--model", model, "--hidden", "8", "--flow-steps", "1",
                 "--epochs", "2", "-q", "-o", str(path)]) == 0
    fitted = load(path)
    assert type(fitted.base) is (FFJORD if model == "ffjord" else StrCNF)
    assert main(["sample", str(path), "-n", "5", "-o", str(tmp_path / "s.csv")]) == 0
    assert np.isfinite(np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)).all()
    assert main(["logprob", str(path), str(data), "-o", str(tmp_path / "lp.csv")]) == 0
    assert np.isfinite(np.loadtxt(tmp_path / "lp.csv", delimiter=",", skiprows=1)).all()
    capsys.readouterr()


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,error,match", [
    (dict(solver="rk5"), ValueError, "solver"),
    (dict(solver=4), TypeError, "solver"),
    (dict(solver="euler"), ValueError, "step_size"),
    (dict(solver="dopri5", step_size=0.1), ValueError, "step_size"),
    (dict(solver="rk4", step_size=-0.1), ValueError, "step_size"),
    (dict(atol=0.0), ValueError, "atol"),
    (dict(rtol="1e-3"), TypeError, "rtol"),
    (dict(end_time=0.0), ValueError, "end_time"),
    (dict(divergence="trace"), ValueError, "divergence"),
    (dict(noise="uniform"), ValueError, "noise"),
    (dict(flow_steps=0), ValueError, "flow_steps"),
    (dict(kinetic_weight=-1.0), ValueError, "kinetic_weight"),
    (dict(adjoint=1), TypeError, "adjoint"),
    (dict(hidden_sizes=(0,)), ValueError, "hidden_sizes"),
    (dict(activation="sine"), ValueError, "activation"),
])
def test_bad_options_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        StrCNF(CHAIN, **{"hidden_sizes": (8,), **kwargs})


def test_bad_adjacency_and_input_raise():
    with pytest.raises(ValueError, match="square"):
        StrCNF(np.ones((2, 3)))
    with pytest.raises(ValueError, match="binary"):
        StrCNF([[0, 2], [0, 0]])
    flow = _flow(CHAIN, hidden_sizes=(8,))
    with pytest.raises(ValueError):
        flow.log_prob(torch.randn(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError):
        flow.inverse(torch.randn(3, dtype=torch.float64))


def test_cycles_and_diagonal_are_accepted():
    flow = StrCNF(CYCLE | np.eye(3, dtype=bool), hidden_sizes=(8,))
    assert not flow.A.diagonal().any() and flow.jacobian_pattern.all()


# --- slow: the paper's comparison --------------------------------------------------------------

@pytest.mark.slow
def test_strcnf_beats_ffjord_on_multimodal_data():
    from strnn_fast.data import make_multimodal
    from strnn_fast.train import evaluate_nll, fit

    data = make_multimodal(n=1000, d=15, seed=0)
    opts = dict(hidden_sizes=(64, 64), atol=1e-4, rtol=1e-4)
    results = {}
    for name, make in (("strcnf", lambda: StrCNF(data.adjacency, **opts)), ("ffjord", lambda: FFJORD(15, **opts))):
        torch.manual_seed(0)
        flow = make()
        fit(flow, data.train, data.val, epochs=60, batch_size=128, lr=1e-2, patience=10, verbose=False)
        results[name] = evaluate_nll(flow, data.test)
    assert results["strcnf"] < results["ffjord"], results
