"""The Triton kernels compile for Hopper (sm_90a) and Ampere (sm_80) on a machine without a GPU.

``python -m strnn_fast.kernels.aot`` compiles the plan of
``strnn_fast.kernels.aot.compile_plan`` (every autotune config per dtype, every
activation per dtype with one config, ...) with ``triton.compile`` and the ptxas of the Triton
wheel, and reports registers, shared memory, stack bytes, wgmma use and the pipelining depth of
each variant. It runs in a subprocess: the interpreter tests set TRITON_INTERPRET=1 in this
process (tests/_interp.py), and interpreted kernels cannot be compiled. About 1-2 minutes on two
busy cores with a cold Triton cache, seconds with a warm one.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

# triton is not imported in this process: the interpreter tests need TRITON_INTERPRET=1 set
# before its first import (tests/_interp.py), and the compiler needs it unset (the subprocess).
TRITON = importlib.util.find_spec("triton")
if TRITON is None:
    pytest.skip("needs triton", allow_module_level=True)

DOT_KERNELS = ("_masked_linear_fwd_kernel", "_masked_linear_bwd_dx_kernel", "_masked_linear_bwd_dw_kernel")
SHARED_LIMIT = {80: 166912, 90: 232448}  # the hardware facts, kept apart from the kernels' own table (an oracle)


def _tools_present() -> bool:
    bindir = os.path.join(os.path.dirname(TRITON.origin), "backends", "nvidia", "bin")
    return all(os.path.exists(os.path.join(bindir, t)) for t in ("ptxas", "cuobjdump"))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> list[dict]:
    if not _tools_present():
        pytest.skip("the Triton wheel has no NVIDIA ptxas/cuobjdump")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-P", "-m", "strnn_fast.kernels.aot", "--jobs", "2"],
                         capture_output=True, text=True, env=env, timeout=600,
                         cwd=tmp_path_factory.mktemp("aot"))
    assert out.returncode == 0, out.stderr[-4000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert rows, out.stderr[-4000:]
    return rows


def test_every_variant_compiles(compiled):
    errors = [r for r in compiled if "error" in r]
    assert not errors, errors[:3]
    kernels = {(r["kernel"], r["arch"], r["dtype"], r["precision"]) for r in compiled}
    for arch, dtypes in ((90, ("bfloat16", "float16", "float32")), (80, ("bfloat16", "float32"))):
        for kernel in DOT_KERNELS:
            for dtype in dtypes:
                assert (kernel, arch, dtype, "tf32" if dtype == "float32" else "ieee") in kernels
        assert ("_masked_linear_fwd_kernel", 90, "float32", "tf32x3") in kernels


def test_no_spills_and_shared_memory_fits(compiled):
    for r in compiled:
        assert r["stack"] == 0, f"local-memory spills: {r}"
        assert r["shared"] <= SHARED_LIMIT[r["arch"]], r


def test_hopper_dots_use_wgmma_and_the_k_loop_is_pipelined(compiled):
    for r in compiled:
        if r["kernel"] in DOT_KERNELS and r["arch"] == 90:
            assert r["wgmma"], f"no wgmma on sm_90a: {r}"
        if r["kernel"] in DOT_KERNELS:
            # async_wait > 0: loads of later tiles stay in flight while this one is multiplied.
            assert r["async_wait"] >= 1, f"K loop not pipelined: {r}"


def test_autotune_configs_are_distinct(compiled):
    """No two configs of one kernel variant compile to the same cubin (that would be a wasted
    autotuning run on the GPU)."""
    groups = defaultdict(list)
    for r in compiled:
        if r["arch"] == 90 and r["kernel"] in DOT_KERNELS:
            groups[(r["kernel"], r["dtype"], r["precision"], r["act"])].append(r)
    for key, rs in groups.items():
        by_config = {(r["block_m"], r["num_warps"], r["num_stages"]): r["cubin_hash"] for r in rs}
        hashes = defaultdict(set)
        for config, h in by_config.items():
            hashes[h].add(config)
        assert all(len(c) == 1 for c in hashes.values()), (key, dict(hashes))
