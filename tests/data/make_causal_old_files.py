"""Writes the CausalFlow model files of tests/data/ and the answers they gave when written.

Run once at commit b6b9dc4, the last one whose CausalFlow kept its own ``loc``/``scale``/
``context_loc``/``context_scale`` buffers (state-dict keys ``loc``, ``scale``, ``flow.*``, ...);
tests/test_causal_files.py checks that today's code loads them and answers the same.
Not rerun by the tests: the point is files written by the old code.

    python tests/data/make_causal_old_files.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from strnn_fast.causal import CausalFlow

HERE = Path(__file__).parent


def answers(model: CausalFlow, x: torch.Tensor, c: torch.Tensor | None) -> dict[str, np.ndarray]:
    """Every query of ``model`` on the rows ``x`` (and context ``c``), as float64 arrays."""
    kw = {} if c is None else {"context": c}
    one = {} if c is None else {"context": c[0]}
    with torch.no_grad():
        return {
            "x": x.double().numpy(),
            "log_prob": model.log_prob(x, **kw).double().numpy(),
            "transform": model.transform(x, **kw).double().numpy(),
            "inverse": model.inverse(x, **kw).double().numpy(),
            "sample": model.sample(5, seed=0, output="tensor", **one).double().numpy(),
            "do_b": model.interventional_samples({"b": 1.5}, 5, seed=1, output="tensor", **one).double().numpy(),
            "ate": np.array(model.average_treatment_effect("c", {"a": 1.0}, {"a": 0.0}, 50, seed=2, **one)),
            "cf": model.counterfactual(x, {"a": 0.5}, output="tensor", **kw).double().numpy(),
        }


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)) * [2.0, 1.0, 0.5] + [10.0, -3.0, 0.0]
    x[:, 1] += x[:, 0]
    x[:, 2] -= 0.5 * x[:, 1]
    # Covariates that float32 holds exactly: the old code rounded contexts to the flow's dtype
    # before standardizing them (today: standardized in float64 like the variables).
    c = (rng.normal(size=(60, 1)) * 3 + 1).astype(np.float32).astype(np.float64)
    x[:, 0] += c[:, 0]
    rows = torch.as_tensor(x[:6])
    for name, context in (("causal_old", None), ("causal_old_context", c)):
        torch.manual_seed(0)
        options = {"context_features": 1} if context is not None else {}
        model = CausalFlow([("a", "b"), ("b", "c")], hidden_sizes=(4,), flow_steps=1, **options)
        model.fit(x, context=context, epochs=3, verbose=False)
        model.save(HERE / f"{name}.pt")
        crows = None if context is None else torch.as_tensor(context[:6])
        np.savez(HERE / f"{name}_answers.npz", **answers(model, rows, crows))


if __name__ == "__main__":
    main()
