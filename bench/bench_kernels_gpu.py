r"""GPU benchmark of the block-sparse StrNN kernels against the dense baseline (issues 9 and 13).

Run by ``bash bench/gpu_check.sh`` on the GPU machine (after ``pip install --no-build-isolation
--no-deps .``), or alone from the repository root:

    python -P bench/bench_kernels_gpu.py --out bench/results/gpu --budget 300
    python -P bench/bench_kernels_gpu.py --dry-run --out /tmp/dry     # CPU, Triton interpreter, ~20 s
    python -P bench/bench_kernels_gpu.py --prepare-cache               # CPU: reorder d=4096 once, ~15 min

It imports the *installed* package (never the source tree, which lacks the compiled ``_C``).

Network: d inputs -> 4d -> 4d -> d outputs, relu, masks from the factorizer (MADE: "made"),
hidden units reordered once for 64 x 64 tiles (sweeps capped at d >= 4096, where reordering is
slow), weights masked at rest. Each (structure, d) network is built once on the CPU and copied
to every dtype. Points run in priority order under a wall-clock budget the script enforces: bf16
at batch 4096 for d = 1024, 4096, 256, then fp16, then fp32, then batch 256; a point whose build
would not fit the remaining budget is skipped and recorded as such. Results are rewritten after
every point (a kill still leaves data):

- ``kernels_gpu.json``: ``{"device", "driver", "torch", "triton", "date", "points": [{"structure",
  "d", "hidden", "batch", "dtype", "tile_density", "fwd_ms": {"reference", "baseline", "bsr",
  "triton", "auto"}, "fwd_bwd_ms": {"reference", "baseline", "triton", "auto"}}], ...}``;
- ``kernels_gpu.md``: the same as a table with speedups over the baseline, and the issue's checks;
- ``inference`` in the JSON (last, if budget remains): the frozen bf16 model with a CUDA graph at
  batch 1 and 256, d=1024, hidden (4096, 4096), against the un-frozen dense model and "auto".

Methods: reference = W * M at every call, then F.linear; baseline = W ⊙ M precomputed, then
F.linear (cuBLAS); bsr = torch BSR of W ⊙ M (forward only); triton = FastStrNN backend="triton";
auto = backend="auto". Medians of ``triton.testing.do_bench`` (CUDA) on random normal inputs,
never zeros; the dry run times three perf_counter runs (plumbing only, not a measurement).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STRUCTURES = ("made", "banded", "dag", "blocks")
FWD_METHODS = ("reference", "baseline", "bsr", "triton", "auto")
TRAIN_METHODS = ("reference", "baseline", "triton", "auto")
# Seconds to build one network by d (factorize + reorder), measured on 2 busy CPU cores: d=1024
# 4-13 s; d=4096 "dag" 57 s + 134 s (one reorder sweep), "made" 117 s + 123 s, or the
# factorization alone with cached permutations. On the GPU machine the d=4096 estimate scales its
# own d=1024 build of the same structure. A build that would not fit the remaining budget is skipped and noted.
BUILD_SECONDS = {256: 3, 1024: 15, 4096: 250}
BUILD_SECONDS_CACHED = {4096: 90}
CACHE = Path(__file__).resolve().parent / "results" / "reorder_cache"


def adjacency(structure: str, d: int) -> np.ndarray:
    """(d x d) adjacency of a benchmark structure, from strnn_fast.data's generators."""
    from strnn_fast import data

    if structure == "made":
        return data.full_triangle(d)
    if structure == "banded":  # like pixels: the previous d/32 variables
        return data.banded(d, max(4, d // 32))
    if structure == "dag":
        return data.random_dag(d, parents=(2, 5), seed=0)
    if structure == "blocks":  # communities of about 32, a few links between them
        return data.block_graph(d, max(1, d // 32), p_in=0.5, p_out=2.0 / d, seed=0)
    raise ValueError(f"unknown structure {structure!r}; expected one of {STRUCTURES}")


def build(structure: str, d: int, block: tuple[int, int], cache: Path | None = None):
    """The reordered fp32 CPU FastStrNN of one structure, weights masked at rest; (net, info).

    Reordering d=4096 networks takes minutes (measured: 134 s for one sweep of "dag" on two busy
    cores, after a 57 s factorization), so the hidden-unit permutations are cached in `cache`
    (``<structure>_d<d>_<bo>x<bi>.npz``, a few hundred KB) and reused when the factorizer
    reproduces the same masks (checked by their tile counts before reordering)."""
    import torch

    from strnn_fast import FastStrNN
    from strnn_fast.layout import BlockLayout
    from strnn_fast.reorder import permute_layers, reorder_model

    t0 = time.perf_counter()
    torch.manual_seed(0)
    net = FastStrNN(d, (4 * d, 4 * d), d, adjacency=adjacency(structure, d),
                    opt_type="made" if structure == "made" else "greedy", activation="relu",
                    backend="triton", reorder=False)
    t1 = time.perf_counter()

    def layouts() -> list[BlockLayout]:
        return [BlockLayout.from_mask(l.mask.detach().cpu().numpy(), block) for l in net.layers]

    first = layouts()
    before = [lay.nnz for lay in first]
    total = [lay.grid[0] * lay.grid[1] for lay in first]
    path = cache / f"{structure}_d{d}_{block[0]}x{block[1]}.npz" if cache is not None else None
    source = "reordered"
    if path is not None and path.exists():
        saved = np.load(path)
        if [int(t) for t in saved["tiles_before"]] == before:
            permute_layers(net.layers, [saved[f"perm{i}"].astype(np.int64) for i in range(len(net.layers) - 1)])
            source = f"cached permutations {path.name}"
    if source == "reordered":
        r = reorder_model(net, block=block, sweeps=1 if d >= 4096 else 3)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, tiles_before=np.array(before),
                                **{f"perm{i}": p.astype(np.int32) for i, p in enumerate(r.perms)})
    after = [lay.nnz for lay in layouts()]
    t2 = time.perf_counter()
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(layer.mask)  # the kernels' contract: masked at rest
    info = {"tile_density": sum(after) / sum(total), "tile_density_unordered": sum(before) / sum(total),
            "layer_tile_density": [n / t for n, t in zip(after, total)], "order": source,
            "factorize_s": round(t1 - t0, 2), "reorder_s": round(t2 - t1, 2)}
    return net, info


def timer(cuda: bool):
    """Median milliseconds of fn(): do_bench on CUDA, three perf_counter runs otherwise."""
    if cuda:
        import triton.testing

        return lambda fn, params: float(triton.testing.do_bench(fn, grad_to_none=params, return_mode="median"))

    def cpu(fn, params):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return float(np.median(times))

    return cpu


def methods_of(net, block: tuple[int, int]):
    """Forward callables per method, all computing the same function; the tensors to un-grad."""
    import torch
    import torch.nn.functional as F

    layers = list(net.layers)
    acts = [torch.relu] * (len(layers) - 1) + [lambda v: v]
    masked = [(l.weight * l.mask).detach().requires_grad_() for l in layers]

    def reference(x):
        for l, act in zip(layers, acts):
            x = act(F.linear(x, l.weight * l.mask, l.bias))
        return x

    def baseline(x):
        for w, l, act in zip(masked, layers, acts):
            x = act(F.linear(x, w, l.bias))
        return x

    def with_backend(name):
        def run(x):
            for l in layers:
                l.backend = name
            return net(x)

        return run

    fns = {"reference": reference, "baseline": baseline, "triton": with_backend("triton"), "auto": with_backend("auto")}
    try:
        bsr = [w.detach().to_sparse_bsr(block) for w in masked]

        def bsr_forward(x):
            for w, l, act in zip(bsr, layers, acts):
                x = act(F.linear(x, w, l.bias))
            return x

        fns["bsr"] = bsr_forward
    except Exception as err:  # noqa: BLE001 - a missing baseline is reported, not fatal
        fns["bsr"] = err
    params = [p for l in layers for p in l.parameters()] + masked
    return fns, params


def run_point(net_cpu, info, structure, d, batch, dtype_name, device, bench) -> dict:
    import copy

    import torch

    dtype = getattr(torch, dtype_name)
    net = copy.deepcopy(net_cpu).to(device=device, dtype=dtype)
    block = (64, 64) if device == "cuda" else (16, 16)
    fns, params = methods_of(net, block)
    g = torch.Generator(device=device).manual_seed(batch + d)
    x = torch.randn(batch, d, device=device, generator=g).to(dtype)
    gy = torch.randn(batch, d, device=device, generator=g).to(dtype)
    point = {"structure": structure, "d": d, "hidden": [4 * d, 4 * d], "batch": batch, "dtype": dtype_name,
             "tile_density": info["tile_density"], "fwd_ms": {}, "fwd_bwd_ms": {}, "errors": {},
             "layer_tile_density": info["layer_tile_density"]}
    try:  # "auto" on CUDA uses measured decisions only: measure this network's cases first
        from strnn_fast import dispatch

        dispatch.measure_model(net, batch, ("eval", "train"), dtype)
    except Exception as err:  # noqa: BLE001
        point["errors"]["dispatch"] = f"{type(err).__name__}: {err}"[:300]
    try:  # a fast wrong answer is worse than none: compare with the baseline once
        with torch.no_grad():
            ref = fns["baseline"](x).float()
            err = (fns["triton"](x).float() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)
        point["triton_rel_err"] = float(err)
    except Exception as err:  # noqa: BLE001
        point["errors"]["check"] = f"{type(err).__name__}: {err}"[:300]
    for phase, names in (("fwd_ms", FWD_METHODS), ("fwd_bwd_ms", TRAIN_METHODS)):
        for name in names:
            fn = fns[name]
            try:
                if isinstance(fn, Exception):
                    raise fn
                if phase == "fwd_ms":
                    with torch.no_grad():
                        point[phase][name] = bench(lambda: fn(x), None)
                else:
                    point[phase][name] = bench(lambda: fn(x).backward(gy), params)
            except Exception as err:  # noqa: BLE001 - one failing method must not stop the grid
                point[phase][name] = None
                point["errors"][f"{phase}.{name}"] = f"{type(err).__name__}: {err}"[:300]
    del net, fns, params
    if device == "cuda":
        torch.cuda.empty_cache()
    return point


def inference_point(device: str, bench, d: int, hidden: int, batches: tuple[int, ...]) -> list[dict]:
    """Frozen bf16 model with a CUDA graph vs the un-frozen dense model and "auto" (issue 9)."""
    import torch

    from strnn_fast import FastStrNN
    from strnn_fast.freeze import freeze

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    net = FastStrNN(d, (hidden, hidden), d, adjacency=adjacency("dag", d), backend="dense", reorder=False)
    from strnn_fast.reorder import reorder_model

    reorder_model(net, block=(64, 64) if device == "cuda" else (16, 16), sweeps=1)
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(layer.mask)
    net = net.to(device=device, dtype=dtype).eval()
    rows = []
    for batch in batches:
        x = torch.randn(batch, d, device=device).to(dtype)
        row = {"d": d, "hidden": [hidden, hidden], "batch": batch, "dtype": str(dtype).removeprefix("torch."),
               "ms": {}, "errors": {}}
        cases = {"dense": ("dense", None), "auto": ("auto", None),
                 "frozen_triton_graph": ("triton", batch if device == "cuda" else None),
                 "frozen_auto_graph": ("auto", batch if device == "cuda" else None)}
        for name, (backend, graph) in cases.items():
            try:
                for layer in net.layers:
                    layer.backend = backend
                fn = freeze(net, dtype=dtype, cuda_graph_batch=graph) if name.startswith("frozen") else net
                with torch.no_grad():
                    row["ms"][name] = bench(lambda: fn(x), None)
            except Exception as err:  # noqa: BLE001
                row["ms"][name] = None
                row["errors"][name] = f"{type(err).__name__}: {err}"[:300]
        rows.append(row)
    return rows


def environment(cuda: bool) -> dict:
    import torch
    import triton

    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
           "tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
    if cuda:
        env["device"] = torch.cuda.get_device_name()
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as err:
            env["driver"] = f"unknown ({type(err).__name__})"
    else:
        env["device"] = "none (dry run on CPU, Triton interpreter)"
        env["driver"] = "none"
    return env


def checks(points: list[dict]) -> list[str]:
    """Issue 9's targets: at tile density <= 25%, batch 4096, bf16, d >= 1024: triton forward >= 2.5x
    and forward+backward >= 2x the baseline; auto >= 0.95x the baseline everywhere."""
    lines = []
    for p in points:
        for phase, bar in (("fwd_ms", 2.5), ("fwd_bwd_ms", 2.0)):
            base, tri, auto = (p[phase].get(k) for k in ("baseline", "triton", "auto"))
            where = f"{p['structure']} d={p['d']} batch={p['batch']} {p['dtype']} {phase[:-3]}"
            if p["tile_density"] <= 0.25 and p["batch"] == 4096 and p["dtype"] == "bfloat16" and p["d"] >= 1024:
                ok = bool(base and tri and base / tri >= bar)
                lines.append(f"{'PASS' if ok else 'FAIL'} triton >= {bar}x baseline: {where} -> "
                             f"{base / tri if base and tri else None}")
            if not (base and auto and base / auto >= 0.95):
                lines.append(f"FAIL auto >= 0.95x baseline: {where} -> {base / auto if base and auto else None}")
    return lines


# Largest relative error (max |triton - baseline| / max |baseline|) of a correct network, by dtype:
# an order of magnitude above the rounding of three layers, so only a wrong kernel passes it.
REL_ERR_LIMIT = {"bfloat16": 5e-2, "float16": 5e-2, "float32": 1e-2}


def failures(points: list[dict], inference: list[dict]) -> list[str]:
    """What the run failed to measure of the kernels, one line each: a point with a kernel error
    (the check, the dispatch measurement, triton or auto), no Triton time, or a wrong answer; an
    inference row with an error; no point at all. Empty when the run is a success.

    >>> failures([{"structure": "made", "d": 32, "batch": 16, "dtype": "float32", "errors": {},
    ...            "fwd_ms": {"triton": 1.0}, "fwd_bwd_ms": {"triton": None}, "triton_rel_err": 0.0}], [])
    ['made d=32 batch=16 float32: no triton time (fwd_bwd_ms)']
    """
    lines = [] if points else ["no point measured"]
    for p in points:
        where = f"{p['structure']} d={p['d']} batch={p['batch']} {p['dtype']}"
        why = [f"{k}: {v}" for k, v in p["errors"].items()
               if k in ("check", "dispatch") or k.endswith((".triton", ".auto"))]
        why += [f"no triton time ({phase})" for phase in ("fwd_ms", "fwd_bwd_ms") if p[phase].get("triton") is None]
        err = p.get("triton_rel_err")
        if err is not None and not err <= REL_ERR_LIMIT[p["dtype"]]:
            why.append(f"triton_rel_err {err:.3g} > {REL_ERR_LIMIT[p['dtype']]}")
        lines += [f"{where}: {w}" for w in why]
    for r in inference:
        lines += [f"inference d={r['d']} batch={r['batch']} {k}: {v}" for k, v in r["errors"].items()]
    return lines


def markdown(env: dict, points: list[dict], notes: list[str], inference: list[dict]) -> str:
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    ratio = lambda a, b: "—" if not a or not b else f"{a / b:.2f}x"  # noqa: E731
    out = ["# Block-sparse StrNN kernels vs baselines", ""] + [f"- {k}: {v}" for k, v in env.items()]
    out += ["", "Median ms. Speedup = baseline / method (W ⊙ M precomputed, then F.linear).", "",
            "| structure | d | batch | dtype | tile density | fwd: ref | base | bsr | triton | auto | triton x | auto x "
            "| fwd+bwd: ref | base | triton | auto | triton x | auto x |", "|" + "---|" * 18]
    for p in points:
        f, t = p["fwd_ms"], p["fwd_bwd_ms"]
        out.append(f"| {p['structure']} | {p['d']} | {p['batch']} | {p['dtype']} | {p['tile_density']:.3f} | "
                   + " | ".join(fmt(f.get(m)) for m in FWD_METHODS)
                   + f" | {ratio(f.get('baseline'), f.get('triton'))} | {ratio(f.get('baseline'), f.get('auto'))} | "
                   + " | ".join(fmt(t.get(m)) for m in TRAIN_METHODS)
                   + f" | {ratio(t.get('baseline'), t.get('triton'))} | {ratio(t.get('baseline'), t.get('auto'))} |")
    if inference:
        out += ["", "## Production inference (frozen, CUDA graph)", "", "| d | hidden | batch | dtype | "
                + " | ".join(inference[0]["ms"]) + " |", "|" + "---|" * (4 + len(inference[0]["ms"]))]
        for r in inference:
            out.append(f"| {r['d']} | {r['hidden']} | {r['batch']} | {r['dtype']} | "
                       + " | ".join(fmt(v) for v in r["ms"].values()) + " |")
    out += ["", "## Checks and notes", ""] + [f"- {c}" for c in notes or ["none"]]
    return "\n".join(out) + "\n"


def plan(dtypes, ds, batches, structures) -> list[tuple[str, int, int, str]]:
    """(dtype, d, batch, structure) in priority order: dtype, then the first batch over every d,
    then the other batches."""
    order = []
    for batch in batches:
        for dtype in dtypes:
            for d in ds:
                order += [(dtype, d, batch, s) for s in structures]
    return order


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU in the Triton interpreter")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default $OUT, else bench/results/gpu)")
    ap.add_argument("--budget", type=float, default=300.0, help="wall-clock seconds for the whole benchmark")
    ap.add_argument("--structures", nargs="+", default=list(STRUCTURES), choices=STRUCTURES)
    ap.add_argument("--d", nargs="+", type=int, default=[1024, 4096, 256])
    ap.add_argument("--batch", nargs="+", type=int, default=[4096, 256])
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16", "float32"],
                    choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--no-inference", action="store_true", help="skip the frozen-model latency step")
    ap.add_argument("--prepare-cache", action="store_true",
                    help=f"only build the --d networks on the CPU and cache their permutations in {CACHE}")
    args = ap.parse_args(argv)
    if args.prepare_cache:
        for d in args.d:
            for structure in args.structures:
                _, info = build(structure, d, (64, 64), CACHE)
                print(f"{structure} d={d}: {info}", flush=True)
        return 0
    # A kill by `timeout` (SIGTERM) unwinds like an exception: no kernels_gpu.json.tmp is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    start = time.monotonic()
    deadline = start + args.budget
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before strnn_fast.kernels is imported
        args.d, args.batch, args.dtypes = [32], [16], ["float32"]
        args.structures = args.structures[:2]
    import torch

    torch.set_num_threads(min(8, os.cpu_count() or 1))
    cuda = not args.dry_run
    if cuda and not torch.cuda.is_available():
        ap.error("needs a CUDA GPU; use --dry-run to check the script on the CPU")
    device = "cuda" if cuda else "cpu"
    out = args.out or Path(os.environ.get("OUT") or "bench/results/gpu")
    out.mkdir(parents=True, exist_ok=True)
    block = (64, 64) if cuda else (16, 16)
    bench = timer(cuda)
    env = environment(cuda)
    points: list[dict] = []
    notes: list[str] = []
    builds: dict[tuple[str, int], tuple] = {}
    inference: list[dict] = []

    def write() -> None:
        all_notes = [f"FAILED: {f}" for f in failures(points, inference) if points or inference] + checks(points) + notes
        if not cuda:
            all_notes.insert(0, "dry run: CPU interpreter timings check the plumbing, they measure nothing")
        doc = {**env, "points": points, "inference": inference, "notes": all_notes,
               "builds": {f"{s} d={d}": info for (s, d), (_, info) in builds.items()},
               "elapsed_s": round(time.monotonic() - start, 1), "budget_s": args.budget}
        tmp = out / "kernels_gpu.json.tmp"  # gpu_check.sh removes it after a kill (at most 6 files in --out)
        try:
            tmp.write_text(json.dumps(doc, indent=1))
            tmp.replace(out / "kernels_gpu.json")
        finally:
            tmp.unlink(missing_ok=True)
        (out / "kernels_gpu.md").write_text(markdown(env, points, all_notes, inference))
        # The measured decisions "auto" used: load with strnn_fast.dispatch.load_decisions or
        # STRNN_FAST_DISPATCH_FILE (committed as strnn_fast/dispatch_decisions.json after a GPU run).
        from strnn_fast import dispatch

        dispatch.save_decisions(out / "dispatch_decisions.json", device="cuda" if cuda else "cpu")

    write()
    for dtype, d, batch, structure in plan(args.dtypes, args.d, args.batch, args.structures):
        left = deadline - time.monotonic()
        key = (structure, d)
        if key not in builds:
            cached = (CACHE / f"{structure}_d{d}_{block[0]}x{block[1]}.npz").exists()
            need = (BUILD_SECONDS_CACHED if cached else BUILD_SECONDS).get(d, BUILD_SECONDS.get(d, 60)) if cuda else 0
            small = builds.get((structure, 1024), (None, {}))[1]
            if cuda and d == 4096 and "factorize_s" in small:  # scale this machine's d=1024 build (x30-35 here)
                need = 35 * small["factorize_s"] + (0 if cached else 40 * small["reorder_s"])
            if need + 20 > left:
                notes.append(f"skipped {structure} d={d}: its build (~{need} s) does not fit the {left:.0f} s left")
                continue
            try:
                builds[key] = build(structure, d, block, CACHE if cuda else None)
            except Exception as err:  # noqa: BLE001
                notes.append(f"build failed {structure} d={d}: {type(err).__name__}: {err}"[:300])
                builds[key] = (None, {})
        net, info = builds[key]
        if net is None:
            continue
        if deadline - time.monotonic() < 15:
            notes.append(f"budget spent before {structure} d={d} batch={batch} {dtype}")
            break
        points.append(run_point(net, info, structure, d, batch, dtype, device, bench))
        p = points[-1]
        print(f"{structure:7s} d={d:5d} batch={batch:5d} {dtype:9s} density={p['tile_density']:.3f} "
              f"fwd base/triton={p['fwd_ms'].get('baseline')}/{p['fwd_ms'].get('triton')} "
              f"({time.monotonic() - start:.0f} s)", flush=True)
        write()
    if not args.no_inference:
        if deadline - time.monotonic() > (60 if cuda else 0):
            try:
                d, hidden, batches = (1024, 4096, (1, 256)) if cuda else (32, 64, (1, 16))
                inference = inference_point(device, bench, d, hidden, batches)
            except Exception as err:  # noqa: BLE001
                notes.append(f"inference step failed: {type(err).__name__}: {err}"[:300])
        else:
            notes.append("inference step skipped: budget spent")
    write()
    failed = failures(points, inference)
    if failed:  # the last line: gpu_check.sh copies it into its summary
        print("\n".join(failed))
        print(f"FAILED: {len(failed)} failure(s) in {len(points)} points and {len(inference)} inference rows, "
              f"results in {out}")
        return 1
    print(f"{len(points)} points and {len(inference)} inference rows, results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
