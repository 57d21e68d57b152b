"""Export of StrCNF: the fixed-step solve unrolled in torch ops (strnn_fast/flows/fixed_step.py).

The unrolled solve is first compared with torchdiffeq in eager mode (cheap: every solver,
context, time conditioning, several blocks); then artifacts, loaded in a process that cannot
import strnn_fast (test_export's helpers), are compared with eager at batch sizes 1 and 513.
One AOTInductor compile runs by default; the matrix is marked slow.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from strnn_fast.activations import ACTIVATIONS
from strnn_fast.export import export, export_mode, methods
from strnn_fast.flows import FFJORD, StrCNF
from strnn_fast.activations import SLOPES
from strnn_fast.flows.fixed_step import SOLVERS
from strnn_fast.standardize import Standardized
from test_export import A, _check, _eager, _run_isolated, _trained


def _cnf(solver="rk4", scale=0.2, **options):
    # Moved well off the identity the zero output layer starts at, so that the divergence matters.
    options = {"hidden_sizes": (16, 16), "flow_steps": 2, "step_size": 0.3, **options}
    return _trained(StrCNF(A, solver=solver, **options), scale=scale).eval()


def _outputs(flow, x, c):
    with torch.no_grad():
        return [flow.log_prob(x, c), *flow.transform(x, c), flow.inverse(x, c)]


@pytest.mark.parametrize("solver", SOLVERS)
def test_unrolled_solve_matches_torchdiffeq(solver):
    flow = _cnf(solver, context_features=2, time_conditioning=True, activation="tanh")
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(33, 5, generator=g), torch.randn(33, 2, generator=g)
    eager = _outputs(flow, x, c)
    assert float(eager[2].abs().max()) > 0.05  # a log-determinant far from zero: the divergence is tested
    with export_mode(flow):
        assert flow.unrolled_steps == [math.ceil(T / 0.3) for T in flow.end_times]
        unrolled = _outputs(flow, x, c)
    assert flow.unrolled_steps is None  # restored
    for got, want in zip(unrolled, eager):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_slopes_are_the_derivatives(name):
    a = torch.linspace(-30, 30, 2001, dtype=torch.float64, requires_grad=True)
    h = ACTIVATIONS[name](a)
    (want,) = torch.autograd.grad(h.sum(), a)
    torch.testing.assert_close(SLOPES[name](a.detach(), h.detach()), want, rtol=1e-12, atol=1e-12)


def test_hutchinson_flow_unrolls_with_the_exact_divergence():
    flow = _cnf(divergence="hutchinson", flow_steps=1)
    exact = copy.deepcopy(flow)
    exact.blocks[0].divergence = "exact"
    x = torch.randn(17, 5)
    with torch.no_grad():
        want = exact.log_prob(x)
        assert float((flow.log_prob(x) - want).abs().max()) > 1e-4  # eager Hutchinson is an estimate
    with export_mode(flow):
        torch.testing.assert_close(flow.log_prob(x), want, rtol=1e-5, atol=1e-5)


def test_refusals(tmp_path):
    adaptive = _cnf("rk4", flow_steps=1)
    adaptive.set_solver("dopri5")
    with pytest.raises(ValueError, match=r"adaptive solver 'dopri5'.*set_solver\(\.\.\.\) with a fixed-step method"):
        export(adaptive, tmp_path / "a.pt2", method="log_prob")
    implicit = _cnf("implicit_adams", flow_steps=1)
    with pytest.raises(ValueError, match="solver 'implicit_adams' is not exportable"):
        export(Standardized(implicit, mean=[0.0] * 5, std=[1.0] * 5), tmp_path / "a.pt2", method="sample")
    with pytest.raises(ValueError, match="format='onnx' cannot express"):
        export(_cnf(flow_steps=1), tmp_path / "a.onnx", method="log_prob", format="onnx")
    assert not list(tmp_path.iterdir())


def test_context_log_prob_runs_without_strnn_fast(tmp_path):
    flow = _cnf(context_features=2, time_conditioning=True)
    _check(flow, "log_prob", tmp_path)
    assert flow.unrolled_steps is None and flow.solver == "rk4"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["transform", "inverse", "sample"])
def test_context_methods_pt2(method, tmp_path):
    _check(_cnf(context_features=2, time_conditioning=True), method, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("solver", [s for s in SOLVERS if s != "rk4"])
def test_solvers_pt2(solver, tmp_path):
    _check(_cnf(solver, activation="softplus"), "log_prob", tmp_path)


@pytest.mark.slow
def test_standardized_pt2(tmp_path):
    model = Standardized(_cnf(flow_steps=1), mean=[1, 2, 3, 4, 5], std=[2, 1, 0.5, 3, 1])
    for method in sorted(methods(model)):
        _check(model, method, tmp_path)


@pytest.mark.slow
def test_ffjord_hutchinson_pt2(tmp_path):
    # Unstructured dynamics; the artifact's divergence is exact, so eager is compared through the
    # exact-divergence copy of the flow.
    flow = _trained(FFJORD(5, hidden_sizes=(16,), divergence="hutchinson", solver="midpoint", step_size=0.25),
                    scale=0.2).eval()
    exact = copy.deepcopy(flow)
    exact.blocks[0].divergence = "exact"
    path = tmp_path / "f.pt2"
    export(flow, path, method="log_prob")
    for b in (1, 513):
        x = torch.randn(b, 5)
        (got,), _ = _run_isolated(path, "pt2", [x], tmp_path)
        np.testing.assert_allclose(got, _eager(exact, "log_prob", [x])[0], rtol=1e-5, atol=1e-5)
