"""Model files: round trips of every allow-listed class, arrays stored as tensors, and hostile files.

A crafted pickle must never run (a marker file must not appear), legacy pickled files load only
with ``trusted=True``, and every tampered, truncated or foreign file raises a ValueError that
names the file.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from _trust_world import A3, api_refuses, check_api_refuses, Payload, small_flow
from tolerances import tolerance

from strnn_fast import FastStrNN
from strnn_fast.causal import CausalFlow
from strnn_fast.cli import main
from strnn_fast.density import StrNNDensityEstimator
from strnn_fast.flows import ARF, GNF, StrAF
from strnn_fast._config_codec import decode, encode
from strnn_fast.serialization import ALLOWED_CLASSES, FORMAT, build, load
from strnn_fast.standardize import Standardized


def _models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    causal = CausalFlow([("a", "b"), ("b", "c")], hidden_sizes=(6,), flow_steps=1)
    causal.fit(torch.randn(40, 3).double().numpy(), epochs=1, verbose=False)
    return {
        "FastStrNN": FastStrNN(3, (7, 5), 6, adjacency=A3),
        "StrNNDensityEstimator": StrNNDensityEstimator(A3, hidden_sizes=(6,), data_type="gaussian"),
        "StrAF": StrAF(A3, hidden_sizes=(6,), flow_steps=2, names=["x", "y", "z"]),
        "ARF": ARF(3, hidden_sizes=(6,), flow_steps=1),
        "GNF": GNF(A3, hidden_sizes=(6,), flow_steps=1),
        "CausalFlow": causal,
        "Standardized": Standardized(StrAF(A3, hidden_sizes=(6,), flow_steps=1), mean=[1.0, -2.0, 3.0],
                                     std=[2.0, 0.5, 1.5], names=["p", "q", "r"]),
    }


def _out(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x) if isinstance(model, FastStrNN) else model.log_prob(x)


@pytest.mark.parametrize("name", list(_models()))
def test_round_trip_is_exact(tmp_path, name) -> None:
    model = _models()[name]
    path = tmp_path / "m.pt"
    model.save(path)
    back = load(path)
    assert type(back) is type(model)
    x = torch.randn(5, 3) + 0.3
    for a, b in zip(model.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
    torch.testing.assert_close(_out(back, x), _out(model, x), **tolerance("exact"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary left behind


def test_float64_model_round_trips_bit_for_bit(tmp_path) -> None:
    model = StrAF(A3, hidden_sizes=(5,), flow_steps=1).double()
    model.save(tmp_path / "m.pt")
    back = load(tmp_path / "m.pt")
    x = torch.randn(4, 3, dtype=torch.float64)
    assert back.log_prob(x).dtype == torch.float64
    assert torch.equal(back.log_prob(x), model.log_prob(x))


def test_arrays_in_the_config_are_tensors_not_json_lists(tmp_path) -> None:
    model = FastStrNN(3, (7,), 3, adjacency=A3, precomputed_masks=None)
    model.save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["format"] == FORMAT
    header = json.loads(payload["header"])
    assert header["class"] == "FastStrNN"
    assert set(header["config"]["adjacency"]) >= {"__tensor__", "kind"}
    ref = header["config"]["adjacency"]["__tensor__"]
    assert torch.equal(payload["tensors"][ref], torch.from_numpy(A3))


def test_encode_decode_numpy_torch_scipy_nested() -> None:
    rng = np.random.default_rng(0)
    config = {
        "a": rng.random((3, 4)), "u": np.arange(6, dtype=np.uint32).reshape(2, 3), "b": np.eye(3, dtype=bool),
        "t": torch.randn(2, 5, dtype=torch.float64),
        "nested": [{"mask": rng.integers(0, 2, (4, 2)).astype(np.uint8)}, [np.ones(3), 2, "s"]],
        "csr": sp.csr_array(rng.integers(0, 2, (5, 4))), "coo_matrix": sp.coo_matrix(np.eye(3)),
        "lists": [[0, 1], [1, 0]], "sizes": [8, 8], "tuple": (1, 2), "none": None, "f": 0.5,
    }
    tensors: dict[str, torch.Tensor] = {}
    encoded = encode(config, tensors, "config")
    text = json.dumps(encoded)  # JSON-friendly
    assert len(text) < 2000 and all(isinstance(t, torch.Tensor) for t in tensors.values())
    back = decode(json.loads(text), tensors, "f")
    for key in ("a", "u", "b"):
        assert isinstance(back[key], np.ndarray) and back[key].dtype == config[key].dtype
        assert np.array_equal(back[key], config[key])
    assert torch.equal(back["t"], config["t"])
    assert np.array_equal(back["nested"][0]["mask"], config["nested"][0]["mask"])
    assert np.array_equal(back["nested"][1][0], np.ones(3)) and back["nested"][1][1:] == [2, "s"]
    assert sp.issparse(back["csr"]) and back["csr"].format == "csr"
    assert np.array_equal(back["csr"].toarray(), config["csr"].toarray())
    assert isinstance(back["coo_matrix"], sp.coo_matrix)
    assert back["lists"] == [[0, 1], [1, 0]] and back["sizes"] == [8, 8] and back["tuple"] == (1, 2)
    assert back["none"] is None and back["f"] == 0.5


def test_unstorable_config_values_are_refused() -> None:
    with pytest.raises(TypeError, match="config"):
        encode({"f": lambda: 1}, {}, "config")
    with pytest.raises(ValueError, match="nan"):
        encode({"f": float("nan")}, {}, "config")
    with pytest.raises(TypeError, match="object"):
        encode({"a": np.array([object()])}, {}, "config")


def test_build_uses_the_allow_list_only() -> None:
    for name in ("os:system", "strnn_fast.train:fit", "builtins.eval", "subprocess:Popen", "strnn_fast.nn:MaskedLinear"):
        with pytest.raises(ValueError, match="unknown model class"):
            build(name, {})
    assert set(ALLOWED_CLASSES) >= {"FastStrNN", "StrAF", "CausalFlow", "Standardized"}
    # The old "module:QualName" spelling maps onto the allow-list.
    assert isinstance(build("strnn_fast.flows.straf:StrAF", {"adjacency": [[0, 0], [1, 0]],
                                                             "hidden_sizes": [4], "flow_steps": 1}), StrAF)


# ------------------------------------------------------------------------------ hostile files

def _crafted_files(tmp_path, marker) -> dict[str, os.PathLike]:
    files = {}
    files["raw_pickle"] = tmp_path / "raw.pt"
    files["raw_pickle"].write_bytes(pickle.dumps({"format": "strnn_fast-model-v1", "x": Payload(marker)}))
    files["torch_zip"] = tmp_path / "zip.pt"
    torch.save({"format": "strnn_fast-model-v1", "class": "strnn_fast.flows.straf:StrAF",
                "config": Payload(marker), "state_dict": {}}, files["torch_zip"])
    files["in_tensors"] = tmp_path / "tensors.pt"
    torch.save({"format": FORMAT, "header": "{}", "tensors": {"x": Payload(marker)}}, files["in_tensors"])
    return files


@pytest.mark.parametrize("kind", ["raw_pickle", "torch_zip", "in_tensors"])
def test_crafted_pickle_never_runs(tmp_path, kind) -> None:
    marker = tmp_path / "PWNED"
    path = _crafted_files(tmp_path, marker)[kind]
    with pytest.raises(ValueError, match=str(path.name)):
        load(path)
    assert not marker.exists()


def test_the_marker_check_can_fail(tmp_path) -> None:
    """The crafted file really runs its payload when unpickled without weights_only."""
    marker = tmp_path / "PWNED"
    path = _crafted_files(tmp_path, marker)["torch_zip"]
    with pytest.raises(ValueError):
        load(path, trusted=True)  # trusted: the payload runs, then the config is refused
    assert marker.exists()


@pytest.mark.parametrize("command", ["sample", "logprob", "intervene", "counterfactual"])
def test_crafted_pickle_never_runs_through_the_cli(tmp_path, capsys, command) -> None:
    marker = tmp_path / "PWNED"
    path = _crafted_files(tmp_path, marker)["torch_zip"]
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n")
    argv = {"sample": ["sample", str(path), "-n", "3", "-o", str(tmp_path / "o.csv")],
            "logprob": ["logprob", str(path), str(data)],
            "intervene": ["intervene", str(path), "--do", "a=1"],
            "counterfactual": ["counterfactual", str(path), str(data), "--do", "a=1", "-o", str(tmp_path / "o.csv")]}
    assert main(argv[command]) == 2
    err = capsys.readouterr().err
    assert "zip.pt" in err and "Traceback" not in err and "trust" in err
    assert not marker.exists() and not (tmp_path / "o.csv").exists()


def _legacy_save(model: torch.nn.Module, path) -> None:
    """Writes a file exactly as strnn_fast-model-v1 did (a pickled dict, class as module:QualName)."""
    cls = type(model)
    torch.save({"format": "strnn_fast-model-v1", "class": f"{cls.__module__}:{cls.__qualname__}",
                "config": model.config, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "dtype": "torch.float32", "extra": {}}, path)


def test_legacy_files_need_the_explicit_opt_in(tmp_path, capsys) -> None:
    model = StrAF(A3, hidden_sizes=(6,), flow_steps=1)
    path = tmp_path / "old.pt"
    _legacy_save(model, path)
    with pytest.raises(ValueError, match="trusted=True"):
        load(path)
    back = load(path, trusted=True)
    x = torch.randn(3, 3)
    assert torch.equal(back.log_prob(x), model.log_prob(x))
    out = tmp_path / "s.csv"
    assert main(["sample", str(path), "-n", "4", "-o", str(out)]) == 2
    assert "--trust-legacy-file" in capsys.readouterr().err and not out.exists()
    assert main(["sample", str(path), "-n", "4", "-o", str(out), "--trust-legacy-file"]) == 0
    assert len(out.read_text().splitlines()) == 5
    with pytest.raises(TypeError, match="trusted"):
        load(path, trusted="yes")


def _good_payload() -> dict:
    """What save() writes for a small StrAF, as a dict to tamper with (header still a dict)."""
    model = StrAF(A3, hidden_sizes=(6,), flow_steps=1)
    tensors: dict[str, torch.Tensor] = {}
    config = encode(model.config, tensors, "config")
    for k, v in model.state_dict().items():
        tensors[f"state/{k}"] = v.detach().clone()
    header = {"format_version": 2, "class": "StrAF", "config": config, "dtype": "torch.float32", "extra": {}}
    return {"format": FORMAT, "header": header, "tensors": tensors}


def _tamper(kind: str) -> object:
    p = _good_payload()
    h = p["header"]
    state_keys = [k for k in p["tensors"] if k.startswith("state/")]
    if kind == "foreign_state_dict":
        return {k[6:]: v for k, v in p["tensors"].items() if k.startswith("state/")}
    if kind == "list":
        return [1, 2, 3]
    if kind == "no_format":
        del p["format"]
    elif kind == "other_format":
        p["format"] = "strnn_fast-model-v9"
    elif kind == "no_header":
        del p["header"]
    elif kind == "no_tensors":
        del p["tensors"]
    elif kind == "bad_json":
        p["header"] = "{not json"
    elif kind == "header_not_object":
        p["header"] = "[1, 2]"
    elif kind == "header_not_str":
        p["header"] = 42
    elif kind == "missing_class":
        del h["class"]
    elif kind == "unknown_class":
        h["class"] = "os:system"
    elif kind == "class_not_str":
        h["class"] = ["StrAF"]
    elif kind == "bad_version":
        h["format_version"] = 7
    elif kind == "bad_dtype":
        h["dtype"] = "torch.complex64"
    elif kind == "config_not_dict":
        h["config"] = [1, 2]
    elif kind == "bad_config_value":
        h["config"]["hidden_sizes"] = [-3]
    elif kind == "unknown_argument":
        h["config"]["bogus"] = 1
    elif kind == "dangling_tensor_ref":
        h["config"]["adjacency"] = {"__tensor__": "config/99", "kind": "list"}
    elif kind == "bad_tensor_kind":
        h["config"]["adjacency"]["kind"] = "pickle"
    elif kind == "bad_sparse":
        h["config"]["adjacency"] = {"__sparse__": "csr", "shape": [3]}
    elif kind == "deep_nesting":
        p["header"] = "[" * 100_000 + "]" * 100_000
        return p
    elif kind == "missing_weight":
        del p["tensors"][state_keys[0]]
    elif kind == "extra_weight":
        p["tensors"]["state/bogus.weight"] = torch.zeros(2)
    elif kind == "shape_mismatch":
        k = next(k for k in state_keys if p["tensors"][k].ndim == 2)
        p["tensors"][k] = torch.zeros(p["tensors"][k].shape[0] + 1, p["tensors"][k].shape[1])
    elif kind == "dtype_mismatch":
        k = next(k for k in state_keys if p["tensors"][k].is_floating_point())
        p["tensors"][k] = torch.zeros(p["tensors"][k].shape, dtype=torch.int64)
    elif kind == "tensors_not_dict":
        p["tensors"] = [torch.zeros(1)]
    elif kind == "tensor_not_tensor":
        p["tensors"][state_keys[0]] = "zeros"
    if isinstance(p.get("header"), dict):
        p["header"] = json.dumps(p["header"])
    return p


TAMPERED = ["foreign_state_dict", "list", "no_format", "other_format", "no_header", "no_tensors", "bad_json",
            "header_not_object", "header_not_str", "missing_class", "unknown_class", "class_not_str", "bad_version",
            "bad_dtype", "config_not_dict", "bad_config_value", "unknown_argument", "dangling_tensor_ref",
            "bad_tensor_kind", "bad_sparse", "deep_nesting", "missing_weight", "extra_weight", "shape_mismatch",
            "dtype_mismatch", "tensors_not_dict", "tensor_not_tensor"]


@pytest.mark.parametrize("kind", TAMPERED)
def test_tampered_files_raise_value_error_naming_the_file(tmp_path, kind) -> None:
    path = tmp_path / f"{kind}.pt"
    torch.save(_tamper(kind), path)
    with pytest.raises(ValueError) as err:
        load(path)
    assert f"{kind}.pt" in str(err.value)


def test_good_payload_helper_loads(tmp_path) -> None:
    path = tmp_path / "good.pt"
    torch.save(_tamper("none"), path)
    assert isinstance(load(path), StrAF)


@pytest.mark.parametrize("cut", [0, 1, 10, 100, 0.5, -1])
def test_truncated_files(tmp_path, cut) -> None:
    path = tmp_path / "m.pt"
    StrAF(A3, hidden_sizes=(6,), flow_steps=1).save(path)
    data = path.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (len(data) + cut if cut < 0 else cut)
    path.write_bytes(data[:n])
    with pytest.raises(ValueError, match="m.pt"):
        load(path)


def test_corrupted_zip_member(tmp_path) -> None:
    path = tmp_path / "m.pt"
    StrAF(A3, hidden_sizes=(6,), flow_steps=1).save(path)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    data = bytearray(path.read_bytes())
    pos = data.find(b"header")
    data[pos:pos + 6] = b"HEADER"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="m.pt"):
        load(path)
    assert names  # the file was a zip archive


def test_save_refuses_to_clobber_and_never_touches_a_tmp_named_file(tmp_path) -> None:
    model = StrAF(A3, hidden_sizes=(6,), flow_steps=1)
    path = tmp_path / "m.pt"
    precious = tmp_path / "m.pt.tmp"
    precious.write_bytes(b"precious")
    model.save(path)
    with pytest.raises(FileExistsError, match="m.pt"):
        model.save(path, overwrite=False)
    assert precious.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.tmp"]
    with pytest.raises(FileNotFoundError, match="folder"):
        model.save(tmp_path / "missing" / "m.pt")
    with pytest.raises(ValueError, match="folder"):
        model.save(tmp_path)


def test_missing_file_and_bad_path_type(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load(tmp_path / "nope.pt")
    with pytest.raises(TypeError, match="path"):
        load(3)


def test_faststrnn_config_with_numpy_arrays_round_trips(tmp_path) -> None:
    """FastStrNN's config may hold numpy arrays (adjacency, masks) instead of nested lists."""
    net = FastStrNN(3, (7,), 6, adjacency=A3)
    masks = [m.copy() for m in net.masks[:-1]] + [net.masks[-1][:, :3].copy()]
    net.config_overrides["adjacency"] = net.A.copy()
    net.config_overrides["precomputed_masks"] = masks
    net.save(tmp_path / "m.pt")
    header = json.loads(torch.load(tmp_path / "m.pt", weights_only=True)["header"])
    assert header["config"]["adjacency"]["kind"] == "numpy"
    assert all(m["kind"] == "numpy" for m in header["config"]["precomputed_masks"])
    back = load(tmp_path / "m.pt")
    x = torch.randn(4, 3)
    assert torch.equal(back(x), net(x))
    assert all(np.array_equal(a, b) for a, b in zip(back.masks, net.masks))


def test_written_files_get_the_usual_permissions(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        StrAF(A3, hidden_sizes=(4,), flow_steps=1).save(tmp_path / "m.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "m.pt").stat().st_mode & 0o777 == 0o644


@pytest.mark.cuda
def test_load_with_map_location_cuda(tmp_path) -> None:
    net = FastStrNN(3, (7,), 3, adjacency=A3)
    net.config_overrides["adjacency"] = net.A.copy()  # a numpy config array travels through the GPU and back
    net.save(tmp_path / "m.pt")
    back = load(tmp_path / "m.pt", map_location="cuda").cuda()
    x = torch.randn(4, 3)
    torch.testing.assert_close(back(x.cuda()).cpu(), net(x))


# ------------------------------------------------------------- Savable records the constructor's arguments

def test_config_records_every_constructor_argument_resolved() -> None:
    import inspect

    flow = StrAF([("a", "b"), ("a", "c")], hidden_sizes=(6,), flow_steps=1, normalizer="spline", bins=5)
    params = [p for p in inspect.signature(StrAF).parameters.values() if p.kind is not p.VAR_KEYWORD]
    assert {p.name for p in params} | {"bins"} == set(flow.config)
    # resolved by the hook: the edge list as a 0/1 matrix in the names' order, the names found in it
    assert flow.config["adjacency"] == [[0, 0, 0], [1, 0, 0], [1, 0, 0]]
    assert flow.config["names"] == ["a", "b", "c"] and flow.config["hidden_sizes"] == [6]
    assert flow.config["bins"] == 5 and flow.config["prior"] == "normal"  # recorded, defaults included
    assert flow.config is not flow.config  # a fresh dict: editing it changes nothing


def test_config_follows_changes_after_construction(tmp_path) -> None:
    from strnn_fast.flows import FFJORD, StrCNF

    flow = StrCNF(A3, hidden_sizes=(4,), atol=1e-4, rtol=1e-4)
    flow.set_solver("rk4", step_size=0.25)
    assert (flow.config["solver"], flow.config["step_size"]) == ("rk4", 0.25)
    flow.save(tmp_path / "cnf.pt")
    back = load(tmp_path / "cnf.pt")
    assert (back.solver, back.step_size, back.atol) == ("rk4", 0.25, 1e-4)
    dense = FFJORD(3, hidden_sizes=(4,), end_time=0.5)
    assert dense.config["d"] == 3 and "adjacency" not in dense.config and dense.config["end_time"] == 0.5
    dense.config_overrides["names"] = ["x", "y", "z"]  # the hook for patches made from outside
    assert dense.config["names"] == ["x", "y", "z"]


def test_files_with_the_old_hand_written_config_still_load(tmp_path) -> None:
    # A v2 header as the hand-written config dicts produced it: no unconditional context keys.
    torch.manual_seed(0)
    model = StrAF(A3, hidden_sizes=(6,), flow_steps=2)
    old = {"adjacency": A3.tolist(), "hidden_sizes": [6], "flow_steps": 2, "normalizer": "affine", "names": None,
           "prior": "normal", "activation": "relu", "opt_type": "greedy", "opt_args": model.config["opt_args"],
           "backend": model.config["backend"], "init": "kaiming"}
    tensors: dict[str, torch.Tensor] = {}
    header = {"format_version": 2, "class": "StrAF", "config": encode(old, tensors, "config"),
              "dtype": "torch.float32", "extra": {}}
    tensors.update({f"state/{k}": v.detach().clone() for k, v in model.state_dict().items()})
    torch.save({"format": FORMAT, "header": json.dumps(header), "tensors": tensors}, tmp_path / "old.pt")
    back = load(tmp_path / "old.pt")
    x = torch.randn(4, 3)
    assert torch.equal(back.log_prob(x), model.log_prob(x))
    assert {k: back.config[k] for k in old} == old


def test_savable_refuses_star_args() -> None:
    from strnn_fast.serialization import Savable

    with pytest.raises(TypeError, match=r"\*args"):
        class Bad(Savable, torch.nn.Module):  # noqa: F841 - the class statement is what raises
            def __init__(self, *sizes: int):
                super().__init__()


def test_round_trip_keeps_dtype_and_device(tmp_path, dtype, device) -> None:
    # --dtype / --device (tests/conftest.py) choose the cases: float32 and float64 on cpu by default.
    torch.manual_seed(0)
    model = StrAF(A3, hidden_sizes=(5,), flow_steps=2, normalizer="spline").to(device, dtype)
    model.save(tmp_path / "m.pt")
    back = load(tmp_path / "m.pt", map_location=device).to(device)
    x = torch.randn(4, 3, dtype=dtype, device=device)
    assert next(back.parameters()).dtype == dtype
    assert torch.equal(back.log_prob(x), model.log_prob(x))


# (id, callable(world), exception type, text the message must contain)
API_BAD_INPUT = [
    *api_refuses("load", load, FileNotFoundError, "nope.pt"),
    *api_refuses("load", load, ValueError, "existing_dir"),  # "is a folder", not "does not exist"
    *api_refuses("load", load, ValueError, "data.csv crafted.pt crafted_raw.pt truncated.pt empty.pt foreign.pt"),
    ("load-legacy", lambda w: load(w / "legacy.pt"), ValueError, "trusted=True"),
    ("load-int-path", lambda w: load(3), TypeError, "path"),
    ("load-trusted-str", lambda w: load(w / "straf.pt", trusted="yes"), TypeError, "trusted"),
    ("save-no-clobber", lambda w: small_flow().save(w / "existing.csv", overwrite=False), FileExistsError, "existing.csv"),
    ("save-folder-missing", lambda w: small_flow().save(w / "no" / "m.pt"), FileNotFoundError, "no"),
    ("save-into-dir", lambda w: small_flow().save(w / "existing_dir"), ValueError, "existing_dir"),
]


@pytest.mark.parametrize("call,error,expected", [c[1:] for c in API_BAD_INPUT], ids=[c[0] for c in API_BAD_INPUT])
def test_load_and_save_bad_input_names_the_file(bad_world, call, error, expected) -> None:
    check_api_refuses(bad_world, call, error, expected)
