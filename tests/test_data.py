"""strnn_fast.data: graph generators, synthetic data sets, the reference binary files, file loaders."""
from __future__ import annotations

import numpy as np
import pytest

from strnn_fast.data import (
    Dataset,
    banded,
    block_graph,
    check_adjacency_matches,
    full_triangle,
    load_adjacency,
    load_reference_binary,
    load_table,
    make_binary_bn,
    make_multimodal,
    random_dag,
)
from strnn_fast.data.binary import data_roots
from strnn_fast.graph import find_cycle, topological_order
from _trust_world import X, api_refuses, check_api_refuses
from strnn_fast.data.dataset import split

# --- adjacency generators ----------------------------------------------------------------------

GENERATED = {
    "density": lambda: random_dag(20, density=0.3, seed=0),
    "parents": lambda: random_dag(20, parents=(2, 5), seed=0),
    "unordered": lambda: random_dag(20, parents=3, seed=0, ordered=False),
    "banded": lambda: banded(20, 3),
    "triangle": lambda: full_triangle(20),
    "blocks": lambda: block_graph(20, 4, 0.8, 0.05, seed=0),
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generators_give_bool_dags(name: str) -> None:
    A = GENERATED[name]()
    assert A.shape == (20, 20) and A.dtype == bool
    assert not A.diagonal().any()
    assert find_cycle(A) is None


def test_parent_counts_in_range() -> None:
    A = random_dag(30, parents=(2, 5), seed=1)
    counts = A.sum(axis=1)
    for i, k in enumerate(counts):
        assert min(2, i) <= k <= min(5, i)
    assert len(set(counts[6:].tolist())) > 1  # the range is really sampled
    assert (random_dag(10, parents=3, seed=0).sum(axis=1) == np.minimum(np.arange(10), 3)).all()


def test_ordered_false_breaks_index_order() -> None:
    A = random_dag(30, density=0.5, seed=2, ordered=False)
    assert np.triu(A).any()  # not lower triangular any more
    assert topological_order(A).tolist() != list(range(30))


def test_seeds_reproducible() -> None:
    for kwargs in ({"density": 0.3}, {"parents": (1, 4)}):
        a = random_dag(15, seed=7, ordered=False, **kwargs)
        np.testing.assert_array_equal(a, random_dag(15, seed=7, ordered=False, **kwargs))
        assert not np.array_equal(a, random_dag(15, seed=8, ordered=False, **kwargs))
    np.testing.assert_array_equal(block_graph(12, 3, 0.5, 0.1, seed=3), block_graph(12, 3, 0.5, 0.1, seed=3))


def test_banded_and_blocks_structure() -> None:
    A = banded(6, 2)
    i, j = np.nonzero(A)
    assert ((i - j >= 1) & (i - j <= 2)).all() and A.sum() == 1 + 2 * 4
    np.testing.assert_array_equal(banded(5, 10), full_triangle(5))
    B = block_graph(9, 3, 1.0, 0.0, seed=0)
    np.testing.assert_array_equal(B, np.kron(np.eye(3, dtype=bool), full_triangle(3)))


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda: random_dag(5), ValueError, "exactly one"),
        (lambda: random_dag(5, density=0.2, parents=1), ValueError, "exactly one"),
        (lambda: random_dag(5, density=1.5), ValueError, "density"),
        (lambda: random_dag(5, parents=(3, 1)), ValueError, "lo <= hi"),
        (lambda: random_dag(5, parents="2"), TypeError, "parents"),
        (lambda: random_dag(0, density=0.1), ValueError, "d must be positive"),
        (lambda: banded(5, 0), ValueError, "width"),
        (lambda: block_graph(3, 4, 0.5, 0.1), ValueError, "n_blocks"),
        (lambda: block_graph(6, 2, 0.5, -0.1), ValueError, "p_out"),
    ],
)
def test_generator_errors(call, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        call()


# --- synthetic data sets -----------------------------------------------------------------------


def test_multimodal_splits_and_standardization() -> None:
    ds = make_multimodal(seed=0)
    assert ds.sizes == (600, 200, 200) and ds.d == 15
    # standardization by statistics computed in float64 over 600 rows
    np.testing.assert_allclose(ds.train.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(ds.train.std(axis=0), 1.0, atol=1e-10)
    assert abs(ds.val.mean()) < 0.3  # same distribution, train statistics
    assert (ds.adjacency == np.tril(ds.adjacency, -1)).all()


def test_multimodal_roots_are_multimodal() -> None:
    # A well-separated 3-mode mixture leaves gaps: some histogram bins between modes stay empty.
    ds = make_multimodal(n=3000, d=5, adjacency=np.zeros((5, 5)), seed=0)
    empty = [int((np.histogram(ds.train[:, i], bins=40)[0] == 0).sum()) for i in range(5)]
    assert max(empty) > 0


def test_multimodal_seed_and_given_adjacency() -> None:
    a, b = make_multimodal(n=200, seed=3), make_multimodal(n=200, seed=3)
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.adjacency, b.adjacency)
    ds = make_multimodal(n=100, adjacency=[("y", "x"), ("z", "x")], seed=0)
    assert ds.names == ["y", "x", "z"] and ds.adjacency[1].sum() == 2
    with pytest.raises(ValueError, match="acyclic"):
        make_multimodal(n=100, adjacency=[[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="disagrees"):
        make_multimodal(n=100, d=3, adjacency=np.zeros((2, 2)))


def test_multimodal_children_depend_on_parents() -> None:
    ds = make_multimodal(n=2000, adjacency=[(0, 1)], seed=1)
    x = np.vstack([ds.train, ds.val, ds.test])
    assert abs(np.corrcoef(np.tanh(x[:, 0] * 5), x[:, 1])[0, 1]) > 0.2


def test_binary_bn() -> None:
    ds = make_binary_bn(500, 8, seed=0)
    assert ds.sizes == (300, 100, 100)
    assert np.isin(ds.train, (0.0, 1.0)).all()
    assert find_cycle(ds.adjacency) is None
    np.testing.assert_array_equal(make_binary_bn(50, 4, seed=1).train, make_binary_bn(50, 4, seed=1).train)
    # A variable with a strong single parent should correlate with it.
    strong = make_binary_bn(4000, adjacency=[(0, 1)], seed=5)
    x = strong.train
    assert abs(x[x[:, 0] == 1, 1].mean() - x[x[:, 0] == 0, 1].mean()) > 0.05
    with pytest.raises(ValueError, match="give d"):
        make_binary_bn(10)


def test_dataset_validates() -> None:
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="val must be a 2-D array with 3 columns"):
        Dataset(z, np.zeros((2, 2)), z, np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="square bool"):
        Dataset(z, z, z, np.zeros((3, 3)))


# --- reference binary files --------------------------------------------------------------------

HAVE_REFERENCE = any((r / "reference_binary").is_dir() for r in data_roots())


@pytest.mark.skipif(not HAVE_REFERENCE, reason="reference binary data not present")
@pytest.mark.parametrize("graph", ["every_other", "random_sparse"])
def test_load_reference_binary(graph: str) -> None:
    ds = load_reference_binary(graph=graph)
    assert ds.sizes == (1600, 400, 500) and ds.d == 15
    assert np.isin(ds.train, (0.0, 1.0)).all()
    assert find_cycle(ds.adjacency) is None


@pytest.mark.skipif(not HAVE_REFERENCE, reason="reference binary data not present")
def test_reference_every_other_graph() -> None:
    # "every other": variable i depends on i-1, i-3, i-5, ...
    i, j = np.indices((15, 15))
    np.testing.assert_array_equal(load_reference_binary().adjacency, (i > j) & ((i - j) % 2 == 1))


def test_load_reference_binary_missing(tmp_path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_reference_binary(tmp_path / "binary_x_d3_n10.npz")
    np.savez(tmp_path / "binary_x_d3_n10.npz", train_data=np.zeros((2, 3)), valid_data=np.zeros((1, 3)),
             test_data=np.zeros((1, 3)))
    with pytest.raises(FileNotFoundError, match="x_d3_adj.npz"):
        load_reference_binary(tmp_path / "binary_x_d3_n10.npz")
    np.savez(tmp_path / "x_d3_adj.npz", np.tril(np.ones((3, 3)), -1))
    assert load_reference_binary(tmp_path / "binary_x_d3_n10.npz").sizes == (2, 1, 1)
    monkeypatch.setenv("STRNN_FAST_DATA", str(tmp_path))
    assert data_roots()[0] == tmp_path


# --- loaders -----------------------------------------------------------------------------------


def test_load_table_csv_with_and_without_header(tmp_path) -> None:
    (tmp_path / "h.csv").write_text("a,b\n1,2.5\n3,4\n")
    x, names = load_table(tmp_path / "h.csv")
    assert names == ["a", "b"] and x.dtype == np.float64
    np.testing.assert_array_equal(x, [[1, 2.5], [3, 4]])
    (tmp_path / "n.csv").write_text("1,2\n3,4\n")
    x, names = load_table(tmp_path / "n.csv")
    assert names is None and x.shape == (2, 2)


def test_load_table_numpy_formats(tmp_path) -> None:
    data = np.arange(6.0).reshape(3, 2)
    np.save(tmp_path / "a.npy", data)
    np.savez(tmp_path / "one.npz", data)
    np.savez(tmp_path / "keyed.npz", x=data, other=np.zeros(2), names=np.array(["p", "q"]))
    np.testing.assert_array_equal(load_table(tmp_path / "a.npy")[0], data)
    np.testing.assert_array_equal(load_table(tmp_path / "one.npz")[0], data)
    x, names = load_table(tmp_path / "keyed.npz")
    np.testing.assert_array_equal(x, data)
    assert names == ["p", "q"]


@pytest.mark.parametrize(
    ("name", "content", "error", "fragment"),
    [
        ("bad.csv", "a,b\n1,x\n", ValueError, r"column 'b'.*'x'"),
        ("nan.csv", "a,b\n1,nan\n", ValueError, r"column 'b'.*finite"),
        ("inf.csv", "1,inf\n", ValueError, r"column 1.*finite"),
        ("ragged.csv", "1,2\n3\n", ValueError, "fields"),
        ("empty.csv", "", ValueError, "no data rows"),
        ("t.json", "{}", ValueError, "extension"),
    ],
)
def test_load_table_errors(tmp_path, name, content, error, fragment) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(error, match=fragment):
        load_table(tmp_path / name)


def test_load_table_missing_and_wrong_ndim(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_table(tmp_path / "nope.csv")
    np.save(tmp_path / "v.npy", np.zeros(3))
    with pytest.raises(ValueError, match="2-D"):
        load_table(tmp_path / "v.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="data or x"):
        load_table(tmp_path / "two.npz")


def test_load_adjacency_forms_agree(tmp_path) -> None:
    names = ["a", "b", "c"]
    want = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0]], dtype=bool)
    np.save(tmp_path / "m.npy", want.astype(int))
    (tmp_path / "m.csv").write_text("0,0,0\n1,0,0\n1,1,0\n")
    (tmp_path / "h.csv").write_text("a,b,c\n0,0,0\n1,0,0\n1,1,0\n")
    (tmp_path / "pd.csv").write_text(",a,b,c\na,0,0,0\nb,1,0,0\nc,1,1,0\n")
    (tmp_path / "e.csv").write_text("parent,child\na,b\na,c\nb,c\n")
    (tmp_path / "e.txt").write_text("# edges\na b\na c\nb c\n")
    (tmp_path / "i.csv").write_text("0,1\n0,2\n1,2\n")
    for f in ("m.npy", "m.csv", "h.csv", "pd.csv", "e.csv", "e.txt", "i.csv"):
        A, found = load_adjacency(tmp_path / f, names=names)
        np.testing.assert_array_equal(A, want, err_msg=f)
        assert found == names


def test_edge_list_refuses_data_columns_no_edge_mentions(tmp_path) -> None:
    # An extra data column (an id) is not a variable of the graph: refused, unless asked for.
    (tmp_path / "e.csv").write_text("parent,child\na,b\n")
    with pytest.raises(ValueError, match=r"\['id'\] appear in no edge.*keep_isolated=True"):
        load_adjacency(tmp_path / "e.csv", names=["a", "id", "b"])
    A, found = load_adjacency(tmp_path / "e.csv", names=["a", "id", "b"], keep_isolated=True)
    assert found == ["a", "id", "b"] and A.astype(int).tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0]]
    # a matrix states its isolated variables itself: nothing to refuse
    (tmp_path / "m.csv").write_text("a,id,b\n0,0,0\n0,0,0\n1,0,0\n")
    assert load_adjacency(tmp_path / "m.csv", names=["a", "id", "b"])[0].sum() == 1


def test_load_adjacency_reorders_named_matrix(tmp_path) -> None:
    (tmp_path / "h.csv").write_text("a,b\n0,0\n1,0\n")  # b depends on a
    A, found = load_adjacency(tmp_path / "h.csv", names=["b", "a"])
    assert found == ["b", "a"] and A[0, 1] and A.sum() == 1
    with pytest.raises(ValueError, match="do not match"):
        load_adjacency(tmp_path / "h.csv", names=["a", "z"])


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("0,1,1\n0,0\n", "expected 'parent,child'"),
        ("parent,child\na,b\nb\n", "line 3"),
        (",a,b\na,0,0\nz,1,0\n", "row labels"),
        ("0,2\n0,0\n", "self-loop"),  # not a 0/1 matrix, so edges 0->2 and 0->0
    ],
)
def test_load_adjacency_errors(tmp_path, content, fragment) -> None:
    (tmp_path / "g.csv").write_text(content)
    with pytest.raises(ValueError, match=fragment):
        load_adjacency(tmp_path / "g.csv")


def test_load_adjacency_missing(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="g.csv"):
        load_adjacency(tmp_path / "g.csv")


def test_check_adjacency_matches() -> None:
    A = np.zeros((2, 2), dtype=bool)
    check_adjacency_matches(A, 2, ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="2 columns"):
        check_adjacency_matches(np.zeros((3, 3)), 2)
    with pytest.raises(ValueError, match=r"only in the data \['c'\]"):
        check_adjacency_matches(A, 2, ["a", "c"], ["a", "b"])
    with pytest.raises(ValueError, match="another order"):
        check_adjacency_matches(A, 2, ["b", "a"], ["a", "b"])


# (id, callable(world), exception type, text the message must contain)
API_BAD_INPUT = [
    *api_refuses("table", load_table, FileNotFoundError, "nope.csv"),
    *api_refuses("table", load_table, ValueError, "table.xlsx empty.csv header_only.csv inf.csv binary.csv "
                                                   "nul.csv dup_names.csv cube.npy strings.npy junk.npy two.npz "
                                                   "badnames.npz junk.npz"),
    *api_refuses("adj", load_adjacency, ValueError, "empty.csv nonbinary.csv mixed.csv rect.npy junk.npy"),
    ("table-ragged", lambda w: load_table(w / "ragged.csv"), ValueError, "line 3"),
    ("table-words", lambda w: load_table(w / "words.csv"), ValueError, "'b'"),
    ("table-nan", lambda w: load_table(w / "nan.csv"), ValueError, "line 7"),
    ("table-int-path", lambda w: load_table(5), TypeError, "path"),
    ("adj-selfloop", lambda w: load_adjacency(w / "selfloop.csv"), ValueError, "self-loop"),
    ("adj-three-fields", lambda w: load_adjacency(w / "three_fields.txt"), ValueError, "line 1"),
    ("adj-unknown-name", lambda w: load_adjacency(w / "unknown.csv", names=["a", "b", "c"]), ValueError, "'q'"),
    ("split-fractions", lambda w: split(X, (0.5, 0.6)), ValueError, "fractions"),
]


@pytest.mark.parametrize("call,error,expected", [c[1:] for c in API_BAD_INPUT], ids=[c[0] for c in API_BAD_INPUT])
def test_loaders_and_split_bad_input_name_the_file_or_argument(bad_world, call, error, expected) -> None:
    check_api_refuses(bad_world, call, error, expected)


def test_text_files_report_file_line_numbers(tmp_path) -> None:
    from strnn_fast.data import load_table

    p = tmp_path / "t.csv"
    p.write_text("a,b\n# a comment\n\n1,2\nx,3\n")
    with pytest.raises(ValueError, match="line 5"):
        load_table(p)
    p.write_text("a,b\n# c\n1,2\n1,inf\n")
    with pytest.raises(ValueError, match="line 4"):
        load_table(p)
