"""flow(context) as a torch.distributions.Distribution: validation, shapes, log_prob, rsample, Independent, KL."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Distribution, Independent, Normal, constraints
from tolerances import tolerance

from strnn_fast.flows import ARF, GNF, FlowDistribution, StrAF

from _shake import shake

A = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0]])


def perturbed(flow):
    torch.manual_seed(1)
    return shake(flow).double()


FLOWS = {
    "straf-spline": lambda **k: StrAF(A, (8,), 2, normalizer="spline", bins=4, **k),
    "straf-affine": lambda **k: StrAF(A, (8,), 2, **k),
    "arf": lambda **k: ARF(A, (8,), 2, **k),
    "gnf": lambda **k: GNF(A, (8,), 2, **k),
}


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.parametrize("conditional", [False, True])
def test_is_a_validated_torch_distribution(name: str, conditional: bool) -> None:
    flow = perturbed(FLOWS[name](context_features=2 if conditional else 0))
    context = torch.randn(4, 2, dtype=torch.float64) if conditional else None
    batch = (4,) if conditional else ()
    dist = flow(context)
    assert isinstance(dist, Distribution) and isinstance(dist, FlowDistribution)
    assert dist.has_rsample and dist.support is constraints.real_vector
    assert dist.event_shape == (3,) and dist.batch_shape == batch
    strict = FlowDistribution(flow, context, validate_args=True)
    for shape in [(), (5,), (2, 3)]:
        s = strict.sample(shape)
        assert s.shape == (*shape, *batch, 3) and not s.requires_grad
        r = strict.rsample(shape)
        assert r.shape == (*shape, *batch, 3) and r.requires_grad
        lp = strict.log_prob(s)
        assert lp.shape == (*shape, *batch)
        # The distribution's log_prob is the flow's (one context per batch entry).
        expected = flow.log_prob(s, context) if conditional else flow.log_prob(s)
        torch.testing.assert_close(lp, expected, **tolerance("exact"))
    with pytest.raises(ValueError):  # torch's own shape validation
        strict.log_prob(torch.zeros(7, 2, dtype=torch.float64))
    with pytest.raises(ValueError):  # torch's own support validation
        strict.log_prob(torch.full((*batch, 3), float("nan"), dtype=torch.float64))


def test_rsample_carries_gradients_to_the_flow() -> None:
    flow = perturbed(FLOWS["straf-spline"]())
    flow().rsample((16,)).square().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.parameters())


def test_expand_independent_and_monte_carlo_kl() -> None:
    flow = perturbed(FLOWS["straf-affine"](context_features=1))
    dist = flow(torch.randn(1, 1, dtype=torch.float64))
    wide = dist.expand((4,))
    assert wide.batch_shape == (4,) and wide.sample((2,)).shape == (2, 4, 3)
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(wide.log_prob(x), dist.log_prob(x), **tolerance("exact"))
    unconditional = perturbed(FLOWS["gnf"]())().expand((2, 3))
    assert unconditional.batch_shape == (2, 3) and unconditional.log_prob(torch.zeros(3, dtype=torch.float64)).shape == (2, 3)
    joint = Independent(wide, 1)
    assert joint.event_shape == (4, 3) and joint.log_prob(x).shape == ()
    torch.testing.assert_close(joint.log_prob(x), dist.log_prob(x).sum(), **tolerance("float64"))
    # Monte-Carlo KL(flow || N(0, I)) = E_flow[log q - log p], differentiable through rsample.
    flow2 = perturbed(FLOWS["straf-spline"]())
    q, p = flow2(), Independent(Normal(torch.zeros(3, dtype=torch.float64), 1.0), 1)
    s = q.rsample((2000,))
    kl = (q.log_prob(s) - p.log_prob(s)).mean()
    kl.backward()
    assert torch.isfinite(kl) and kl > 0
    # The untrained (zero-conditioner) flow is the identity: KL to its own prior is zero.
    identity = StrAF(A, (8,), 1).double()()
    s = identity.sample((50,))
    torch.testing.assert_close(identity.log_prob(s), p.log_prob(s), **tolerance("float64"))


def test_mixture_of_conditionals_and_a_conditional_cnf() -> None:
    # p(x) = sum_k w_k p(x | c_k): torch's MixtureSameFamily over the batch of K contexts.
    from torch.distributions import Categorical, MixtureSameFamily

    from strnn_fast.flows import StrCNF

    flow = perturbed(FLOWS["straf-spline"](context_features=2))
    contexts = torch.randn(4, 2, dtype=torch.float64)
    weights = Categorical(logits=torch.randn(4, dtype=torch.float64))
    mixture = MixtureSameFamily(weights, flow(contexts), validate_args=True)
    x = torch.randn(6, 3, dtype=torch.float64)
    per_context = torch.stack([flow.log_prob(x, c) for c in contexts], dim=-1)
    want = torch.logsumexp(weights.logits.log_softmax(-1) + per_context, dim=-1)
    torch.testing.assert_close(mixture.log_prob(x), want, **tolerance("float64"))
    assert mixture.sample((5,)).shape == (5, 3)
    # A StrCNF is a Flow too: flow(context) is its Distribution.
    cnf = StrCNF(A, (8,), solver="rk4", step_size=0.25, context_features=2).double()
    dist = FlowDistribution(cnf, contexts, validate_args=True)
    assert dist.batch_shape == (4,) and dist.sample((2,)).shape == (2, 4, 3)
    torch.testing.assert_close(dist.log_prob(x[:4]), cnf.log_prob(x[:4], contexts), **tolerance("exact"))


def test_bad_context() -> None:
    with pytest.raises(ValueError, match="context is required"):
        StrAF(A, (8,), 1, context_features=2)()
    with pytest.raises(ValueError, match="context must be None"):
        StrAF(A, (8,), 1)(torch.zeros(2))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 2\)"):
        StrAF(A, (8,), 1, context_features=2)(torch.zeros(3))
    with pytest.raises(TypeError, match="flow must be"):
        FlowDistribution(torch.nn.Linear(2, 2))
