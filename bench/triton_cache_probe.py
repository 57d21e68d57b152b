r"""Would Triton's JIT on the GPU machine reuse sm_90a kernels compiled ahead on a CPU? (issue 20)

Each run is one fresh process sharing ``TRITON_CACHE_DIR`` with the others, and prints how many
cache entries it added (0: the kernel came from the cache, no compile):

    export TRITON_CACHE_DIR=/tmp/probe; unset TRITON_INTERPRET
    python -P bench/triton_cache_probe.py aot 1000    # strnn_fast.kernels.aot's triton.compile(ASTSource)
    python -P bench/triton_cache_probe.py jit 1000    # the JIT path of a launch, batch 1000, d=1024
    python -P bench/triton_cache_probe.py relocate /tmp/moved   # cubin + json only, at another path

"jit" runs ``JITFunction.warmup`` (it compiles but never launches) under a stand-in driver that
reports an sm_90 target, with the bf16 relu forward kernel's arguments at batch M. Results:
bench/results/gpu_stack.md.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path


class FakeHopper:
    """What JITFunction.run asks of the driver before it would launch: device, stream, target."""

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int) -> int:
        return 0

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", 90, 32)


def relocate(src: Path, dst: Path) -> int:
    """Copies a Triton cache to `dst` keeping only each kernel's cubin and metadata, with its group
    files pointing at the new place (they hold absolute paths); returns the bytes kept."""
    shutil.copytree(src, dst)
    kept = 0
    for grp in dst.glob("*/__grp__*.json"):
        paths = json.loads(grp.read_text())["child_paths"]
        keep = {c: str(grp.parent / c) for c in paths if c.endswith((".json", ".cubin"))}
        for c in set(paths) - set(keep):
            (grp.parent / c).unlink()
        grp.write_text(json.dumps({"child_paths": keep}))
        kept += sum(Path(p).stat().st_size for p in keep.values()) + grp.stat().st_size
    return kept


def main(argv: list[str]) -> int:
    mode, arg = argv
    cache = Path(os.environ["TRITON_CACHE_DIR"])
    if mode == "relocate":
        print(f"kept {relocate(cache, Path(arg))} bytes; now run with TRITON_CACHE_DIR={arg}")
        return 0
    import torch
    import triton

    from strnn_fast.kernels.aot import compile_plan, compile_stats

    before = set(os.listdir(cache)) if cache.is_dir() else set()
    v = next(p for p in compile_plan(90) if p["fn"].__name__ == "_masked_linear_fwd_kernel"
             and p["label"]["dtype"] == "bfloat16" and p["label"]["act"] == 1)
    M, N, K = int(arg), 1024, 1024
    t = time.perf_counter()
    if mode == "aot":
        compile_stats(v["fn"], v["signature"], v["constexprs"], arch=90, num_warps=v["num_warps"],
                      num_stages=v["num_stages"], divisible=v["divisible"])
    else:
        from triton.runtime import driver

        driver.set_active(FakeHopper())
        # x, w, b, y, z (bf16), the three index lists (int32), M, N, K, M_KEY, then the strides.
        args = [torch.bfloat16] * 5 + [torch.int32] * 3 + [M, N, K, triton.next_power_of_2(M), K, 1, K, 1, N, 1]
        meta = {k: c for k, c in v["constexprs"].items() if not k.startswith("stride")}
        v["fn"].warmup(*args, grid=(1,), **meta, num_warps=v["num_warps"], num_stages=v["num_stages"])
    added = len(set(os.listdir(cache)) - before)
    print(f"{mode} M={M}: {time.perf_counter() - t:.2f} s, {added} new cache entries")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
