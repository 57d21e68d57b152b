r"""StrCNF on CPU: training step and function evaluations against the reference's StrCNF and FFJORD;
cost of the exact divergence as d grows (one vmapped backward against d autograd calls).

Part 1 (group "train step"): the paper's multimodal graph (d = 15, threshold 0.8, seed 0), hidden
(64, 64) softplus, one block, T = 1, dopri5 with atol = rtol = 1e-5, exact divergence, a batch of
128 standardized rows. One step is forward (log-likelihood) + backward; the optimizer update is
left out so that every round sees the same weights, hence the same number of function
evaluations (NFE, reported forward / backward). The cases:

* ``reference``: strnn 0.2.0's own classes (``ContinuousFlowFactory``: StrODENet, brute-force
  divergence = d autograd calls, adjoint always on);
* ``ours adjoint``: StrCNF in the same configuration (adjoint on);
* ``ours``: StrCNF with its default backpropagation through the solver;
* ``ffjord``: our unstructured baseline (dense dynamics, same widths), backpropagation.

StrCNF and the reference get the same weights: both factorize A + I with the greedy algorithm
(ours is bit-identical to the reference's), and the reference's layers are loaded with ours, so
they integrate the same ODE. Timing an untrained CNF would be meaningless (ours starts as the
identity, which the solver crosses in a few steps), so StrCNF and FFJORD are first trained for 10
epochs (:func:`strnn_fast.train.fit`, lr 1e-2, batch 128, atol = rtol = 1e-4) and timed there.

Part 2 (group "exact divergence"): one evaluation of f and tr(df/dx) with its graph, then the
backward of their sum (what every function evaluation costs in training), for the StrCNF dynamics
on a random DAG with 1-3 parents per variable, hidden (max(64, 2d),) * 2, batch 128:

* ``autograd loop``: the reference's ``DivergenceFunction("brute_force")``, d calls of
  ``torch.autograd.grad``;
* ``vmap basis``: :func:`strnn_fast.flows.odefunc.exact_divergence` with the d basis vectors as
  probes, one vmapped backward (same arithmetic, no Python loop);
* ``vmap groups``: the same with StrCNF's probes, one per group of structurally orthogonal
  Jacobian rows (k of them, in ``extra``), which is what StrCNF runs.

Part 3 (group "fit multimodal"): test NLL after :func:`strnn_fast.train.fit` on the multimodal data
(600/200/200 rows), StrCNF against FFJORD with the same widths, dopri5 atol = rtol = 1e-4, batch
128, lr 1e-2, up to 100 epochs, patience 10; the time is the whole fit. Seeds (model init and batch
order) come from STRNN_FAST_BENCH_SEEDS (default "0"; e.g. "0,1,2").

Threads: bench/conftest.py pins torch to 1 thread (STRNN_FAST_BENCH_THREADS overrides).

Run (about 5 minutes on 2 cores with one seed):
    pytest bench/bench_cnf.py --benchmark-enable --benchmark-json=bench/results/cnf_cpu.json
    python bench/summarize.py bench/results/cnf_cpu.json > bench/results/cnf_cpu.md
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from strnn_fast.data import make_multimodal, random_dag
from strnn_fast.flows import FFJORD, StrCNF
from strnn_fast.flows.odefunc import CNFDynamics, exact_divergence
from strnn_fast.train import evaluate_nll, fit

ref_cnf = pytest.importorskip("strnn.models.continuous_flows.continuous_flow")
ref_const = pytest.importorskip("strnn.models.config_constants")
ref_odefunc = pytest.importorskip("strnn.models.continuous_flows.ffjord.odefunc")

HIDDEN, BATCH, TOL = (64, 64), 128, 1e-5
DATA = make_multimodal(n=1000, d=15, seed=0)
D = DATA.d


def _reference_flow() -> torch.nn.Module:
    c = ref_const
    config = {
        c.INPUT_DIM: D, c.ODENET_HID: list(HIDDEN), c.ODENET_LIN: "strnn", c.ODENET_ACT: "softplus",
        c.ADJ: DATA.adjacency.astype(float) + np.eye(D), c.OPT_TYPE: "greedy", c.OPT_ARGS: {},
        c.ODENET_DIV_FN: "brute_force", c.ODE_TIME: 1.0, c.ODE_TRAIN_T: True, c.ODE_SOLVER_TYPE: "dopri5",
        c.ODE_SOLVER_ATOL: TOL, c.ODE_SOLVER_RTOL: TOL, c.ODE_SOLVER_STEP: None, c.FLOW_STEPS: 1,
    }
    return ref_cnf.ContinuousFlowFactory(config).build_flow()


def _trained(flow: StrCNF) -> StrCNF:
    flow.set_solver(atol=1e-4, rtol=1e-4)
    fit(flow, DATA.train, epochs=10, batch_size=BATCH, lr=1e-2, verbose=False)
    flow.set_solver(atol=TOL, rtol=TOL)
    return flow


def _flows() -> dict[str, tuple[torch.nn.Module, bool]]:
    torch.manual_seed(0)
    ours = _trained(StrCNF(DATA.adjacency, HIDDEN))
    adjoint = StrCNF(DATA.adjacency, HIDDEN, atol=TOL, rtol=TOL, adjoint=True)
    adjoint.load_state_dict(ours.state_dict())
    reference = _reference_flow()
    theirs = [m for m in reference.modules() if isinstance(m, torch.nn.Linear)]
    mine = list(ours.blocks[0].net.layers)
    assert len(theirs) == len(mine)
    with torch.no_grad():
        for t, m in zip(theirs, mine):
            assert torch.equal(t.mask, m.mask), "the reference factorized A + I differently"
            t.weight.copy_(m.weight)
            t.bias.copy_(m.bias)
        # The reference parameterizes the end time as its square root.
        ref_cnf_block = next(m for m in reference.modules() if hasattr(m, "sqrt_end_time"))
        ref_cnf_block.sqrt_end_time.copy_(ours.blocks[0].end_time.sqrt())
    torch.manual_seed(0)
    ffjord = _trained(FFJORD(D, HIDDEN))
    return {"reference": (reference, True), "ours adjoint": (adjoint, False), "ours": (ours, False),
            "ffjord": (ffjord, False)}


FLOWS = _flows()


class _Counter:
    """Counts calls of a module's forward (the reference has no NFE counter of its own)."""

    def __init__(self, module: torch.nn.Module):
        self.n = 0
        module.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.n += 1


@pytest.mark.parametrize("impl", list(FLOWS))
def test_train_step(benchmark, impl: str) -> None:
    benchmark.group = f"train step d={D} hidden={HIDDEN} batch={BATCH} dopri5 tol={TOL}"
    flow, is_reference = FLOWS[impl]
    flow.train()
    x = torch.from_numpy(DATA.train[:BATCH]).float()
    if is_reference:
        counter = _Counter(next(m for m in flow.modules() if isinstance(m, ref_odefunc.ODEfunc)))

        def nfe() -> int:
            return counter.n

        def loss() -> torch.Tensor:
            z, jac = flow(x)
            return flow.compute_loss(z, jac)
    else:
        def nfe() -> int:
            return flow.nfe

        def loss() -> torch.Tensor:
            return -flow.log_prob(x).mean()

    def step() -> tuple[int, int, float]:
        flow.zero_grad(set_to_none=True)
        start = nfe()
        value = loss()
        forward = nfe() - start
        value.backward()
        return forward, nfe() - start - forward, float(value.detach())

    forward, backward, value = benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(nfe_forward=forward, nfe_backward=backward, nll=round(value, 4))


DIMS = (4, 16, 64, 128)


@pytest.mark.parametrize("method", ["autograd loop", "vmap basis", "vmap groups"])
@pytest.mark.parametrize("d", DIMS)
def test_exact_divergence(benchmark, d: int, method: str) -> None:
    benchmark.group = f"exact divergence + backward d={d} batch={BATCH}"
    width = max(64, 2 * d)
    torch.manual_seed(0)
    dyn = CNFDynamics(random_dag(d, parents=(1, 3), seed=0), (width, width))
    dyn.net.layers[-1].reset_parameters()
    x = torch.randn(BATCH, d)
    t = torch.tensor(0.0)

    def f(z: torch.Tensor) -> torch.Tensor:
        return dyn.velocity(t, z)

    if method == "autograd loop":
        brute = ref_odefunc.DivergenceFunction("brute_force")

        def run() -> tuple[torch.Tensor, torch.Tensor]:
            y = x.clone().requires_grad_(True)
            out = f(y)
            return out, brute.divergence_bf(out, y)
    else:
        probes = dyn.probes if method == "vmap groups" else None

        def run() -> tuple[torch.Tensor, torch.Tensor]:
            out, div, _ = exact_divergence(f, x, probes)
            return out, div

    def step() -> float:
        dyn.zero_grad(set_to_none=True)
        out, div = run()
        (out.sum() + div.sum()).backward()
        return float(div.detach().sum())

    rounds = 20 if d <= 16 else 5
    total = benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(probes=len(dyn.probes) if method == "vmap groups" else d, width=width,
                                trace_sum=round(total, 3))


SEEDS = [int(v) for v in os.environ.get("STRNN_FAST_BENCH_SEEDS", "0").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("impl", ["strcnf", "ffjord"])
def test_fit_multimodal(benchmark, impl: str, seed: int) -> None:
    benchmark.group = f"fit multimodal d={D} hidden={HIDDEN} dopri5 tol=1e-4"
    opts = dict(hidden_sizes=HIDDEN, atol=1e-4, rtol=1e-4)

    def run() -> tuple[torch.nn.Module, object]:
        torch.manual_seed(seed)
        flow = StrCNF(DATA.adjacency, **opts) if impl == "strcnf" else FFJORD(D, **opts)
        history = fit(flow, DATA.train, DATA.val, epochs=100, batch_size=BATCH, lr=1e-2, patience=10, seed=seed,
                      verbose=False)
        return flow, history

    flow, history = benchmark.pedantic(run, rounds=1, iterations=1)
    weights = sum(int(layer.mask.sum()) for layer in flow.blocks[0].net.layers)
    benchmark.extra_info.update(test_nll=round(evaluate_nll(flow, DATA.test), 4),
                                val_nll=round(history.best_val_nll, 4), epochs=history.epochs,
                                end_time=round(flow.end_times[0], 3), masked_weights=weights)
