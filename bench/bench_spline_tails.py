r"""Float32 round trips of a trained spline StrAF far outside its data: absolute vs relative knot slopes.

For each seed: a random DAG on 12 variables (1-3 parents), a tanh SEM with bimodal noise, 1000
training rows (standardized, float32), a spline StrAF (3 steps, hidden (32, 32), the default
masks) fitted for 25 epochs, then x -> z -> x on 200 held-out rows scaled by 1x-50x: the worst
row's ||x' - x|| / ||x||, and whether log_prob stays finite. "absolute" is the knot-slope rule
of models saved by strnn_fast 0.2.0 (each slope exp(L tanh(raw / L)) on its own), "relative"
the current one (the harmonic mean of the two bins' slopes times a factor in [1/3, 3]).

Run: ``python bench/bench_spline_tails.py`` (one torch thread, about a minute); writes
bench/results/spline_tails.md.
"""
from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import numpy as np
import torch

from strnn_fast.data.adjacency import random_dag
from strnn_fast.flows import StrAF
from strnn_fast.train import fit

SCALES = (1, 10, 20, 50)


def trained(seed: int, rule: str, d: int = 12, n: int = 1200) -> tuple[StrAF, torch.Tensor]:
    rng = np.random.default_rng(seed)
    A = random_dag(d, parents=(1, 3), seed=seed).astype(bool)
    a = rng.uniform(1.0, 2.0, size=(d, d)) * rng.choice([-1, 1], size=(d, d)) * A
    x = np.zeros((n, d))
    for i in range(d):  # random_dag is in topological order
        x[:, i] = np.tanh(x) @ a[i] + rng.choice([-1.0, 1.0], size=n) + 0.3 * rng.standard_normal(n)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    torch.manual_seed(seed)
    flow = StrAF(A, (32, 32), 3, normalizer="spline")
    if rule == "absolute":  # what loading a 0.2.0 file gives: a state without relative_slopes
        for m in flow.modules():
            if hasattr(m, "relative_slopes"):
                m.load_state_dict({})
    fit(flow, x[: n - 200], epochs=25, batch_size=128, patience=None, verbose=False)
    return flow.eval(), torch.from_numpy(x[n - 200:])


def main() -> None:
    torch.set_num_threads(1)
    lines = ["# Float32 round trip x -> z -> x after training, far outside the data", "",
             f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat()}",
             f"- machine: {platform.machine()}, 2-core box, load average {os.getloadavg()[0]:.2f}, torch "
             f"{torch.__version__}, 1 thread", "- command: python bench/bench_spline_tails.py", "",
             "| rule | seed | held-out NLL/dim | " + " | ".join(f"{s}x" for s in SCALES) + " |",
             "|---|---:|---:|" + "---:|" * len(SCALES)]
    for rule in ("absolute", "relative"):
        for seed in (0, 1, 2):
            flow, x = trained(seed, rule)
            cells = []
            with torch.no_grad():
                nll = -flow.log_prob(x).mean().item() / x.shape[1]
                for scale in SCALES:
                    xs = scale * x
                    z, _ = flow.transform(xs)
                    err = ((flow.inverse(z) - xs).norm(dim=1) / xs.norm(dim=1)).max().item()
                    finite = bool(torch.isfinite(flow.log_prob(xs)).all())
                    cells.append(f"{err:.1e}" + ("" if finite else " (log_prob not finite)"))
            lines.append(f"| {rule} | {seed} | {nll:.4f} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    out = Path(__file__).resolve().parent / "results" / "spline_tails.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
