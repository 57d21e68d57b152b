r"""Parsing and analysis of variable graphs: the one place that turns user input into adjacency.

Convention (shared with :func:`strnn_fast.factorize`): ``A[i, j] = True`` iff variable ``i``
depends on (has parent) ``j``. Edges therefore point from column to row: ``j -> i``. The diagonal
counts as an edge here (a self-loop is a cycle of length one); flows that imply or add the
diagonal strip it before asking these functions about acyclicity.

Example:
    >>> A, names = as_adjacency([("rain", "wet"), ("sprinkler", "wet")])
    >>> names
    ['rain', 'wet', 'sprinkler']
    >>> A.astype(int)
    array([[0, 0, 0],
           [1, 0, 1],
           [0, 0, 0]])
    >>> topological_order(A).tolist()
    [0, 2, 1]
    >>> depth(A)
    1
"""
from __future__ import annotations

import heapq
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ._memory import check_memory
from ._validate import as_binary_matrix

__all__ = [
    "ancestors",
    "as_adjacency",
    "as_dag",
    "check_dag",
    "depth",
    "levels",
    "descendants",
    "find_cycle",
    "topological_order",
    "transitive_closure",
]


def as_adjacency(
    adjacency: Any,
    names: Sequence[str] | None = None,
    *,
    allow_self_loops: bool = False,
) -> tuple[np.ndarray, list[str] | None]:
    r"""Converts a matrix, an edge list or a networkx graph into a square bool adjacency matrix.

    Accepted forms:

    * a square 0/1 or bool numpy array, torch tensor or nested list (rows = children);
    * an edge list of ``(parent, child)`` pairs. Endpoints are all strings (variable names) or all
      integers (variable indices). Without ``names``, string variables are numbered in the order
      they first appear (parent before child), integer ones span ``0..max``. A nested list of
      lists that is square is read as a matrix; pass tuples to mean edges;
    * a ``networkx.DiGraph``: edge ``u -> v`` means ``v`` depends on ``u``; variables are in
      ``list(G.nodes)`` order, or in the order of ``names`` when given.

    Arguments:
        adjacency: the graph, in one of the forms above.
        names: variable names in matrix order. For a matrix they are attached (length must be d);
            for edge lists and graphs they fix the order (every endpoint must be among them).
        allow_self_loops: whether ``A[i, i] = 1`` is accepted.

    Returns:
        ``(A, names)``: ``A`` a (d, d) bool array, ``names`` a list of d strings or None when the
        input carried none (integer-indexed edges, a plain matrix, a graph on nodes 0..d-1).

    Raises:
        TypeError: unsupported input type or non-numeric entries.
        ValueError: non-square, non-binary, NaN, unknown or duplicated names, self-loops.

    Example:
        >>> as_adjacency([(0, 2), (1, 2)])[0].astype(int)
        array([[0, 0, 0],
               [0, 0, 0],
               [1, 1, 0]])
        >>> as_adjacency([[0, 0], [1, 0]], names=["a", "b"])[1]
        ['a', 'b']
    """
    name_list = _check_names(names)
    nx = sys.modules.get("networkx")
    if nx is not None and isinstance(adjacency, nx.DiGraph):
        A, found = _from_digraph(adjacency, name_list)
    elif _looks_like_edge_list(adjacency):
        A, found = _from_edges(list(adjacency), name_list)
    else:
        A = _from_matrix(adjacency)
        if name_list is not None and len(name_list) != A.shape[0]:
            raise ValueError(f"names has {len(name_list)} entries but the adjacency matrix is {A.shape[0]} x {A.shape[0]}")
        found = name_list
    if not allow_self_loops and np.diagonal(A).any():
        i = int(np.flatnonzero(np.diagonal(A))[0])
        label = found[i] if found is not None else str(i)
        raise ValueError(f"adjacency has a self-loop on variable {label!r} (A[{i}, {i}] = 1); "
                         "variables may not depend on themselves (pass allow_self_loops=True to permit it)")
    return A, found


def topological_order(A: Any) -> np.ndarray:
    r"""Orders variables so that every parent comes before its children; ties go to the lower index.

    Arguments:
        A: (d, d) adjacency, ``A[i, j]`` = i depends on j.

    Returns:
        int64 array, a permutation of ``0..d-1``.

    Raises:
        ValueError: the graph has a cycle (the message names one).

    Example:
        >>> topological_order([[0, 1, 0], [0, 0, 0], [1, 0, 0]]).tolist()
        [1, 0, 2]
    """
    A = _square(A)
    indegree = A.sum(axis=1).astype(np.int64)
    children = [np.flatnonzero(A[:, j]) for j in range(A.shape[0])]
    ready = [i for i in range(A.shape[0]) if indegree[i] == 0]
    heapq.heapify(ready)  # a heap rather than a queue keeps the order stable: lowest ready index first
    order: list[int] = []
    while ready:
        j = heapq.heappop(ready)
        order.append(j)
        for i in children[j]:
            indegree[i] -= 1
            if indegree[i] == 0:
                heapq.heappush(ready, int(i))
    if len(order) < A.shape[0]:
        check_dag(A)
    return np.asarray(order, dtype=np.int64)


def find_cycle(A: Any) -> list[int] | None:
    r"""Returns one directed cycle as ``[v0, v1, ..., vk]`` (edges v0 -> v1 -> ... -> vk -> v0), or None.

    Arguments:
        A: (d, d) adjacency.

    Returns:
        Variable indices along the cycle, each once, or None for a DAG.

    Example:
        >>> find_cycle([[0, 1], [1, 0]])
        [0, 1]
        >>> find_cycle([[0, 0], [1, 0]]) is None
        True
    """
    A = _square(A)
    d = A.shape[0]
    children = [np.flatnonzero(A[:, j]).tolist() for j in range(d)]
    state = np.zeros(d, dtype=np.int8)  # 0 unvisited, 1 on the current path, 2 finished
    for root in range(d):
        if state[root]:
            continue
        # Iterative DFS: recursion would overflow on long chains (d in the thousands).
        path = [root]
        cursor = [0]
        state[root] = 1
        while path:
            node = path[-1]
            if cursor[-1] < len(children[node]):
                child = children[node][cursor[-1]]
                cursor[-1] += 1
                if state[child] == 1:
                    return path[path.index(child):]
                if state[child] == 0:
                    state[child] = 1
                    path.append(child)
                    cursor.append(0)
            else:
                state[node] = 2
                path.pop()
                cursor.pop()
    return None


def check_dag(A: Any, names: Sequence[str] | None = None) -> None:
    r"""Raises ValueError naming one cycle (``"x -> y -> x"``) unless ``A`` is acyclic.

    Arguments:
        A: (d, d) adjacency.
        names: optional variable names used in the message.

    Example:
        >>> check_dag([[0, 1], [1, 0]], names=["x", "y"])
        Traceback (most recent call last):
        ...
        ValueError: adjacency must be acyclic, found the cycle x -> y -> x
    """
    cycle = find_cycle(A)
    if cycle is None:
        return
    labels = [str(names[i]) if names is not None else str(i) for i in cycle + cycle[:1]]
    raise ValueError(f"adjacency must be acyclic, found the cycle {' -> '.join(labels)}")


def as_dag(adjacency: Any, names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str] | None]:
    r""":func:`as_adjacency` followed by :func:`check_dag`: the parsed DAG and its names.

    Example:
        >>> A, names = as_dag([("a", "b")])
        >>> A.astype(int).tolist(), names
        ([[0, 0], [1, 0]], ['a', 'b'])
    """
    A, found = as_adjacency(adjacency, names)
    check_dag(A, found)
    return A, found


def transitive_closure(A: Any) -> np.ndarray:
    r"""Returns R with ``R[i, j]`` True iff there is a directed path of one or more edges from j to i.

    Same orientation as ``A`` (``R[i, j]``: j is an ancestor of i). Cycles are allowed; a variable on
    a cycle is its own ancestor.

    Arguments:
        A: (d, d) adjacency.

    Returns:
        (d, d) bool array.

    Example:
        >>> transitive_closure([[0, 0, 0], [1, 0, 0], [0, 1, 0]]).astype(int)
        array([[0, 0, 0],
               [1, 0, 0],
               [1, 1, 0]])
    """
    R = _square(A).copy()
    # Warshall: after step k, R holds every path whose intermediate variables are < k+1.
    for k in range(R.shape[0]):
        R |= R[:, k : k + 1] & R[k : k + 1, :]
    return R


def levels(A: Any) -> np.ndarray:
    r"""Each variable's level: the length in edges of the longest directed path ending at it (roots: 0).

    Arguments:
        A: (d, d) adjacency of a DAG (``A[i, j] = 1``: j is a parent of i).

    Raises:
        ValueError: the graph has a cycle.

    Example:
        >>> levels(np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0]])).tolist()
        [0, 1, 2]
    """
    A = _square(A)
    level = np.zeros(A.shape[0], dtype=np.int64)
    for i in topological_order(A):
        parents = A[i]
        if parents.any():
            level[i] = level[parents].max() + 1
    return level


def depth(A: Any) -> int:
    r"""Length in edges of the longest directed path (0 when there are no edges).

    Arguments:
        A: (d, d) adjacency of a DAG.

    Raises:
        ValueError: the graph has a cycle.

    Example:
        >>> depth(np.tril(np.ones((4, 4)), -1))
        3
    """
    return int(levels(A).max(initial=0))


def descendants(A: Any, nodes: int | Iterable[int]) -> np.ndarray:
    r"""Marks every variable reachable from ``nodes`` along one or more edges.

    A start variable is marked only if it is itself reachable from a start variable (for example a
    child of another start variable), so the result is the set of *strict* descendants.

    Arguments:
        A: (d, d) adjacency.
        nodes: a variable index or an iterable of them.

    Returns:
        (d,) bool mask.

    Example:
        >>> descendants([[0, 0, 0], [1, 0, 0], [0, 1, 0]], 1).tolist()
        [False, False, True]
    """
    A = _square(A)
    return _reach(A.T, _node_indices(nodes, A.shape[0]))


def ancestors(A: Any, nodes: int | Iterable[int]) -> np.ndarray:
    r"""Marks every variable from which one of ``nodes`` is reachable along one or more edges.

    Arguments:
        A: (d, d) adjacency.
        nodes: a variable index or an iterable of them.

    Returns:
        (d,) bool mask (strict ancestors, as in :func:`descendants`).

    Example:
        >>> ancestors([[0, 0, 0], [1, 0, 0], [0, 1, 0]], 2).tolist()
        [True, True, False]
    """
    A = _square(A)
    return _reach(A, _node_indices(nodes, A.shape[0]))


def _reach(successor_rows: np.ndarray, start: list[int]) -> np.ndarray:
    # successor_rows[u] marks the variables one step away from u in the wanted direction.
    seen = np.zeros(successor_rows.shape[0], dtype=bool)
    frontier = np.zeros_like(seen)
    frontier[start] = True
    while frontier.any():
        step = successor_rows[frontier].any(axis=0) & ~seen
        seen |= step
        frontier = step
    return seen


def _node_indices(nodes: int | Iterable[int], d: int) -> list[int]:
    items = [nodes] if isinstance(nodes, (int, np.integer)) else list(nodes)
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"nodes must be variable indices (ints), got {v!r}")
        if not 0 <= v < d:
            raise ValueError(f"nodes entry {int(v)} is out of range for {d} variables")
    return [int(v) for v in items]


def _square(A: Any) -> np.ndarray:
    # Accepts bool arrays without copying; anything else goes through the full matrix checks.
    if isinstance(A, np.ndarray) and A.dtype == bool and A.ndim == 2 and A.shape[0] == A.shape[1]:
        return A
    return _from_matrix(A)


def _from_matrix(value: Any) -> np.ndarray:
    return as_binary_matrix(value, "adjacency", allow_zero=True, square=True).astype(bool)


def _looks_like_edge_list(value: Any) -> bool:
    if not isinstance(value, (list, tuple)):
        return False
    if len(value) == 0:
        return True
    if any(isinstance(e, tuple) for e in value):
        return True
    if all(isinstance(e, (list, tuple)) and len(e) == 2 for e in value):
        # Lists of 2-lists are matrices only when square (2 x 2) and free of names.
        square = len(value) == 2
        named = any(isinstance(v, str) for e in value for v in e)
        return named or not square
    return False


def _from_edges(edges: list[Any], names: list[str] | None) -> tuple[np.ndarray, list[str] | None]:
    for e in edges:
        if not isinstance(e, (list, tuple)) or len(e) != 2:
            raise ValueError(f"edge list entries must be (parent, child) pairs, got {e!r}")
    ends = [v for e in edges for v in e]
    if all(isinstance(v, str) for v in ends):
        if names is None:
            names = list(dict.fromkeys(ends))
        if not names:
            raise ValueError("an empty edge list needs names to know how many variables there are")
        index = {n: k for k, n in enumerate(names)}
        unknown = sorted({v for v in ends if v not in index})
        if unknown:
            raise ValueError(f"edge list mentions unknown variables {unknown}; names are {names}")
        pairs = [(index[p], index[c]) for p, c in edges]
        d = len(names)
    elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in ends):
        if any(v < 0 for v in ends):
            raise ValueError(f"edge list indices must be non-negative, got {min(ends)}")
        d = len(names) if names is not None else max(ends, default=-1) + 1
        if d == 0:
            raise ValueError("an empty edge list needs names to know how many variables there are")
        if ends and max(ends) >= d:
            raise ValueError(f"edge list index {max(ends)} is out of range for {d} named variables")
        pairs = [(int(p), int(c)) for p, c in edges]
    else:
        raise TypeError("edge list endpoints must be all strings (names) or all integers (indices)")
    A = _empty_graph(d, "an edge list")
    if pairs:
        parent, child = np.array(pairs, dtype=np.int64).T
        A[child, parent] = True
    return A, names


def _empty_graph(d: int, what: str) -> np.ndarray:
    # Edge lists and graphs hold O(edges); the dense matrix is d^2 bytes: check it before allocating.
    check_memory(d * d, f"{what} over {d} variables (a dense {d} x {d} adjacency matrix)",
                 "give fewer variables or raise the limit")
    return np.zeros((d, d), dtype=bool)


def _from_digraph(G: Any, names: list[str] | None) -> tuple[np.ndarray, list[str] | None]:
    nodes = list(G.nodes)
    if names is not None:
        by_name = {str(n): n for n in nodes}
        if sorted(by_name) != sorted(names):
            missing = sorted(set(by_name) - set(names))
            extra = sorted(set(names) - set(by_name))
            raise ValueError(f"names must list exactly the graph's nodes; missing {missing}, unknown {extra}")
        nodes = [by_name[n] for n in names]
    if not nodes:
        raise ValueError("the graph has no nodes")
    index = {n: k for k, n in enumerate(nodes)}
    A = _empty_graph(len(nodes), "a graph")
    for u, v in G.edges:
        A[index[v], index[u]] = True
    if names is None and nodes != list(range(len(nodes))):
        names = [str(n) for n in nodes]
        if len(set(names)) != len(names):
            raise ValueError("graph nodes must have distinct string forms to be used as names")
    return A, names


def _check_names(names: Sequence[str] | None) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, (Sequence, np.ndarray)):
        raise TypeError(f"names must be a sequence of strings, got {type(names).__name__}")
    out = list(names)
    for n in out:
        if not isinstance(n, str):
            raise TypeError(f"names must contain strings, got {n!r}")
    dup = sorted(n for n, k in Counter(out).items() if k > 1)  # not out.count: quadratic at d = 30,000
    if dup:
        raise ValueError(f"names must be distinct, repeated: {dup}")
    return out
