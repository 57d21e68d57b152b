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
import sys
from pathlib import Path

import pytest

# Not imported here: the interpreter tests need TRITON_INTERPRET=1 set before triton's first import.
if importlib.util.find_spec("triton") is None:
    pytest.skip("needs triton", allow_module_level=True)
ROOT = Path(__file__).resolve().parents[1]
POINT_KEYS = {"structure", "d", "hidden", "batch", "dtype", "tile_density", "fwd_ms", "fwd_bwd_ms"}


# The GPU machine returns at most 8 files; gpu_check.sh promises at most these 6 in --out.
FILES = {"gpu_check.log", "cuda_tests.txt", "kernels_gpu.json", "kernels_gpu.md", "dispatch_decisions.json",
         "gpu_check_summary.txt"}
# A kernel that raises at every launch, put in place before anything runs (PYTHONPATH's sitecustomize).
BROKEN_KERNELS = """
import os
if os.environ.get("TRITON_INTERPRET") == "1":
    from strnn_fast.kernels import masked_linear

    def _launch(*args, **kwargs):
        raise RuntimeError("injected kernel failure")

    masked_linear._launch = _launch
"""


def dry_run(out: Path, bindir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """gpu_check.sh --dry-run [args] where `python3` (this interpreter) is the only Python on PATH."""
    bindir.mkdir()
    # A wrapper, not a symlink: a venv's interpreter finds its site-packages only by its own path.
    (bindir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bindir / "python3").chmod(0o755)
    path = os.pathsep.join([str(bindir), "/usr/bin", "/bin"])
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "PYTHONPATH")}
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out), *args],
                          capture_output=True, text=True, env={**base, "PATH": path, **env}, timeout=300, cwd=out.parent)


needs_bash_without_python = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("python", path="/usr/bin:/bin") is not None,
    reason="needs bash, and no `python` in /usr/bin or /bin (the test hides every other Python)")


@needs_bash_without_python
def test_gpu_check_dry_run_writes_the_results(tmp_path):
    out = tmp_path / "out"
    run = dry_run(out, tmp_path / "bin", OUT=str(tmp_path / "not_used"))  # --out wins over $OUT
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert {f.name for f in out.iterdir()} == FILES  # nothing else, nothing temporary
    summary = (out / "gpu_check_summary.txt").read_text()
    assert "cuda_tests: ok" in summary and "bench: ok" in summary, summary
    # The export step (issue 22): a .pt2 loaded without strnn_fast, equal to eager at batch 1 and 4096.
    export = json.loads(summary.split("export: ok: ", 1)[1].rsplit(" (", 1)[0])
    assert export["ok"] and [b["batch"] for b in export["batches"]] == [1, 4096], export
    assert all(b["close"] and b["artifact_ms"] > 0 for b in export["batches"]), export
    doc = json.loads((out / "kernels_gpu.json").read_text())
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
    md = (out / "kernels_gpu.md").read_text()
    assert "| made | 32 | 16 | float32 |" in md and "Production inference" in md
    assert not (tmp_path / "not_used").exists()
    # The decisions "auto" was measured with, in the file format dispatch.load_decisions reads.
    decisions = json.loads((out / "dispatch_decisions.json").read_text())
    assert decisions["version"] == 1 and decisions["entries"]
    assert all(p["errors"].get("dispatch") is None for p in doc["points"]), doc["points"]


@needs_bash_without_python
def test_gpu_check_dry_run_fails_when_the_kernels_fail(tmp_path):
    """The issue-20 run: every Triton time None, and the script still said ok and exited 0."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BROKEN_KERNELS)
    out = tmp_path / "out"
    run = dry_run(out, tmp_path / "bin", "--export-budget", "0", PYTHONPATH=str(site))  # export: not a kernel path on CPU
    assert run.returncode != 0, run.stdout[-3000:]
    summary = (out / "gpu_check_summary.txt").read_text()
    bench = [line for line in summary.splitlines() if line.startswith("bench:")]
    assert len(bench) == 1 and "FAILED" in bench[0], summary
    count = int(bench[0].split("FAILED: ")[-1].split()[0])  # "FAILED: <n> failure(s) in ..."
    doc = json.loads((out / "kernels_gpu.json").read_text())
    assert count >= len(doc["points"]) >= 2  # every point failed, and says why
    assert all("injected kernel failure" in p["errors"].get("check", "") for p in doc["points"])
    assert {f.name for f in out.iterdir()} <= FILES
    assert "export:" not in summary  # --export-budget 0 skips the step
