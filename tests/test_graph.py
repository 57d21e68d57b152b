"""strnn_fast.graph: parsing every accepted form, cycle reports, orders, closure, depth, reachability."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from strnn_fast.data import random_dag
from strnn_fast.graph import (
    ancestors,
    as_adjacency,
    check_dag,
    depth,
    descendants,
    find_cycle,
    topological_order,
    transitive_closure,
)

CHAIN = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=bool)  # 0 -> 1 -> 2


def _is_topological(A: np.ndarray, order: np.ndarray) -> bool:
    position = np.empty(len(order), dtype=int)
    position[order] = np.arange(len(order))
    children, parents = np.nonzero(A)
    return bool((position[parents] < position[children]).all())


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("form", [np.asarray, torch.tensor, lambda m: m.astype(int).tolist(),
                                  lambda m: m.astype(np.float32)])
def test_matrix_forms_agree(form) -> None:
    A, names = as_adjacency(form(CHAIN))
    assert A.dtype == bool and names is None
    np.testing.assert_array_equal(A, CHAIN)


def test_named_edge_list_first_seen_order() -> None:
    A, names = as_adjacency([("b", "a"), ("a", "c")])
    assert names == ["b", "a", "c"]
    assert A[1, 0] and A[2, 1] and A.sum() == 2


def test_edge_list_with_names_fixes_order_and_isolated_variables() -> None:
    A, names = as_adjacency([("a", "b")], names=["z", "b", "a"])
    assert names == ["z", "b", "a"]
    assert A[1, 2] and A.sum() == 1


def test_integer_edge_list_indexes_variables() -> None:
    A, names = as_adjacency([(0, 1), (1, 2)])
    assert names is None
    np.testing.assert_array_equal(A, CHAIN)
    A, _ = as_adjacency([(0, 1)], names=["p", "q", "r"])  # names give d = 3
    assert A.shape == (3, 3)


def test_networkx_round_trip_and_name_order() -> None:
    G = nx.DiGraph([("rain", "wet"), ("sprinkler", "wet")])
    A, names = as_adjacency(G)
    assert names == list(G.nodes)
    back = nx.DiGraph([(names[j], names[i]) for i, j in zip(*np.nonzero(A))])
    assert set(back.edges) == set(G.edges)
    A2, names2 = as_adjacency(G, names=["wet", "rain", "sprinkler"])
    assert names2 == ["wet", "rain", "sprinkler"] and A2[0, 1] and A2[0, 2] and A2.sum() == 2


def test_networkx_integer_nodes_are_unnamed() -> None:
    A, names = as_adjacency(nx.DiGraph([(0, 1), (1, 2)]))
    assert names is None
    np.testing.assert_array_equal(A, CHAIN)


@pytest.mark.parametrize(
    ("value", "error", "fragment"),
    [
        (np.zeros((2, 3)), ValueError, "square"),
        ([[0, 2], [0, 0]], ValueError, "binary"),
        ([[0, np.nan], [0, 0]], ValueError, "NaN"),
        ([[0, 1], [1]], ValueError, "square"),
        (np.array([["x"]]), TypeError, "dtype"),
        ([(0, 0)], ValueError, "self-loop"),
        ([[1, 0], [0, 0]], ValueError, "self-loop"),
        ([("a", 1)], TypeError, "all strings"),
        ([(0, 1, 2)], ValueError, "pairs"),
        ([(-1, 0)], ValueError, "non-negative"),
        ([], ValueError, "names"),
    ],
)
def test_bad_input_raises(value, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        as_adjacency(value)


def test_bad_names_raise() -> None:
    with pytest.raises(ValueError, match="unknown variables"):
        as_adjacency([("a", "b")], names=["a"])
    with pytest.raises(ValueError, match="distinct"):
        as_adjacency(np.zeros((2, 2)), names=["a", "a"])
    with pytest.raises(ValueError, match="names has 3 entries"):
        as_adjacency(np.zeros((2, 2)), names=["a", "b", "c"])
    with pytest.raises(TypeError, match="sequence of strings"):
        as_adjacency(np.zeros((2, 2)), names="ab")
    with pytest.raises(ValueError, match="out of range"):
        as_adjacency([(0, 3)], names=["a", "b"])


def test_self_loops_allowed_on_request() -> None:
    A, _ = as_adjacency(np.eye(3), allow_self_loops=True)
    assert A.diagonal().all()


# --- analysis ----------------------------------------------------------------------------------


def test_cycle_message_names_the_cycle() -> None:
    A, names = as_adjacency([("x", "y"), ("y", "z"), ("z", "x"), ("x", "w")])
    with pytest.raises(ValueError, match=r"x -> y -> z -> x"):
        check_dag(A, names)
    with pytest.raises(ValueError, match=r"0 -> 1 -> 0"):
        topological_order([[0, 1], [1, 0]])


def test_find_cycle_returns_a_real_cycle() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        A = rng.random((8, 8)) < 0.2
        cycle = find_cycle(A)
        is_dag = nx.is_directed_acyclic_graph(nx.DiGraph(A.T.astype(int)))
        assert (cycle is None) == is_dag
        if cycle is not None:
            for parent, child in zip(cycle, cycle[1:] + cycle[:1]):
                assert A[child, parent]


def test_self_loop_is_a_cycle() -> None:
    assert find_cycle(np.eye(2, dtype=bool)) == [0]


@given(st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_topological_order_on_permuted_graphs(d: int, seed: int) -> None:
    A = random_dag(d, density=0.4, seed=seed, ordered=False)
    order = topological_order(A)
    assert sorted(order.tolist()) == list(range(d))
    assert _is_topological(A, order)


def test_topological_order_is_stable() -> None:
    assert topological_order(np.zeros((4, 4))).tolist() == [0, 1, 2, 3]
    # 3 -> 0: 0 must wait for 3, the others keep index order.
    A = np.zeros((4, 4), dtype=bool)
    A[0, 3] = True
    assert topological_order(A).tolist() == [1, 2, 3, 0]


def test_transitive_closure_matches_networkx() -> None:
    A = random_dag(10, density=0.25, seed=1, ordered=False)
    R = transitive_closure(A)
    G = nx.DiGraph(A.T.astype(int))
    for i in range(10):
        assert set(np.flatnonzero(R[i])) == nx.ancestors(G, i)


def test_depth() -> None:
    assert depth(np.zeros((3, 3))) == 0
    assert depth(CHAIN) == 2
    A = random_dag(9, density=0.5, seed=2, ordered=False)
    assert depth(A) == nx.dag_longest_path_length(nx.DiGraph(A.T.astype(int)))
    with pytest.raises(ValueError, match="acyclic"):
        depth([[0, 1], [1, 0]])


def test_descendants_and_ancestors() -> None:
    assert descendants(CHAIN, 0).tolist() == [False, True, True]
    assert descendants(CHAIN, [0, 1]).tolist() == [False, True, True]  # 1 is a child of 0
    assert ancestors(CHAIN, 2).tolist() == [True, True, False]
    assert ancestors(CHAIN, []).tolist() == [False, False, False]
    A = random_dag(10, density=0.3, seed=4, ordered=False)
    G = nx.DiGraph(A.T.astype(int))
    for v in range(10):
        assert set(np.flatnonzero(descendants(A, v))) == nx.descendants(G, v)
        assert set(np.flatnonzero(ancestors(A, v))) == nx.ancestors(G, v)
    with pytest.raises(ValueError, match="out of range"):
        descendants(CHAIN, 3)
    with pytest.raises(TypeError, match="indices"):
        descendants(CHAIN, ["a"])
