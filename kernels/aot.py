r"""Ahead-of-time compilation of the Triton kernels for a GPU that this machine need not have.

``triton.compile`` with a :class:`GPUTarget` lowers a ``@triton.jit`` function to PTX and,
through the ``ptxas`` shipped in the Triton wheel, to a cubin for that GPU, with no driver.
:func:`compile_stats` reads back what matters for speed: registers, shared memory, stack
(local-memory spills), whether the dots became Hopper ``wgmma`` instructions, and how deep the
K loop is pipelined. This is how a CPU-only CI guards the GPU code between GPU runs
(``tests/test_kernels_compile.py``, table in ``bench/results/kernels_compile.md``).

The kernels must be plain ``JITFunction`` objects: run this without ``TRITON_INTERPRET=1``
(``python -m strnn_fast.kernels.aot`` refuses to run with it; the test runs it in a subprocess
whose environment lacks it).

Command line (the table in ``bench/results/kernels_compile.md``)::

    env -u TRITON_INTERPRET python -P -m strnn_fast.kernels.aot --jobs 2 --markdown table.md > rows.jsonl
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

# Shared memory a block may use (dynamic + static), bytes: sm_80 (A100) and sm_90 (H100).
SHARED_LIMIT = {80: 166912, 90: 232448}
_TORCH_TO_TRITON = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


@dataclass
class CompileStats:
    """What one compiled kernel variant costs on the target GPU."""

    kernel: str
    arch: int
    dtype: str
    precision: str
    act: int
    block_m: int
    num_warps: int
    num_stages: int
    regs: int
    stack: int  # bytes of local memory per thread: > 0 means spills
    shared: int  # bytes of shared memory per block (dynamic, from Triton's metadata)
    wgmma: bool
    async_wait: int  # largest `async_wait num` in TTGIR: loads kept in flight across iterations
    cubin_hash: str
    seconds: float


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers, stack bytes) of the cubin's kernel, from the wheel's cuobjdump."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    m = re.search(r"REG:(\d+)\s+STACK:(\d+)", out)
    if m is None:
        raise RuntimeError(f"cannot read cuobjdump's resource usage:\n{out}")
    return int(m.group(1)), int(m.group(2))


def compile_stats(fn: Any, signature: dict[str, str], constexprs: dict[str, Any], *, arch: int = 90,
                  num_warps: int = 4, num_stages: int = 3, divisible: tuple[str, ...] = (),
                  label: dict[str, Any] | None = None) -> CompileStats:
    r"""Compiles one variant of a ``@triton.jit`` kernel for ``sm_<arch>`` and measures it.

    Arguments:
        fn: the JITFunction (not interpreted).
        signature: Triton type of every runtime argument ("*bf16", "*i32", "i32", ...).
        constexprs: values of the ``tl.constexpr`` arguments.
        arch: compute capability times ten; 90 compiles for sm_90a.
        num_warps, num_stages: the launch configuration, as in ``triton.Config``.
        divisible: arguments known to be multiples of 16 (pointers and strides of contiguous
            tensors of aligned width), as the JIT specializes them at a real launch.
        label: dtype / precision / act / block_m to record in the result.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = dict(signature)
    sig.update({k: "constexpr" for k in constexprs})
    attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k in divisible}
    start = time.perf_counter()
    compiled = triton.compile(ASTSource(fn, sig, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    seconds = time.perf_counter() - start
    regs, stack = _resource_usage(compiled.asm["cubin"])
    waits = [int(n) for n in re.findall(r"async_wait[^\n]*num = (\d+)", compiled.asm["ttgir"])]
    label = label or {}
    return CompileStats(
        kernel=fn.__name__, arch=arch, dtype=label.get("dtype", ""), precision=label.get("precision", ""),
        act=int(label.get("act", 0)), block_m=int(label.get("block_m", constexprs.get("BLOCK_M", 0))),
        num_warps=num_warps, num_stages=num_stages, regs=regs, stack=stack, shared=int(compiled.metadata.shared),
        wgmma="wgmma" in compiled.asm["ptx"], async_wait=max(waits, default=0),
        cubin_hash=hashlib.sha1(compiled.asm["cubin"]).hexdigest()[:12], seconds=round(seconds, 2),
    )


def triton_dtype(dtype: str) -> str:
    """Triton's name of a torch dtype name: "bfloat16" -> "bf16"."""
    return _TORCH_TO_TRITON[dtype]


def _compile_one(job: tuple[int, bool, int]) -> dict:
    from .masked_linear import compile_plan

    arch, full, index = job
    item = compile_plan(arch, full=full)[index]
    try:
        return asdict(compile_stats(**item))
    except Exception as err:  # reported, not raised: the caller asserts on every line
        return {"kernel": item["fn"].__name__, "arch": arch, **item["label"], "num_warps": item["num_warps"],
                "num_stages": item["num_stages"], "error": f"{type(err).__name__}: {err}"[:2000]}


def summary_table(rows: list[dict]) -> str:
    r"""Markdown table per kernel, arch, dtype and precision: variants, registers, shared memory,
    stack (spills), wgmma and pipelining depth, over every compiled variant.

    Example:
        >>> row = dict(kernel="k", arch=90, dtype="bfloat16", precision="ieee", regs=64, shared=4096, stack=0,
        ...            wgmma=True, async_wait=2)
        >>> summary_table([row]).splitlines()[2]
        '| k | sm_90 | bfloat16 | ieee | 1 | 64 | 4.0 | 0 | yes | 2 |'
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "error" not in r:
            groups.setdefault((r["kernel"], r["arch"], r["dtype"], r["precision"]), []).append(r)
    lines = ["| kernel | arch | dtype | precision | variants | registers | shared KiB | stack B (spills) | wgmma "
             "| async_wait (pipelined loads) |", "|---|---|---|---|---|---|---|---|---|---|"]
    span = lambda vals: f"{min(vals)}" if min(vals) == max(vals) else f"{min(vals)}-{max(vals)}"  # noqa: E731
    for (kernel, arch, dtype, prec), rs in sorted(groups.items()):
        wg = {r["wgmma"] for r in rs}
        lines.append(f"| {kernel} | sm_{arch} | {dtype} | {prec} | {len(rs)} | {span([r['regs'] for r in rs])} | "
                     f"{span([round(r['shared'] / 1024, 1) for r in rs])} | {span([r['stack'] for r in rs])} | "
                     f"{'yes' if wg == {True} else 'no' if wg == {False} else 'some'} | "
                     f"{span([r['async_wait'] for r in rs])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Compiles :func:`strnn_fast.kernels.masked_linear.compile_plan` and prints one JSON line per variant."""
    ap = argparse.ArgumentParser(description="AOT-compile the masked_linear kernels for sm_90a / sm_80")
    ap.add_argument("--full", action="store_true", help="every config x dtype x activation (slow)")
    ap.add_argument("--arch", nargs="+", type=int, default=[90, 80])
    ap.add_argument("--jobs", type=int, default=2, help="compiler processes")
    ap.add_argument("--markdown", type=str, default=None, help="also write the summary table here")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("run without TRITON_INTERPRET=1: the interpreter has nothing to compile")
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from .masked_linear import compile_plan

    jobs = [(arch, args.full, i) for arch in args.arch for i in range(len(compile_plan(arch, full=args.full)))]
    rows = []
    # fork: the workers inherit the imported kernels; nothing here touches a GPU driver.
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=multiprocessing.get_context("fork")) as pool:
        for row in pool.map(_compile_one, jobs):
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(summary_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
