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


# Ahead-of-time compile plan: every kernel variant a GPU run can launch.


_COMPILE_DTYPES = (("bfloat16", "ieee"), ("float16", "ieee"), ("float32", "tf32"), ("float32", "tf32x3"))
# Runtime arguments: (name, kind), kind "p" = data pointer, "i" = int32 index pointer, "u" = uint8
# pointer, "f" = fp32 pointer, "n" = int, "1" = unit stride (the JIT specializes 1 to a constant).
_ARGS = {
    "fwd": "x_ptr:p w_ptr:p b_ptr:p y_ptr:p z_ptr:p row_ptr:i col_idx:i row_order:i M:n N:n K:n M_KEY:n "
           "stride_xm:n stride_xk:1 stride_wn:n stride_wk:1 stride_ym:n stride_yn:1",
    "dx": "dz_ptr:p w_ptr:p dx_ptr:p t_row_ptr:i t_col_idx:i t_row_order:i M:n N:n K:n M_KEY:n "
          "stride_dzm:n stride_dzn:1 stride_wn:n stride_wk:1 stride_dxm:n stride_dxk:1",
    "dw": "dz_ptr:p x_ptr:p keep_ptr:u dw_ptr:p ws_ptr:f tile_row:i col_idx:i M:n N:n K:n M_KEY:n CHUNK:n NNZ:n "
          "stride_dzm:n stride_dzn:1 stride_xm:n stride_xk:1 stride_km:n stride_kk:1 stride_dwn:n stride_dwk:1",
    "dw_reduce": "ws_ptr:f keep_ptr:u dw_ptr:p tile_row:i col_idx:i N:n K:n NNZ:n SLICES:n "
                 "stride_km:n stride_kk:1 stride_dwn:n stride_dwk:1",
    "act": "dy_ptr:p a_ptr:p dz_ptr:p dbp_ptr:f M:n N:n stride_dym:n stride_dyn:1 stride_am:n stride_an:1 "
           "stride_dzm:n stride_dzn:1",
}


def _variant(kind: str, dtype: str, precision: str, arch: int, const: dict, warps: int, stages: int) -> dict:
    from .masked_linear import _KERNELS, _masked_linear_bwd_act_kernel, _masked_linear_bwd_dw_reduce_kernel

    kernels = {**_KERNELS, "dw_reduce": _masked_linear_bwd_dw_reduce_kernel, "act": _masked_linear_bwd_act_kernel}
    ptr = {"p": "*" + triton_dtype(dtype), "i": "*i32", "u": "*u8", "f": "*fp32"}
    signature, constexprs, divisible = {}, dict(const), []
    for item in _ARGS[kind].split():
        name, k = item.split(":")
        if k == "1":
            constexprs[name] = 1
            continue
        signature[name] = ptr.get(k, "i32")
        if k != "n" or name.startswith("stride") or name in ("N", "K", "M_KEY"):
            divisible.append(name)  # aligned pointers, widths and row strides, as at d = 1024
    return {"fn": kernels[kind], "signature": signature, "constexprs": constexprs, "arch": arch,
            "num_warps": warps, "num_stages": stages, "divisible": tuple(divisible),
            "label": {"dtype": dtype, "precision": precision, "act": const.get("ACT", 0),
                      "block_m": const.get("BLOCK_M", 0)}}


def compile_plan(arch: int = 90, full: bool = False, block: tuple[int, int] = (64, 64)) -> list[dict]:
    r"""Keyword arguments of :func:`compile_stats` for the kernel variants (every variant a GPU run can launch).

    sm_90a (default, sized for a CI budget of two minutes on two cores): every autotune config of
    fwd, dX and dW once per dtype (bf16, fp16, fp32 as TF32, fp32 as tf32x3) with relu; every
    activation of the forward and of the activation-backward kernel in bf16, and gelu (the
    heaviest) in the other dtypes, with one config; dW's split variant and its reduction once
    per dtype. sm_80: fwd, dX and dW once in bf16 and TF32 (no tf32x3: cuBLAS runs exact fp32
    there). ``full`` crosses every config, dtype and
    activation. Configs the autotuner prunes (:func:`config_fits`) are left out.

    Example:
        >>> plan = compile_plan(90)
        >>> sorted({p["fn"].__name__ for p in plan})[0]
        '_masked_linear_bwd_act_kernel'
    """
    from .masked_linear import _ACT_TILE, _NEEDS_Z, ACTIVATION_CODES, CONFIGS, SHARED_LIMIT, config_fits

    bn, bk = block
    limit = SHARED_LIMIT[arch]
    plan = []
    for dtype, prec in _COMPILE_DTYPES:
        if arch < 90 and (prec == "tf32x3" or dtype == "float16"):
            continue  # cuBLAS runs exact fp32 before Hopper; fp16 compiles as bf16 does there
        size = 4 if dtype == "float32" else 2
        base = {"PRECISION": prec, "BLOCK_N": bn, "BLOCK_K": bk}
        all_acts = full or dtype == "bfloat16"
        acts = list(ACTIVATION_CODES.values()) if all_acts else [0, 5]
        for kind in ("fwd", "dx", "dw"):
            configs = [c for c in CONFIGS[kind] if config_fits(kind, c, block, size, prec, limit)]
            if arch != 90:
                configs = configs[1:2] or configs[:1]
            for i, (bm, warps, stages) in enumerate(configs):
                const = {**base, "BLOCK_M": bm}
                if kind == "dx":
                    plan.append(_variant(kind, dtype, prec, arch, const, warps, stages))
                elif kind == "dw":
                    for split in (False, True) if full or i == 1 else (False,):
                        plan.append(_variant(kind, dtype, prec, arch, {**const, "HAS_KEEP": True, "SPLIT": split},
                                             warps, stages))
                else:
                    for act in acts if (full or i == 1) and arch == 90 else [1]:
                        if prec == "tf32x3" and act not in (1, 5):
                            continue
                        plan.append(_variant(kind, dtype, prec, arch,
                                             {**const, "HAS_BIAS": True, "SAVE_Z": act in _NEEDS_Z, "ACT": act},
                                             warps, stages))
        if prec == "tf32x3" or arch < 90:
            continue  # the elementwise kernels have no dot: precision and arch change nothing of note
        for act in acts if arch == 90 else [5]:
            plan.append(_variant("act", dtype, prec, arch, {"ACT": act, "NEED_DB": True,
                                                            "BLOCK_M": _ACT_TILE[True][0], "BLOCK_N": _ACT_TILE[True][1]},
                                 4, 1))
        plan.append(_variant("dw_reduce", dtype, prec, arch, {"HAS_KEEP": True, "BLOCK_N": bn, "BLOCK_K": bk}, 4, 1))
    return plan


def _compile_one(job: tuple[int, bool, int]) -> dict:
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
    """Compiles :func:`compile_plan` and prints one JSON line per variant."""
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
