"""Level-scheduled inversion (flows/levels.py): the same inverse as the passes, each unit computed once."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from strnn_fast import MaskedLinear
from strnn_fast.data import random_dag
from strnn_fast.flows import ARF, StrAF
from strnn_fast.flows.levels import LevelPlan, level_plan, traceable_plan


def _away_from_identity(flow: torch.nn.Module, seed: int) -> None:
    """Random weights on every mask (the last layers start at zero), masked at rest."""
    gen = torch.Generator().manual_seed(seed)
    for m in flow.modules():
        if isinstance(m, MaskedLinear):
            m.set_weight(0.6 * torch.randn(m.out_features, m.in_features, generator=gen, dtype=torch.float64))
            if m.bias is not None:
                with torch.no_grad():
                    m.bias.copy_(0.3 * torch.randn(m.out_features, generator=gen, dtype=torch.float64))


def _passes(flow, z: torch.Tensor, context=None) -> torch.Tensor:
    """The plain inverse: depth + 1 passes per step (grad enabled switches the plan off)."""
    with torch.enable_grad():
        return flow.inverse(z, context).detach()


CASES = [
    dict(d=13, hidden=(29,), normalizer="affine", seed=0),
    dict(d=29, hidden=(41, 37), normalizer="affine", seed=1, backend="sparse"),
    dict(d=17, hidden=(33, 31, 19), normalizer="spline", seed=2),
    dict(d=11, hidden=(23,), normalizer="umnn", seed=3),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"d{c['d']}-{c['normalizer']}-{len(c['hidden'])}layers")
def test_plan_inverse_equals_the_passes(case):
    A = random_dag(case["d"], parents=(1, 4), seed=case["seed"])
    torch.manual_seed(case["seed"])
    flow = StrAF(A, case["hidden"], 2, normalizer=case["normalizer"], backend=case.get("backend", "auto")).double()
    _away_from_identity(flow, case["seed"])
    z = torch.randn(67, case["d"], dtype=torch.float64)
    with torch.no_grad():
        fast = flow.inverse(z)
        assert all(level_plan(step, z) is not None for step in flow.steps)
        torch.testing.assert_close(flow.transform(fast)[0], z, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(fast, _passes(flow, z), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("case", CASES[:3], ids=lambda c: f"d{c['d']}-{c['normalizer']}")
def test_traceable_plan_equals_the_passes(case):
    # The plan export traces (strnn_fast.export): dense blocks and torch ops, also on the CPU.
    A = random_dag(case["d"], parents=(1, 4), seed=case["seed"])
    torch.manual_seed(case["seed"])
    flow = StrAF(A, case["hidden"], 2, normalizer=case["normalizer"], context_features=2).double()
    _away_from_identity(flow, case["seed"])
    z, c = torch.randn(67, case["d"], dtype=torch.float64), torch.randn(67, 2, dtype=torch.float64)
    plans = [traceable_plan(step) for step in flow.steps]
    assert all(plan is not None and not plan.on_cpu for plan in plans)
    used = []
    for plan in plans:  # record that the inverse runs these plans, not the cached C++ ones
        plan.inverse = lambda *a, _run=plan.inverse: used.append(1) or _run(*a)
    try:
        for step, plan in zip(flow.steps, plans):
            step.traced_plan = plan
        with torch.no_grad():
            traced = flow.inverse(z, c)
        assert len(used) == len(plans)
    finally:
        for step in flow.steps:
            step.traced_plan = None
    torch.testing.assert_close(traced, _passes(flow, z, c), atol=1e-10, rtol=1e-10)


def test_plan_with_context_and_permuted_steps():
    torch.manual_seed(0)
    A = random_dag(9, parents=(1, 3), seed=4)
    ctx_adj = np.random.default_rng(0).random((9, 3)) < 0.5
    flow = StrAF(A, (31,), 3, context_features=3, context_adjacency=ctx_adj).double()
    _away_from_identity(flow, 5)
    z, c = torch.randn(40, 9, dtype=torch.float64), torch.randn(40, 3, dtype=torch.float64)
    with torch.no_grad():
        fast = flow.inverse(z, c)
    torch.testing.assert_close(fast, _passes(flow, z, c), atol=1e-10, rtol=1e-10)
    arf = ARF(7, (23,), 3, permute=True).double()  # MADE masks, a reversed order every other step
    _away_from_identity(arf, 6)
    z = torch.randn(20, 7, dtype=torch.float64)
    with torch.no_grad():
        fast = arf.inverse(z)
    torch.testing.assert_close(fast, _passes(arf, z), atol=1e-10, rtol=1e-10)


def test_plan_follows_weight_updates_and_stays_out_of_autograd():
    torch.manual_seed(0)
    flow = StrAF(random_dag(12, parents=(1, 3), seed=7), (24,), 2)
    _away_from_identity(flow, 7)
    z = torch.randn(8, 12)
    with torch.no_grad():
        first = level_plan(flow.steps[0], z)
        assert level_plan(flow.steps[0], z) is first  # cached
    opt = torch.optim.SGD(flow.parameters(), lr=0.1)
    (-flow.log_prob(torch.randn(16, 12)).mean()).backward()
    opt.step()
    with torch.no_grad():
        assert level_plan(flow.steps[0], z) is not first  # the weights moved: cut again
        fast = flow.inverse(z)
    torch.testing.assert_close(fast, _passes(flow, z), atol=1e-5, rtol=1e-5)
    assert level_plan(flow.steps[0], z) is None  # grad enabled: rsample differentiates the passes
    x = flow.rsample((4,))
    assert x.requires_grad


def test_plan_counts_stages_and_handles_empty_batches():
    A = random_dag(10, parents=(1, 2), seed=8)
    flow = StrAF(A, (20,), 1)
    step = flow.steps[0]
    with torch.no_grad():
        plan = LevelPlan(step.conditioner, torch.device("cpu"), torch.float32)
        assert plan.n_stages == step.n_passes  # depth + 1
        flow.reset_passes()
        assert flow.sample(0).shape == (0, 10)
        assert flow.passes == [step.n_passes]
