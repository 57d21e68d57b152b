"""CSV output: repr-exact values (formatted in C++), quoted headers that read back as names,
counterfactuals with every digit."""
from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
import torch
from _cli_world import cli as _cli

from strnn_fast.causal import CausalFlow
from strnn_fast.cli._common import stream_csv
from strnn_fast.data import load_table


def test_csv_output_is_repr_exact_with_quoted_headers(tmp_path):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=(50, 3)) * 10.0 ** rng.integers(-30, 30, size=(50, 3)),
                             [[1e6 + 0.01, 1 / 3, 1700000000.123456]]])
    out = tmp_path / "t.csv"
    stream_csv(out, [values[:20], values[20:]], ["a,b", "1", 'q"uote'])
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["a,b", "1", 'q"uote']
    back = np.loadtxt(out, delimiter=",", skiprows=1)
    assert np.array_equal(back, values)  # every float reads back bit for bit


def test_csv_rows_are_exactly_pythons_repr():
    # Random bit patterns cover subnormals, huge and tiny exponents; the edges of repr's layout
    # (positional for exponents -4..15, else d.ddde+XX) are listed.
    from strnn_fast._C import format_csv_rows

    rng = np.random.default_rng(0)
    bits = rng.integers(-2**63, 2**63 - 1, size=60_000, dtype=np.int64).view(np.float64)
    edges = [0.0, -0.0, 1.0, 1e-4, 9.999e-5, 1e-5, 1e15, 1e16, 9999999999999998.0, 123456789012345678.0,
             5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e22, 1e-300, 0.1, 1 / 3, 1e6 + 0.01]
    finite = bits[np.isfinite(bits)]
    values = np.concatenate([finite[:len(finite) // 3 * 3 - 18], edges, rng.normal(size=3000)]).reshape(-1, 3)
    text = format_csv_rows(values).decode()
    assert text == "".join(",".join(map(repr, r)) + "\n" for r in values.tolist())
    assert np.array_equal(np.array([[float(v) for v in line.split(",")] for line in text.splitlines()]), values)
    with pytest.raises(ValueError, match="finite"):
        format_csv_rows(np.array([[1.0, np.nan]]))


def test_numeric_quoted_header_reads_back_as_names(tmp_path):
    out = tmp_path / "t.csv"
    stream_csv(out, [np.array([[1.5, 2.5]])], ["0", "1"])
    x, names = load_table(out)
    assert names == ["0", "1"] and x.tolist() == [[1.5, 2.5]]


def test_counterfactual_keeps_every_digit(tmp_path, capsys):
    torch.manual_seed(0)
    x = np.random.default_rng(1).normal(size=(60, 2)) + [123456.789012345, 0.0]
    model = CausalFlow([("a", "b")], hidden_sizes=(4,), flow_steps=1)
    model.fit(pd.DataFrame(x, columns=["a", "b"]), epochs=1, verbose=False)
    model.save(tmp_path / "c.pt")
    obs = tmp_path / "obs.csv"
    pd.DataFrame(x[:5], columns=["a", "b"]).to_csv(obs, index=False, float_format="%.17g")
    code, _ = _cli(["counterfactual", tmp_path / "c.pt", obs, "--do", "b=1", "-o", tmp_path / "cf.csv"], capsys)
    assert code == 0
    cf = pd.read_csv(tmp_path / "cf.csv", float_precision="round_trip")
    assert np.array_equal(cf["a"].to_numpy(), x[:5, 0])  # a is not a descendant of b: kept exactly
