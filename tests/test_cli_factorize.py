"""`strnn-fast factorize` on the built-in example and on user files."""
from __future__ import annotations

import numpy as np
import pytest

from strnn_fast import check_masks
from strnn_fast.cli import main


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
