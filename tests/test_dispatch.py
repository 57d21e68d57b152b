"""Measured dispatch: CPU cases timed once and cached, margin, overrides, files, frozen = unfrozen, CUDA unmeasured."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import strnn_fast.dispatch as dispatch
from strnn_fast import FastStrNN, MaskedLinear
from strnn_fast.freeze import freeze


@pytest.fixture()
def table(monkeypatch) -> dict:
    """A fresh, empty decision table for the test (the module's is shared by the session)."""
    fresh: dict = {}
    monkeypatch.setattr(dispatch, "DECISIONS", fresh)
    return fresh


@pytest.fixture()
def timings(monkeypatch) -> list:
    """Counts measurements; each records the real timings."""
    calls: list = []
    real = dispatch.time_candidates

    def counted(fns, *args, **kwargs):
        calls.append(sorted(fns))
        return real(fns, *args, **kwargs)

    monkeypatch.setattr(dispatch, "time_candidates", counted)
    return calls


def _net(backend: str = "auto") -> FastStrNN:
    # Every layer has at least dispatch.MIN_TIMED_WEIGHTS weights: smaller ones are never timed.
    torch.manual_seed(0)
    A = np.tril(np.random.default_rng(0).random((64, 64)) < 0.2, -1)
    return FastStrNN(64, (80, 80), 64, adjacency=A, backend=backend)


def test_small_layers_are_not_timed(table, timings) -> None:
    A = np.tril(np.ones((12, 12)), -1)
    net = FastStrNN(12, (40, 40), 12, adjacency=A)
    net(torch.randn(30, 12))
    assert timings == [] and table == {}
    assert all(layer.resolved_backend(torch.randn(30, layer.in_features)) == "dense" for layer in net.layers)


def test_cpu_cases_are_measured_once_and_cached(table, timings) -> None:
    net = _net()
    x = torch.randn(30, 64)
    y = net(x)
    assert len(timings) == 3 and all(names == ["cpu", "dense"] for names in timings)
    assert len(table) == 3 and all(v["source"] == "measured" and set(v["times_us"]) == {"cpu", "dense"}
                                   for v in table.values())
    net(torch.randn(25, 64))  # the same batch bucket (32) and phase: no new measurement
    assert len(timings) == 3
    with torch.no_grad():
        net(x)  # the eval phase is a new case
    assert len(timings) == 6
    report = net.backend_report()
    assert {(r["layer"], r["phase"], r["batch_bucket"]) for r in report} == {
        (i, p, 32) for i in range(3) for p in ("train", "eval")}
    assert all(r["backend"] == table[dispatch.make_case((r["out"], r["in"]), r["density"], 32, torch.float32,
                                                        r["phase"], "cpu")]["backend"] for r in report)
    # Measuring ran on clones: the model's gradients and outputs are untouched.
    assert all(p.grad is None for p in net.parameters())
    torch.testing.assert_close(net(x), y)


def test_margin_before_leaving_dense(table) -> None:
    case = dispatch.make_case((10, 10), 0.5, 8, torch.float32, "eval", "cpu")
    assert dispatch.record(case, {"dense": 105.0, "sparse": 100.0}) == "dense"
    assert dispatch.record(case, {"dense": 120.0, "sparse": 100.0}) == "sparse"
    assert dispatch.record(case, {"dense": 90.0, "sparse": 100.0}) == "dense"
    # A packed layer's own path is the sparse one: leaving it needs the margin too.
    assert dispatch.record(case, {"dense": 95.0, "sparse": 100.0}, native="sparse") == "sparse"
    assert dispatch.record(case, {"dense": 80.0, "sparse": 100.0}, native="sparse") == "dense"


def test_decisions_are_used_and_can_be_overridden(table) -> None:
    layer = _net().layers[1]
    x = torch.randn(7, layer.in_features)
    case = dispatch.make_case((layer.out_features, layer.in_features), layer.density(), 7, torch.float32, "eval",
                              "cpu")
    for backend in ("sparse", "dense"):
        dispatch.override(case, backend)
        with torch.no_grad():
            assert layer.resolved_backend(x) == backend
        assert layer.decision(7, "eval") == backend
    with pytest.raises(ValueError, match="backend"):
        dispatch.override(case, "cusparse")


def test_frozen_and_unfrozen_make_the_same_decision(table, timings) -> None:
    net = _net().eval()
    x = torch.randn(16, 64)
    with torch.no_grad():
        y = net(x)
    frozen = freeze(net)
    measured = len(timings)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), y, rtol=1e-6, atol=1e-6)
        assert len(timings) == measured  # the frozen layers found the original's cases
        assert [f.resolved_backend(x) for f in frozen.layers] == [m.resolved_backend(x) for m in net.layers]
        # Pin every case the other way: both follow.
        for layer in net.layers:
            case = next(iter(layer.seen_cases))
            dispatch.override(case, "sparse" if table[case]["backend"] == "dense" else "dense")
        assert [f.resolved_backend(x) for f in frozen.layers] == [m.resolved_backend(x) for m in net.layers]
        torch.testing.assert_close(frozen(x), net(x), rtol=1e-6, atol=1e-6)


class _CudaLike:
    """Stands in for a CUDA input: the dispatch reads only these attributes."""

    is_cuda = True
    requires_grad = False
    dtype = torch.float32
    device = torch.device("cpu")
    shape = (256, 40)

    def numel(self) -> int:
        return 256 * 40


def test_unmeasured_cuda_layer_stays_dense(table, timings) -> None:
    layer = _net().layers[1]
    with torch.no_grad():
        assert dispatch.choose_backend(layer, _CudaLike()) == "dense"
    assert not timings and not table  # never timed implicitly


def test_save_and_load_decisions(table, tmp_path) -> None:
    case = dispatch.make_case((64, 32), 0.05, 100, torch.float16, "train", "cuda:NVIDIA H100 80GB HBM3")
    dispatch.record(case, {"dense": 300.0, "triton": 100.0, "sparse": 250.0})
    dispatch.record(dispatch.make_case((8, 8), 1.0, 4, torch.float32, "eval", "cpu"), {"dense": 1.0, "sparse": 9.0})
    path = tmp_path / "decisions.json"
    dispatch.save_decisions(path, device="cuda")
    table.clear()
    assert dispatch.load_decisions(path) == 1
    assert list(table) == [case] and table[case]["backend"] == "triton"
    assert dispatch.decide((64, 32), 0.05, 128, torch.float16, "train", "cuda:NVIDIA H100 80GB HBM3") == "triton"
    # Another GPU model is another device key: unmeasured, so dense.
    assert dispatch.decide((64, 32), 0.05, 128, torch.float16, "train", "cuda:NVIDIA A100-SXM4-40GB") == "dense"
    bad = tmp_path / "bad.json"
    bad.write_text('{"entries": 3}')
    with pytest.raises(ValueError, match="dispatch file"):
        dispatch.load_decisions(bad)


def test_measure_model_records_every_layer(table) -> None:
    net = _net()
    done = dispatch.measure_model(net, [5, 64], phases=["eval"])
    assert len(done) == 6 and all(case in table for case, _ in done)
    assert {case[3] for case, _ in done} == {8, 64}


def test_functorch_transforms_run_dense(table, timings) -> None:
    layer = MaskedLinear(6, 5, np.tril(np.ones((5, 6))), activation="tanh")
    x = torch.randn(4, 6, dtype=torch.float32)
    jac = torch.func.vmap(torch.func.jacrev(lambda v: layer(v)))(x)
    assert jac.shape == (4, 5, 6) and not timings
    assert torch.all(jac[:, torch.from_numpy(np.tril(np.ones((5, 6)))) == 0] == 0)


def test_measuring_leaves_other_threads_random_draws_alone(table) -> None:
    """Timing draws from a private generator: a thread sampling meanwhile never sees its stream rewound."""
    import threading

    nets = [_net() for _ in range(6)]  # built first: _net() seeds the global generator
    inputs = [torch.randn(batch, 64) for batch in (3, 9, 17, 33, 65, 129)]  # a new case per net and layer
    draws: list[torch.Tensor] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            draws.append(torch.randn(64))

    thread = threading.Thread(target=sampler)
    thread.start()
    try:
        for net, x in zip(nets, inputs):
            net(x)
    finally:
        stop.set()
        thread.join()
    rows = torch.stack(draws)
    assert len(rows) > 10 and torch.unique(rows, dim=0).shape[0] == rows.shape[0]


def test_concurrent_first_calls_measure_once_and_agree(table, timings) -> None:
    """Eight threads making the same first call: one measurement per case, one answer for all."""
    from concurrent.futures import ThreadPoolExecutor

    net = _net()
    x = torch.randn(40, 64)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: [layer.resolved_backend(x) for layer in net.layers], range(8)))
    assert len(timings) == 3 and len(table) == 3
    assert all(a == answers[0] for a in answers)


def test_bad_dispatch_file_at_import_warns_not_crashes(tmp_path) -> None:
    """A garbage STRNN_FAST_DISPATCH_FILE or STRNN_FAST_MAX_DENSE_BYTES must not break `import strnn_fast`."""
    import subprocess
    import sys

    bad = tmp_path / "table.json"
    bad.write_text("{not json")
    for env in ({"STRNN_FAST_DISPATCH_FILE": str(bad)}, {"STRNN_FAST_DISPATCH_FILE": str(tmp_path)},
                {"STRNN_FAST_MAX_DENSE_BYTES": "lots"}):
        proc = subprocess.run([sys.executable, "-P", "-c", "import strnn_fast, strnn_fast.nn as n; print(n.MAX_DENSE_BYTES)"],
                              env={**__import__("os").environ, **env}, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "RuntimeWarning" in proc.stderr and proc.stdout.strip() == str(8 << 30)
    with pytest.raises(ValueError, match="not a strnn_fast dispatch file"):
        dispatch.load_decisions(bad)


def test_table_pinning_a_backend_the_device_lacks_runs_dense(table) -> None:
    """A table that pins "triton" on the CPU (or an unknown device's backend) answers dense, not a crash."""
    net = _net()
    x = torch.randn(30, 64)
    for layer in net.layers:
        dispatch.override(dispatch.make_case((layer.out_features, layer.in_features), layer.density(), 30,
                                             torch.float32, "train", "cpu"), "triton")
    assert [layer.resolved_backend(x) for layer in net.layers] == ["dense"] * 3
    net(x).sum().backward()


@pytest.mark.parametrize("pinned", [None, "cpu", "dense"])
def test_auto_takes_gradients_of_gradients(table, pinned) -> None:
    """A gradient penalty through backend="auto": on the CPU "auto" chooses only among backends that
    take derivatives of any order, and gives dense's answer."""
    net = _net().double()
    dense = _net("dense").double()
    dense.load_state_dict(net.state_dict())
    x = torch.randn(40, 64, dtype=torch.float64)
    if pinned is not None:
        for layer in net.layers:
            dispatch.override(dispatch.make_case((layer.out_features, layer.in_features), layer.density(), 40,
                                                 torch.float64, "train", "cpu"), pinned)

    def penalty(model):
        xi = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(model(xi).square().sum(), xi, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), [layer.packed_values() if layer.packed else layer.weight
                                                        for layer in model.layers])

    got = penalty(net)
    want = penalty(dense)
    assert all(layer.resolved_backend(x.requires_grad_()) in ("cpu", "dense") for layer in net.layers)
    for layer, g_got, g_want in zip(net.layers, got, want):
        if layer.packed:
            g_want = g_want.reshape(-1)[layer.csr().flat]
        torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-9)
