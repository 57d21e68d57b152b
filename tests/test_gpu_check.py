"""The dry run of ``bench/gpu_check.sh``: the GPU script's plumbing on the CPU (~30-60 s).

It runs the same steps as on the GPU machine (CUDA tests, which skip here; the benchmark in the
Triton interpreter at tiny sizes; the frozen-model latency) and must write the same files, with
the kernels' output checked against the dense baseline at every point.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Not imported here: the interpreter tests need TRITON_INTERPRET=1 set before triton's first import.
if importlib.util.find_spec("triton") is None:
    pytest.skip("needs triton", allow_module_level=True)
ROOT = Path(__file__).resolve().parents[1]
POINT_KEYS = {"structure", "d", "hidden", "batch", "dtype", "tile_density", "fwd_ms", "fwd_bwd_ms"}


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_dry_run_writes_the_results(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "not_used")}  # --out wins over $OUT
    run = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = (tmp_path / "gpu_check_summary.txt").read_text()
    assert "cuda_tests: ok" in summary and "bench: ok" in summary, summary
    doc = json.loads((tmp_path / "kernels_gpu.json").read_text())
    assert {"device", "driver", "torch", "triton", "date", "points"} <= set(doc)
    assert len(doc["points"]) >= 2
    for p in doc["points"]:
        assert POINT_KEYS <= set(p)
        assert set(p["fwd_ms"]) == {"reference", "baseline", "bsr", "triton", "auto"}
        assert set(p["fwd_bwd_ms"]) == {"reference", "baseline", "triton", "auto"}
        assert all(p["fwd_ms"][m] > 0 for m in ("reference", "baseline", "triton", "auto")), p
        assert p["triton_rel_err"] < 1e-4, p  # the kernels computed the network, not just ran
    assert [r["batch"] for r in doc["inference"]] == [1, 16]
    assert all(v is not None for r in doc["inference"] for v in r["ms"].values()), doc["inference"]
    md = (tmp_path / "kernels_gpu.md").read_text()
    assert "| made | 32 | 16 | float32 |" in md and "Production inference" in md
    assert not (tmp_path / "not_used").exists()
    # The decisions "auto" was measured with, in the file format dispatch.load_decisions reads.
    decisions = json.loads((tmp_path / "dispatch_decisions.json").read_text())
    assert decisions["version"] == 1 and decisions["entries"]
    assert all(p["errors"].get("dispatch") is None for p in doc["points"]), doc["points"]
