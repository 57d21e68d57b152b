r"""Exact mask factorization: maximizes the paper's Eq. 2 (or Eq. 3) as a MILP solved by HiGHS.

Model (L hidden layers of widths h_1..h_L, masks M_1..M_{L+1}, input side first):

* every mask entry is a binary variable;
* ``C_l[k, j]`` counts the paths from input j to unit k of layer l (``C_1 = M_1^T``) and
  ``z = M * C`` products are linearized with the bounds ``z <= C``, ``z <= U M`` where U is the
  largest possible count (the product of the widths below); the output counts are kept only where
  A = 1 and each must be >= 1;
* zeros of A are enforced with reachability: ``R_l[k, j] >= M_l[k', k] + R_{l-1}[k', j] - 1``
  (``R_1 = M_1^T``) is at least the true 0/1 reachability, and ``R_L[k, j] + M_{L+1}[k, i] <= 1``
  wherever ``A[i, j] = 0``;
* the hidden units of each layer are interchangeable, so they are ordered by a binary key of
  their incoming mask column (layer by layer from the input side, which keeps an optimum);
* inputs no output depends on and outputs with an empty row get no mask entries, which loses
  no path.

Maximizing pushes every product to its upper bound, so one-sided bounds give the exact count at the
optimum. With ``var_penalty > 0`` the objective no longer pushes counts up, so the products get
the lower McCormick bound ``z >= C - U (1 - M)`` too and are then exact for binary masks.

Eq. 3 is taken as ``paths - var_penalty * Var(T)`` with ``T_i`` the paths into output i (all
outputs, population variance). With ``E_i = n T_i - S`` (n outputs, S the paths) this is
``S - var_penalty / n^3 * sum_i E_i^2``. The ``E_i`` are integers, and the secant
``s >= (2a + 1) E - a (a + 1)`` is exact at E = a and E = a + 1 and below E^2 at every other
integer, so ``s_i`` under such secants is an exact model of ``E_i^2`` on integers wherever a
secant touches. Secants are added lazily: solve, add them at each ``E_i`` where
``s_i < E_i^2``, resolve. When a solve is optimal and violates no secant, the masks are optimal for
Eq. 3 itself (up to HiGHS's relative gap of 1e-6); every relaxed dual bound is a valid upper bound.

Example:
    >>> import numpy as np
    >>> A = np.tril(np.ones((3, 3)), -1)
    >>> res = factorize_exact(A, (2,))
    >>> res.optimal, res.paths, res.greedy_paths
    (True, 4, 4)
"""
from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import LinearConstraint, milp
from scipy.sparse import coo_array

from . import _C
from ._validate import as_binary_matrix, as_real, as_sizes

MAX_VARIABLES = 50_000
MAX_CUT_ROUNDS = 50
# Unit keys above this many fan-in bits would lose integrality in double precision.
_KEY_BITS = 20


@dataclass(frozen=True)
class ExactResult:
    r"""Outcome of :func:`factorize_exact`.

    Attributes:
        masks: uint8 masks, input side first, each (fan_in x fan_out).
        paths: Eq. 2 (number of input->output paths) of ``masks``.
        objective: Eq. 3 of ``masks`` (equals ``paths`` when var_penalty = 0).
        bound: HiGHS's upper bound on the best objective (== objective when optimal); inf when
            HiGHS stopped before reporting one (scipy drops it when no solution beat the cutoff).
        optimal: True iff ``masks`` are proven optimal.
        status: "optimal", "feasible" (stopped early with HiGHS's best solution) or "greedy"
            (stopped early; nothing better than the greedy masks was found).
        greedy_paths: Eq. 2 of the greedy masks, 0 when greedy cannot represent A at these widths.
        gap: ``(bound - greedy objective) / max(|bound|, 1)``, the objective being Eq. 2 or Eq. 3
            as optimized (so >= 1 is possible under Eq. 3); NaN when greedy is invalid.
        seconds: wall time, greedy included.
    """

    masks: list[np.ndarray]
    paths: int
    objective: float
    bound: float
    optimal: bool
    status: str
    greedy_paths: int
    gap: float
    seconds: float


def factorize_exact(
    adjacency: Any,
    hidden_sizes: Sequence[int],
    *,
    var_penalty: float = 0.0,
    time_limit: float = 10.0,
    warm_start: bool = True,
) -> ExactResult:
    r"""Masks with the most input->output paths (Eq. 2), or the best Eq. 3, found by MILP.

    Arguments:
        adjacency: binary (n_out x n_in) matrix, A[i, j] = 1 iff output i may depend on input j.
        hidden_sizes: widths of the hidden layers (at least one).
        var_penalty: weight of the variance of per-output path totals (Eq. 3); 0 gives Eq. 2.
        time_limit: seconds for HiGHS over all solves; the best masks found so far come back after.
        warm_start: require at least the greedy masks' objective, which prunes the search.

    Returns:
        An :class:`ExactResult`.

    Raises:
        ValueError: bad arguments, a model over ``MAX_VARIABLES`` variables, or hidden layers too
            narrow for any exact factorization.
        RuntimeError: the time ran out before any valid factorization was found.
        KeyboardInterrupt: Ctrl-C, within a tenth of a second (HiGHS itself cannot be stopped: the
            abandoned solve runs on in a background thread until its time limit).

    Example:
        >>> res = factorize_exact([[0, 0], [1, 0]], (3,))
        >>> res.paths, res.masks[0].tolist()
        (3, [[1, 1, 1], [0, 0, 0]])
    """
    start = time.perf_counter()
    A = as_binary_matrix(adjacency, "adjacency")
    sizes = as_sizes(hidden_sizes)
    if not sizes:
        raise ValueError("hidden_sizes must name at least one hidden layer (with none, the only mask is adjacency.T)")
    var_penalty = as_real(var_penalty, "var_penalty", non_negative=True)
    time_limit = as_real(time_limit, "time_limit", positive=True)
    if not isinstance(warm_start, bool):
        raise TypeError(f"warm_start must be a bool, got {warm_start!r}")
    needed = _n_variables(A, sizes, var_penalty > 0)
    if needed > MAX_VARIABLES:
        raise ValueError(
            f"adjacency {A.shape} with hidden_sizes={sizes} needs {needed} MILP variables, over the "
            f"limit of {MAX_VARIABLES} (exact.MAX_VARIABLES); use method='greedy' or smaller layers"
        )

    greedy, _ = _C.greedy_factorize(A, sizes)
    greedy = [np.asarray(m) for m in greedy] if _C.check_masks(greedy, A) else None
    best = _Candidate.of(greedy, var_penalty, "greedy") if greedy is not None else None
    greedy_best = best

    model = _Model(A, sizes, var_penalty)
    if var_penalty > 0:
        model.add_secants(np.arange(A.shape[0]), np.zeros(A.shape[0], np.int64))
        model.add_secants(np.arange(A.shape[0]), np.full(A.shape[0], -1))
        if best is not None:
            model.add_secants(np.arange(A.shape[0]), best.errors)

    optimal, bound = False, math.inf
    for _ in range(MAX_CUT_ROUNDS):
        remaining = time_limit - (time.perf_counter() - start)
        if remaining <= 0:
            break
        cutoff = best.objective if (warm_start and best is not None) else None
        res = model.solve(remaining, cutoff)
        if res.mip_dual_bound is not None and np.isfinite(res.mip_dual_bound):
            bound = min(bound, -float(res.mip_dual_bound))
        if res.status == 2 and best is None:
            raise ValueError(
                f"hidden_sizes={sizes} is too narrow: no masks of these widths have exactly the "
                f"adjacency's pattern (the MILP is infeasible); widen the hidden layers"
            )
        if res.x is None:
            break
        found = _Candidate.of(model.masks(res.x), var_penalty, "feasible")
        if best is None or found.objective > best.objective:
            best = found
        violated = model.violated_secants(res.x, found.errors)
        if res.status != 0:
            break
        if violated.size == 0:
            optimal, bound = True, best.objective
            break
        model.add_secants(violated, found.errors[violated])
        model.add_secants(violated, found.errors[violated] - 1)

    if best is None:
        raise RuntimeError(
            f"time_limit={time_limit} s ran out before any valid factorization was found; "
            f"raise time_limit or widen hidden_sizes={sizes}"
        )
    gap = (bound - greedy_best.objective) / max(abs(bound), 1.0) if greedy_best is not None else math.nan
    return ExactResult(
        masks=best.masks,
        paths=best.paths,
        objective=best.objective,
        bound=bound,
        optimal=optimal,
        status="optimal" if optimal else best.source,
        greedy_paths=greedy_best.paths if greedy_best is not None else 0,
        gap=float(gap),
        seconds=time.perf_counter() - start,
    )


@dataclass(frozen=True)
class _Candidate:
    """Valid masks with their true Eq. 2 / Eq. 3 values (never the solver's)."""

    masks: list[np.ndarray]
    paths: int
    objective: float
    errors: np.ndarray  # E_i = n * T_i - S, integers
    source: str

    @staticmethod
    def of(masks: list[np.ndarray], var_penalty: float, source: str) -> _Candidate:
        totals = _C.path_counts(masks).sum(axis=1).astype(np.int64)
        n, paths = totals.size, int(totals.sum())
        errors = n * totals - paths
        objective = paths - var_penalty * float(np.square(errors, dtype=np.float64).sum()) / n**3
        return _Candidate(masks, paths, float(objective), errors, source)


class _Model:
    """The MILP in scipy.optimize.milp form (maximization stored as minimization)."""

    def __init__(self, A: np.ndarray, sizes: tuple[int, ...], var_penalty: float) -> None:
        self.A, self.var_penalty = A, var_penalty
        self._lb: list[np.ndarray] = []
        self._ub: list[np.ndarray] = []
        self._int: list[np.ndarray] = []
        self._rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._n, self._m = 0, 0
        exact_counts = var_penalty > 0
        n_out, n_in = A.shape
        widths = (n_in, *sizes, n_out)
        self.mask_vars = [self._var((a, b), 0, 1, integer=True) for a, b in zip(widths[:-1], widths[1:])]
        # Entries that can only feed zero columns / rows of A carry no path: fixing them to 0
        # keeps an optimum and removes symmetric choices.
        self._fix_zero(self.mask_vars[0][~A.any(axis=0), :])
        self._fix_zero(self.mask_vars[-1][:, ~A.any(axis=1)])
        for M in self.mask_vars[:-1]:
            self._order_units(M)

        # terms[k', k, j]: paths from input j into unit k of the newest layer through unit k' below.
        reach = self.mask_vars[0].T
        terms, bound = reach[None], 1
        for M in self.mask_vars[1:-1]:
            if terms.shape[0] > 1:
                count = self._var(terms.shape[1:], 0, bound * terms.shape[0])
                self._sum_equals(terms.transpose(1, 2, 0).reshape(-1, terms.shape[0]), count.ravel())
                bound *= terms.shape[0]
            else:
                count = terms[0]
            terms = self._products(count[:, None, :], M[:, :, None], bound, exact_counts)  # (h_prev, h, n_in)
            new_reach = self._var(terms.shape[1:], 0, 1)
            cols = np.stack(np.broadcast_arrays(new_reach[None], M[:, :, None], reach[:, None, :]), axis=-1)
            self._add(cols.reshape(-1, 3), np.array([[1.0, -1.0, -1.0]]), -1, np.inf)
            reach = new_reach

        last = self.mask_vars[-1]  # (h_L, n_out)
        rows_nz, cols_nz = A.any(axis=1), A.any(axis=0)
        zi, zj = np.nonzero((A == 0) & rows_nz[:, None] & cols_nz[None, :])
        cols = np.stack(np.broadcast_arrays(reach[:, zj], last[:, zi]), axis=-1).reshape(-1, 2)
        self._add(cols, np.ones((1, 2)), -np.inf, 1)
        oi, oj = np.nonzero(A)
        self.out_index = oi
        # One variable per (path term, allowed pair): with one or two hidden layers every factor
        # is binary, which keeps the relaxation tight.
        paths = self._products(terms[:, :, oj], last[None, :, oi], bound, exact_counts)
        self.paths = paths.reshape(-1, oi.size)  # (terms, nnz)
        self._add(self.paths.T, np.ones((1, self.paths.shape[0])), 1, np.inf)

        n = n_out
        self.sq = self._var((n,), 0, np.inf) if var_penalty > 0 else np.zeros(0, np.int64)
        self.cost = np.zeros(self._n)
        self.cost[self.paths.ravel()] = -1.0
        self.cost[self.sq] = var_penalty / n**3
        self._static_rows = len(self._rows)

    # -- variables and rows -------------------------------------------------------------------
    def _var(self, shape: tuple[int, ...], lb: float, ub: float, integer: bool = False) -> np.ndarray:
        size = int(np.prod(shape))
        idx = np.arange(self._n, self._n + size).reshape(shape)
        self._n += size
        self._lb.append(np.full(size, float(lb)))
        self._ub.append(np.full(size, float(ub)))
        self._int.append(np.full(size, int(integer)))
        return idx

    def _add(self, cols: np.ndarray, vals: np.ndarray, lo: Any, hi: Any) -> None:
        """Adds one row per row of ``cols`` (m x k variable indices) with coefficients ``vals``."""
        m = len(cols)
        if m == 0:
            return
        cols = np.asarray(cols).reshape(m, -1)
        vals = np.broadcast_to(np.asarray(vals, float), cols.shape)
        rows = np.repeat(np.arange(self._m, self._m + m), cols.shape[1])
        self._rows.append((rows, cols.ravel(), vals.ravel(), np.broadcast_to(lo, m), np.broadcast_to(hi, m)))
        self._m += m

    def _fix_zero(self, idx: np.ndarray) -> None:
        ub = np.concatenate(self._ub)
        ub[idx.ravel()] = 0
        self._ub = [ub]

    def _sum_equals(self, parts: np.ndarray, total: np.ndarray) -> None:
        cols = np.concatenate([parts, total[:, None]], axis=1)
        vals = np.concatenate([np.ones(parts.shape[1]), [-1.0]])
        self._add(cols, vals, 0, 0)

    def _products(self, count: np.ndarray, M: np.ndarray, bound: int, exact: bool) -> np.ndarray:
        """Variables z = M * count (broadcast shapes), linearized with the count's upper bound."""
        c, m = np.broadcast_arrays(count, M)
        z = self._var(c.shape, 0, bound)
        flat = np.stack([z.ravel(), c.ravel(), m.ravel()], axis=1)
        self._add(flat[:, :2], np.array([[1.0, -1.0]]), -np.inf, 0)
        self._add(flat[:, [0, 2]], np.array([[1.0, -bound]]), -np.inf, 0)
        if exact:
            self._add(flat, np.array([[1.0, -1.0, -bound]]), -bound, np.inf)
        return z

    def _order_units(self, M: np.ndarray) -> None:
        """Orders the units of a layer by a binary key of their incoming column (non-increasing)."""
        if M.shape[1] < 2:
            return
        bits = min(M.shape[0], _KEY_BITS)
        weights = 2.0 ** np.arange(bits)
        cols = np.concatenate([M[:bits, :-1].T, M[:bits, 1:].T], axis=1)
        self._add(cols, np.concatenate([weights, -weights]), 0, np.inf)

    def add_secants(self, outputs: np.ndarray, at: np.ndarray) -> None:
        """Adds ``s_i >= (2a+1) E_i - a(a+1)`` with ``E_i = n T_i - S`` for each (output, a)."""
        n = self.A.shape[0]
        terms = self.paths.shape[0]
        for i, a in zip(outputs.tolist(), np.asarray(at).tolist()):
            slope = 2 * a + 1
            coef = np.where(self.out_index == i, n - 1.0, -1.0) * -slope
            cols = np.concatenate([[self.sq[i]], self.paths.T.ravel()])
            vals = np.concatenate([[1.0], np.repeat(coef, terms)])
            self._add(cols[None], vals[None], -a * (a + 1), np.inf)

    def violated_secants(self, x: np.ndarray, errors: np.ndarray) -> np.ndarray:
        """Outputs whose s_i lies below E_i^2 at the solution ``x``."""
        if self.var_penalty == 0:
            return np.zeros(0, np.int64)
        squares = np.square(errors.astype(np.float64))
        return np.nonzero(x[self.sq] < squares - 1e-6 * np.maximum(1.0, squares))[0]

    # -- solving ------------------------------------------------------------------------------
    def solve(self, time_limit: float, cutoff: float | None) -> Any:
        rows, cols, vals, lo, hi = (np.concatenate(part) for part in zip(*self._rows))
        m = self._m
        if cutoff is not None:
            # The objective row: -cost . x >= cutoff, relaxed a little so the incumbent stays feasible.
            nz = np.nonzero(self.cost)[0]
            rows = np.concatenate([rows, np.full(nz.size, m)])
            cols = np.concatenate([cols, nz])
            vals = np.concatenate([vals, -self.cost[nz]])
            lo = np.concatenate([lo, [cutoff - 1e-6 * max(1.0, abs(cutoff))]])
            hi = np.concatenate([hi, [np.inf]])
            m += 1
        matrix = coo_array((vals, (rows, cols)), shape=(m, self._n)).tocsr()
        integer = self.var_penalty == 0
        options: dict[str, Any] = {"time_limit": time_limit, "mip_rel_gap": 0.0 if integer else 1e-6}
        if integer:
            # Eq. 2 is integral, so a gap below 1 proves optimality; scipy passes this to HiGHS verbatim.
            options["mip_abs_gap"] = 0.999

        def run() -> Any:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Unrecognized options", category=RuntimeWarning)
                return milp(
                    self.cost,
                    integrality=np.concatenate(self._int),
                    bounds=(np.concatenate(self._lb), np.concatenate(self._ub)),
                    constraints=LinearConstraint(matrix, lo, hi),
                    options=options,
                )

        return _interruptible(run)

    def masks(self, x: np.ndarray) -> list[np.ndarray]:
        return [np.ascontiguousarray(x[M] > 0.5, dtype=np.uint8) for M in self.mask_vars]


def _interruptible(call: Callable[[], Any]) -> Any:
    r"""Returns ``call()``, run in a daemon thread while this one waits, so that Ctrl-C stops the wait.

    HiGHS releases the GIL but never checks for signals, and scipy offers no way to stop it, so a
    solve in this thread delayed Ctrl-C until its time limit. Waiting on a thread is interruptible;
    the abandoned solve ends at its own time limit (a daemon thread does not keep the process alive).

    Example:
        >>> _interruptible(lambda: 6 * 7)
        42
    """
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = call()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    worker = threading.Thread(target=work, name="strnn_fast-highs", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
    if "error" in box:
        raise box["error"]
    return box["value"]


def _n_variables(A: np.ndarray, sizes: tuple[int, ...], penalized: bool) -> int:
    """Variables :class:`_Model` would create, computed before building it."""
    n_out, n_in = A.shape
    widths = (n_in, *sizes, n_out)
    masks = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    terms = sum(p * h * n_in + h * n_in for p, h in zip(sizes[:-1], sizes[1:]))
    counts = sum(h * n_in for h in sizes[1:-1])
    paths = (sizes[-2] if len(sizes) > 1 else 1) * sizes[-1] * int(A.sum())
    return masks + terms + counts + paths + (n_out if penalized else 0)
