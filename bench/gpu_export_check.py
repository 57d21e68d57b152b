r"""Export check of ``bash bench/gpu_check.sh`` (issue 22): an AOTInductor package with the Triton kernels in it.

Exports ``log_prob`` of a small StrAF (masked layers on backend "triton", weights moved off their
initialization and masked at rest) with ``strnn_fast.export(..., device="cuda")`` to a ``.pt2``,
then, in a ``python3 -I`` subprocess where importing strnn_fast fails, loads it with
``torch._inductor.aoti_load_package``, compares it with eager at batch 1 and 4096 (allclose,
rtol = atol = 1e-4) and times both (medians of ``triton.testing.do_bench`` on CUDA). It also reports
which files of the package name the forward kernel ``_masked_linear_fwd_kernel`` (AOTInductor
compiled the user Triton kernel, rather than calling an op of strnn_fast). AOTInductor picks the
kernel's launch config at compile time by timing it on inputs it makes up (the example batch of
2; integer constants, such as the tile lists, filled with zeros: empty lists), so the packaged
config is not chosen on the real work: artifact_ms against eager_ms says what that costs.

    python3 -P bench/gpu_export_check.py                 # on the GPU machine, after the install
    python3 -P bench/gpu_export_check.py --dry-run       # CPU: the same plumbing on a tiny model
                                                         # exported for the CPU (dense layers)

Prints one JSON object (the last line of stdout); exits non-zero when the export, the load, the
comparison or (on CUDA) the kernel's presence in the package failed. It writes nothing but a
temporary folder, removed at exit.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import zipfile

import numpy as np

BATCHES = (1, 4096)
TOLERANCE = 1e-4
KERNEL = b"_masked_linear_fwd_kernel"

# Runs in `python3 -I` with strnn_fast blocked: what a user of the artifact has.
_LOADER = textwrap.dedent("""
    import sys, json, time
    import numpy as np, torch
    path, npz, device, out = sys.argv[1:5]
    model = torch._inductor.aoti_load_package(path)
    arrays = np.load(npz)
    results, times = {}, {}
    for key in sorted(arrays.files):
        x = torch.from_numpy(arrays[key]).to(device)
        with torch.no_grad():
            y = model(x)
            results[key] = (y[0] if isinstance(y, (list, tuple)) else y).cpu().numpy()
            if device == "cuda":
                import triton.testing
                times[key] = triton.testing.do_bench(lambda: model(x), return_mode="median")
            else:
                runs = []
                for _ in range(3):
                    t = time.perf_counter()
                    model(x)
                    runs.append((time.perf_counter() - t) * 1e3)
                times[key] = sorted(runs)[1]
    assert "strnn_fast" not in sys.modules
    np.savez(out, **results)
    print(json.dumps(times))
""")


def cuda_home_fallback() -> str | None:
    """A CUDA_HOME for AOTInductor's C++ build on a machine without a CUDA toolkit (no CUDA_HOME,
    nvcc or /usr/local/cuda): the folder of torch's nvidia-* wheels that holds include/cuda.h.
    torch reads CUDA_HOME when torch.utils.cpp_extension is first imported: call before torch."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or shutil.which("nvcc") \
            or os.path.exists("/usr/local/cuda"):
        return None
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        for name in sorted(os.listdir(base)):
            if os.path.exists(os.path.join(base, name, "include", "cuda.h")):
                return os.path.join(base, name)
    return None


def build_model(dry_run: bool):
    """A StrAF that looks trained: every parameter moved off its initialization, weights masked at rest."""
    import torch

    from strnn_fast import MaskedLinear
    from strnn_fast.data import random_dag
    from strnn_fast.flows import StrAF

    d, hidden, backend = (8, (32,), "sparse") if dry_run else (64, (256, 256), "triton")
    flow = StrAF(random_dag(d, parents=(2, 5), seed=0), hidden_sizes=hidden, flow_steps=2, backend=backend)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    for m in flow.modules():
        if isinstance(m, MaskedLinear):
            m.apply_mask_()
    return flow, d


def eager(flow, x, device: str) -> tuple[np.ndarray, float]:
    """log_prob of the model in eager mode and its median time (ms)."""
    import torch

    with torch.no_grad():
        y = flow.log_prob(x).cpu().numpy()
        if device == "cuda":
            import triton.testing

            return y, triton.testing.do_bench(lambda: flow.log_prob(x), return_mode="median")
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            flow.log_prob(x)
            runs.append((time.perf_counter() - t) * 1e3)
        return y, sorted(runs)[1]


def kernel_files(path: str) -> list[str]:
    """The package's files that name the Triton forward kernel (its cubin, or the .so embedding it)."""
    with zipfile.ZipFile(path) as z:
        return [n for n in z.namelist() if KERNEL in z.read(n)]


def check(dry_run: bool, workdir: str) -> dict:
    import torch

    from strnn_fast.export import export

    device = "cpu" if dry_run else "cuda"
    flow, d = build_model(dry_run)
    flow = flow.to(device).eval()
    path = os.path.join(workdir, "straf_log_prob.pt2")
    t = time.perf_counter()
    export(flow, path, method="log_prob", device=device)
    report = {"device": device, "d": d, "export_s": round(time.perf_counter() - t, 1),
              "package_mb": round(os.path.getsize(path) / 2**20, 2), "kernel_files": kernel_files(path)}
    g = torch.Generator().manual_seed(1)
    inputs = {f"b{b}": torch.randn(b, d, generator=g) for b in BATCHES}
    npz, out = os.path.join(workdir, "in.npz"), os.path.join(workdir, "out.npz")
    np.savez(npz, **{k: v.numpy() for k, v in inputs.items()})
    from strnn_fast._artifacts import BLOCK_STRNN_FAST

    proc = subprocess.run([sys.executable, "-I", "-c", BLOCK_STRNN_FAST + _LOADER, path, npz, device, out],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {**report, "ok": False, "error": "load: " + proc.stderr.strip()[-2000:]}
    artifact_ms = json.loads(proc.stdout.strip().splitlines()[-1])
    got = np.load(out)
    report["batches"] = []
    ok = True
    for key, x in inputs.items():
        ref, eager_ms = eager(flow, x.to(device), device)
        diff = float(np.abs(got[key] - ref).max())
        close = bool(np.allclose(got[key], ref, rtol=TOLERANCE, atol=TOLERANCE))
        ok &= close
        report["batches"].append({"batch": x.shape[0], "max_abs_diff": diff, "close": close,
                                  "artifact_ms": round(artifact_ms[key], 4), "eager_ms": round(eager_ms, 4)})
    if not dry_run and not report["kernel_files"]:
        ok = False
        report["error"] = "no file of the package names _masked_linear_fwd_kernel"
    return {**report, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU: export for the CPU, tiny model")
    args = parser.parse_args(argv)
    home = None if args.dry_run else cuda_home_fallback()
    if home:
        os.environ["CUDA_HOME"] = home
    with tempfile.TemporaryDirectory(prefix="strnn_export_") as workdir:
        try:
            report = check(args.dry_run, workdir)
        except Exception as err:  # reported as a failed step, with the reason on one line
            traceback.print_exc()  # the whole chain (export's ValueError keeps one line of its cause) for the log
            report = {"ok": False, "error": f"{type(err).__name__}: {err}"[:2000]}
    if home:
        report["cuda_home"] = home  # the wheels' headers, not a toolkit: said, since a link error may follow
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
