"""Precision in data units: float64 statistics keep large offsets and timestamps, spreads a float32
model cannot hold are refused, do values are checked against the model dtype."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _cli_world import A2, FIT
from _cli_world import cli as _cli
from _cli_world import write as _write

from strnn_fast.causal import CausalFlow
from strnn_fast.flows import StrAF
from strnn_fast.standardize import Standardized
from _trust_world import FIT_TWO_EPOCHS
from strnn_fast.cli import main


def test_large_offset_keeps_its_spread_through_standardized():
    rng = np.random.default_rng(0)
    x = 1e6 + 0.01 * rng.normal(size=(400, 2))
    base = StrAF(A2, hidden_sizes=(4,), flow_steps=1)
    model = Standardized(base, mean=x.mean(0), std=x.std(0))
    samples = model.sample(500)
    assert samples.dtype == torch.float64 and len(torch.unique(samples[:, 0])) > 450
    # log-density against a float64 reference of the same change of variables
    xt = torch.from_numpy(x[:50])
    z = ((xt - torch.from_numpy(x.mean(0))) / torch.from_numpy(x.std(0))).float()
    expected = base.log_prob(z).double() - np.log(x.std(0)).sum()
    assert torch.allclose(model.log_prob(xt).double(), expected, atol=1e-4, rtol=0)


def test_unix_timestamps_are_not_sampled_on_a_grid(tmp_path, capsys):
    rng = np.random.default_rng(0)
    t = 1.7e9 + rng.normal(size=200) * 30.0
    data = _write(tmp_path / "t.csv", "t,v\n" + "\n".join(f"{a!r},{b!r}" for a, b in zip(t.tolist(), rng.normal(size=200).tolist())))
    graph = _write(tmp_path / "g.csv", "parent,child\nt,v\n")
    assert _cli(["fit", data, "-a", graph, "-o", tmp_path / "m.pt", *FIT], capsys)[0] == 0
    assert _cli(["sample", tmp_path / "m.pt", "-n", "300", "-o", tmp_path / "s.csv"], capsys)[0] == 0
    s = pd.read_csv(tmp_path / "s.csv", float_precision="round_trip")["t"].to_numpy()
    assert len(np.unique(s)) > 290 and np.abs(np.diff(np.sort(s))).min() < 1.0  # not a 128 s grid


@pytest.mark.parametrize("values", [1e-46 * np.arange(1, 41), 5.0 + 1e-15 * np.arange(40)])
def test_spread_no_model_can_represent_is_refused_naming_the_column(tmp_path, capsys, values):
    rows = "\n".join(f"{v!r},{i % 5}" for i, v in enumerate(values.tolist()))
    data = _write(tmp_path / "d.csv", "tiny,ok\n" + rows + "\n")
    graph = _write(tmp_path / "g.csv", "parent,child\nok,tiny\n")
    code, err = _cli(["fit", data, "-a", graph, "-o", tmp_path / "m.pt", *FIT], capsys)
    assert code == 2 and "'tiny'" in err and not (tmp_path / "m.pt").exists()


def test_do_value_beyond_the_model_dtype_is_refused():
    model = CausalFlow([("a", "b")], hidden_sizes=(4,), flow_steps=1)
    model.fit(np.random.default_rng(0).normal(size=(40, 2)), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="do"):
        model.counterfactual(np.zeros((2, 2)), {"a": 1e39})


def test_cli_refuses_values_beyond_float32(tmp_path, abc_files, capsys) -> None:
    data, graph = abc_files
    text = data.read_text().splitlines()
    text[3] = "1e40," + text[3].split(",", 1)[1]
    big = tmp_path / "big.csv"
    big.write_text("\n".join(text) + "\n")
    model = tmp_path / "m.pt"
    assert main(["fit", str(big), "-a", str(graph), *FIT_TWO_EPOCHS, "-o", str(model)]) == 2
    err = capsys.readouterr().err
    assert "big.csv" in err and "'a'" in err and "float32" in err and "Traceback" not in err
    assert not model.exists()
    assert main(["fit", str(data), "-a", str(graph), *FIT_TWO_EPOCHS, "-o", str(model)]) == 0
    capsys.readouterr()
    assert main(["logprob", str(model), str(big)]) == 2
    assert "float32" in capsys.readouterr().err
