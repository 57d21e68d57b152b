"""Output paths: special files (devices, FIFOs) are written in place and never replaced, --force
included; folders, trailing separators and read-only folders are named before any work."""
from __future__ import annotations

import os
import stat
import threading

import pytest
from _cli_world import FIT
from _cli_world import cli as _cli
from _cli_world import write as _write
from _trust_world import A3
from strnn_fast.cli import main
from strnn_fast.flows import StrAF
import torch


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_sample_into_dev_null_keeps_the_device(model_file, capsys, force):
    before = os.stat("/dev/null")
    code, _ = _cli(["sample", model_file, "-n", "5", "-o", "/dev/null", *force], capsys)
    assert code == 0
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_sample_into_dev_full_is_one_line_and_keeps_the_device(model_file, capsys):
    code, err = _cli(["sample", model_file, "-n", "5", "-o", "/dev/full", "--force"], capsys)
    assert code == 2 and "No space left" in err and len(err.strip().splitlines()) == 1
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_sample_into_a_fifo_writes_in_place(model_file, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    code, _ = _cli(["sample", model_file, "-n", "4", "-o", fifo, "--force"], capsys)
    reader.join(10)
    assert code == 0 and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert got[0].splitlines()[0] == '"a","b"' and len(got[0].splitlines()) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_output_with_trailing_separator_is_refused(model_file, tmp_path, capsys):
    code, err = _cli(["sample", model_file, "-n", "3", "-o", f"{tmp_path}/newdir/"], capsys)
    assert code == 2 and "separator" in err and not (tmp_path / "newdir").exists()


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_data_path_that_is_a_folder_or_fifo_says_so(model_file, tmp_path, capsys, kind):
    path = tmp_path / "data.csv"
    path.mkdir() if kind == "folder" else os.mkfifo(path)
    code, err = _cli(["logprob", model_file, path], capsys)
    assert code == 2 and "not found" not in err
    assert ("is a folder" if kind == "folder" else "not a regular file") in err


def test_read_only_output_folder_is_refused_before_training(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    data = _write(tmp_path / "d.csv", "a,b\n" + "\n".join(f"{i},{i * i % 7}" for i in range(30)) + "\n")
    graph = _write(tmp_path / "g.csv", "parent,child\na,b\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, err = _cli(["fit", data, "-a", graph, "-o", locked / "m.pt", *FIT], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and "cannot write" in err


def test_damaged_model_never_writes_nan(tmp_path, abc_files, capsys) -> None:
    data, graph = abc_files
    model = StrAF(A3, hidden_sizes=(6,), flow_steps=1, names=["a", "b", "c"])
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    path = tmp_path / "nan.pt"
    model.save(path)
    out = tmp_path / "s.csv"
    assert main(["sample", str(path), "-n", "5", "-o", str(out)]) == 2
    assert not out.exists() and "non-finite" in capsys.readouterr().err
    assert main(["logprob", str(path), str(data), "-o", str(out)]) == 2
    assert not out.exists() and "NaN" in capsys.readouterr().err


def test_sample_never_touches_a_file_named_like_its_temporary(tmp_path, capsys) -> None:
    model = StrAF(A3, hidden_sizes=(6,), flow_steps=1)
    precious = tmp_path / "out.csv.tmp"
    model.save(precious)
    before = precious.read_bytes()
    assert main(["sample", str(precious), "-n", "4", "-o", str(tmp_path / "out.csv")]) == 0
    assert precious.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.csv.tmp"]
