"""`strnn-fast factorize` on the built-in example and on user files."""
from __future__ import annotations

import numpy as np
import pytest

from strnn_fast import check_masks
from strnn_fast.cli import main
from _trust_world import A3, check_cli_refuses, cli_refuses, digest


def test_builtin_example(tmp_path, capsys) -> None:
    assert main(["factorize", "--methods", "greedy,greedy+improve,zuko", "-o", str(tmp_path / "out")]) == 0
    tmp_path = tmp_path / "out"
    out = capsys.readouterr().out
    assert "built-in" in out and out.count("True") == 3
    saved = np.load(tmp_path / "masks_greedy.npz")
    masks = [saved[f"mask_{i}"] for i in range(3)]
    assert check_masks(masks, saved["adjacency"])
    assert (tmp_path / "masks_zuko.png").stat().st_size > 1000


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_user_file_with_exact(tmp_path, capsys, suffix) -> None:
    A = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0]])
    path = tmp_path / f"A{suffix}"
    np.save(path, A) if suffix == ".npy" else np.savetxt(path, A, delimiter=",", fmt="%d")
    code = main(["factorize", str(path), "--hidden", "4", "--methods", "greedy,exact,made", "-o", str(tmp_path / "o")])
    assert code == 0
    out = capsys.readouterr().out
    assert "gap" in out and "made" in out and "skipped" in out


def test_bad_files(tmp_path, capsys) -> None:
    assert main(["factorize", str(tmp_path / "missing.npy")]) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1\nx,0\n")
    assert main(["factorize", str(bad), "-o", str(tmp_path / "o")]) == 2
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[0.0, np.nan], [1.0, 0.0]]))
    assert main(["factorize", str(nan), "-o", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit) as exc:  # an argparse usage error
        main(["factorize", "--hidden", "a,b", "-o", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not found" in err and "NaN" in err and "--hidden" in err


def test_wide_masks_are_pictured_by_blocks(tmp_path, capsys) -> None:
    # hidden 20000,20000 once lost every output to matplotlib's MemoryError; pictures now show
    # at most PICTURE_CELLS cells per side, each set when its block of the mask holds a one.
    from strnn_fast.cli.factorize import PICTURE_CELLS, thumbnail

    rng = np.random.default_rng(0)
    for shape in [(7, 5), (3000, 17), (2049, 1025), (100, 20000)]:
        mask = (rng.random(shape) < 0.01).astype(np.uint8)
        cells, k = thumbnail(mask)
        expected = np.zeros((-(-shape[0] // k), -(-shape[1] // k)), np.uint8)
        expected[tuple((np.argwhere(mask) // k).T)] = 1
        assert max(cells.shape) <= PICTURE_CELLS and np.array_equal(cells, expected)
    assert main(["factorize", "--hidden", "2100,100", "--methods", "greedy", "-o", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "masks_greedy.png").stat().st_size > 1000
    assert np.load(tmp_path / "o" / "masks_greedy.npz")["mask_0"].shape == (100, 2100)


# (id, argv with {w} for the bad-input world's folder, text the message must contain)
CLI_BAD_INPUT = [
    *cli_refuses("factorize", lambda file: ["factorize", f"{{w}}/{file}", "-o", "{w}/fo"],
                  "empty.csv nonbinary.csv nope.npy junk.npy table.xlsx cube.npy"),
    ("factorize-block-0", ["factorize", "--block", "0", "-o", "{w}/fo"], "--block"),
    ("factorize-hidden-0", ["factorize", "{w}/rect.npy", "--hidden", "0", "-o", "{w}/fo"], "--hidden"),
    ("factorize-methods", ["factorize", "{w}/rect.npy", "--methods", "bogus", "-o", "{w}/fo"], "--methods"),
    ("factorize-existing-folder", ["factorize", "{w}/rect.npy", "-o", "{w}/existing_dir"], "--force"),
    ("factorize-output-is-file", ["factorize", "{w}/rect.npy", "-o", "{w}/existing.csv"], "existing.csv"),
    ("factorize-all-zero", ["factorize", "{w}/zeros.csv", "-o", "{w}/fo"], "zero"),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CLI_BAD_INPUT], ids=[c[0] for c in CLI_BAD_INPUT])
def test_factorize_command_refuses_bad_input(bad_world, capsys, argv, expected) -> None:
    check_cli_refuses(bad_world, capsys, argv, expected)


def test_factorize_refuses_an_existing_folder(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = digest(out)
    assert main(["factorize", "--methods", "greedy", "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and digest(out) == before
    assert main(["factorize", "--methods", "greedy", "-o", str(out), "--force"]) == 0
    assert (out / "keep.txt").read_text() == "mine" and (out / "masks_greedy.npz").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_factorize_empty_csv_and_block_zero(tmp_path, capsys) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["factorize", str(empty), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "empty.csv" in err and "empty" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["factorize", "--block", "0", "-o", str(tmp_path / "o")])
    assert exc.value.code == 2 and "--block" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_factorize_reads_files_as_fit_does(tmp_path, capsys) -> None:
    files = {"edges.txt": "a b\nb c\na c\n", "edges.csv": "parent,child\na,b\nb,c\na,c\n",
             "headed.csv": "a,b,c\n0,0,0\n1,0,0\n1,1,0\n", "plain.txt": "0 0 0\n1 0 0\n1 1 0\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        out = tmp_path / f"o_{name}"
        assert main(["factorize", str(tmp_path / name), "--methods", "greedy", "-o", str(out)]) == 0, name
        saved = np.load(out / "masks_greedy.npz")
        assert np.array_equal(saved["adjacency"], A3), name
    rect = tmp_path / "rect.csv"
    rect.write_text("1,0,1\n0,1,1\n")  # (n_out=2) x (n_in=3): factorize only
    assert main(["factorize", str(rect), "--methods", "greedy", "--hidden", "4", "-o", str(tmp_path / "r")]) == 0
