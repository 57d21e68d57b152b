r"""Additive-noise structural equation models: causal ground truth for interventions and counterfactuals.

Every model here has the form ``x_i = f_i(x_parents(i)) + e_i`` with independent zero-mean noise
``e_i`` (Gaussian or Laplace, given by its standard deviation), as in CAREFL (Khemakhem et al.
2021) and the StrNN paper's causal experiments. Additivity makes abduction exact: ``e_i = x_i -
f_i(x_parents)``, so counterfactuals are computed exactly, not estimated.

Variables are addressed by name or by index. ``adjacency[i, j]`` is True iff j is a parent of i.

Example:
    >>> sem = LinearGaussianSEM([("a", "b", 2.0)], noise_std=[1.0, 0.5], names=["a", "b"])
    >>> sem.interventional_mean({"a": 1.0}).tolist()
    [1.0, 2.0]
    >>> sem.counterfactual(np.array([0.0, 0.3]), {"a": 1.0}).tolist()
    [1.0, 2.3]
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._validate import as_positive_int, choice
from ..graph import as_adjacency, as_dag, descendants, topological_order
from ..variables import Variable, Variables

__all__ = ["LinearGaussianSEM", "LinearSEM", "Mechanism", "SEM"]

Mechanism = Callable[[np.ndarray], np.ndarray]
NOISES = ("gaussian", "laplace")
MONTE_CARLO_SAMPLES = 100_000


def _copied(attr: str, doc: str) -> property:
    """A read-only property that returns a copy of the array ``self.<attr>``.

    A SEM's arrays are its ground truth: callers get copies, so editing what a property returned
    never changes the model.

    Example:
        >>> sem = LinearSEM([("a", "b", 2.0)], 1.0)
        >>> sem.coefficients[1, 0] = 5.0
        >>> float(sem.coefficients[1, 0])
        2.0
    """
    return property(lambda self: getattr(self, attr).copy(), doc=doc)


class SEM:
    r"""Nonlinear additive-noise SEM ``x_i = f_i(x_parents(i)) + e_i``.

    Arguments:
        adjacency: the DAG in any form :func:`strnn_fast.graph.as_adjacency` accepts.
        mechanisms: one callable per variable (matrix order). ``mechanisms[i]`` receives the
            parents' values as an (n, k) array, parents in increasing index order, and returns
            (n,) values. None for a root means ``f_i = 0``.
        noise_std: standard deviation of each ``e_i``: a scalar, a length-d sequence, or a
            mapping from variable (name or index) to value covering every variable.
        noise: "gaussian" or "laplace" (Laplace scale ``std / sqrt(2)``).
        names: variable names (taken from ``adjacency`` when it carries them).

    Example:
        >>> sem = SEM([("u", "v")], [None, lambda p: np.sin(p[:, 0])], 1.0, noise="laplace")
        >>> x = sem.sample(4, seed=0)
        >>> np.allclose(sem.abduct(x)[:, 1], x[:, 1] - np.sin(x[:, 0]))
        True
    """

    def __init__(
        self,
        adjacency: Any,
        mechanisms: Sequence[Mechanism | None],
        noise_std: float | Sequence[float] | Mapping[Variable, float],
        *,
        noise: str = "gaussian",
        names: Sequence[str] | None = None,
    ) -> None:
        A, found = as_dag(adjacency, names)
        self._A = A
        self._names = found
        self._vars = Variables(found, A.shape[0])
        self._order = topological_order(A)
        self._parents = [np.flatnonzero(A[i]) for i in range(self.d)]
        if len(mechanisms) != self.d:
            raise ValueError(f"mechanisms must have one entry per variable ({self.d}), got {len(mechanisms)}")
        for i, f in enumerate(mechanisms):
            if f is None and self._parents[i].size:
                raise ValueError(f"mechanisms[{i}] is None but variable {self._label(i)!r} has parents")
            if f is not None and not callable(f):
                raise TypeError(f"mechanisms[{i}] must be callable or None, got {type(f).__name__}")
        self._mechanisms = list(mechanisms)
        self._noise = choice(noise, NOISES, "noise")
        self._noise_std = self._per_variable(noise_std, "noise_std")
        if (self._noise_std < 0).any():
            raise ValueError(f"noise_std must be non-negative, got {self._noise_std.tolist()}")

    @property
    def d(self) -> int:
        """Number of variables."""
        return int(self._A.shape[0])

    @property
    def names(self) -> list[str] | None:
        """Variable names, or None."""
        return None if self._names is None else list(self._names)

    adjacency = _copied("_A", "(d, d) bool array, ``[i, j]`` True iff j is a parent of i.")
    order = _copied("_order", "A topological order of the variables (ties by index).")

    @property
    def noise(self) -> str:
        """Noise family: "gaussian" or "laplace"."""
        return self._noise

    noise_std = _copied("_noise_std", "(d,) standard deviations of the noise terms.")

    def index(self, variable: Variable) -> int:
        r"""Index of a variable given by name or index.

        Example:
            >>> LinearSEM([("a", "b", 1.0)], 1.0).index("b")
            1
        """
        return self._vars.index(variable)

    def parents(self, variable: Variable) -> np.ndarray:
        """Indices of the parents of ``variable``, increasing."""
        return self._parents[self.index(variable)].copy()

    def sample_noise(self, n: int, seed: Any = None) -> np.ndarray:
        r"""Draws (n, d) independent noise values ``e``.

        Arguments:
            n: number of samples.
            seed: anything ``numpy.random.default_rng`` accepts.
        """
        n = as_positive_int(n, "n")
        rng = np.random.default_rng(seed)
        if self._noise == "gaussian":
            return rng.standard_normal((n, self.d)) * self._noise_std
        return rng.laplace(0.0, 1.0, size=(n, self.d)) * (self._noise_std / np.sqrt(2.0))

    def from_noise(self, noise: np.ndarray, do: Mapping[Variable, Any] | None = None) -> np.ndarray:
        r"""Pushes noise values through the equations, intervened variables set to their ``do`` values.

        Arguments:
            noise: (n, d) noise values.
            do: mapping variable -> value (scalar or (n,) array); None or {} for no intervention.

        Returns:
            (n, d) samples.
        """
        noise = self._rows(noise, "noise")
        fixed = self._parse_do(do, len(noise))
        x = np.empty_like(noise)
        for i in self._order:
            x[:, i] = fixed[i] if i in fixed else self._f(i, x) + noise[:, i]
        return x

    def abduct(self, x: np.ndarray) -> np.ndarray:
        r"""Recovers the noise that produced ``x`` exactly: ``e_i = x_i - f_i(x_parents)``.

        Arguments:
            x: (n, d) observations.

        Returns:
            (n, d) noise values.
        """
        x = self._rows(x, "x")
        return np.stack([x[:, i] - self._f(i, x) for i in range(self.d)], axis=1)

    def sample(self, n: int, seed: Any = None) -> np.ndarray:
        r"""Draws (n, d) observational samples.

        Example:
            >>> LinearSEM([(0, 1, 1.0)], [1.0, 1.0]).sample(3, seed=0).shape
            (3, 2)
        """
        return self.from_noise(self.sample_noise(n, seed))

    def interventional_samples(self, do: Mapping[Variable, Any], n: int, seed: Any = None) -> np.ndarray:
        r"""Draws (n, d) samples from the model under ``do(x_k = value, ...)``.

        Arguments:
            do: mapping variable -> value (scalar or (n,) array).
            n: number of samples.
            seed: anything ``numpy.random.default_rng`` accepts.
        """
        return self.from_noise(self.sample_noise(n, seed), do)

    def interventional_mean(self, do: Mapping[Variable, float], n: int | None = None, seed: Any = 0) -> np.ndarray:
        r"""E[x | do(...)], estimated from ``n`` samples (default 100 000).

        Arguments:
            do: mapping variable -> scalar value.
            n: Monte-Carlo sample count.
            seed: seed of the Monte-Carlo draw.

        Returns:
            (d,) means.
        """
        n = MONTE_CARLO_SAMPLES if n is None else n
        return self.interventional_samples(self._scalar_do(do), n, seed).mean(axis=0)

    def counterfactual(self, x_obs: np.ndarray, do: Mapping[Variable, Any]) -> np.ndarray:
        r"""Exact counterfactuals: what ``x_obs`` would have been under ``do``, with the same noise.

        Non-descendants of the intervened variables keep their observed values (bit for bit);
        descendants are recomputed from their equations and the abducted noise.

        Arguments:
            x_obs: (d,) or (n, d) observations.
            do: mapping variable -> value (scalar or (n,) array).

        Returns:
            Array of the shape of ``x_obs``.
        """
        single = np.ndim(x_obs) == 1
        x = self._rows(np.atleast_2d(x_obs), "x_obs")
        fixed = self._parse_do(do, len(x))
        noise = self.abduct(x)
        changed = descendants(self._A, list(fixed)) if fixed else np.zeros(self.d, dtype=bool)
        out = x.copy()
        for i in self._order:
            if i in fixed:
                out[:, i] = fixed[i]
            elif changed[i]:
                out[:, i] = self._f(i, out) + noise[:, i]
        return out[0] if single else out

    def _f(self, i: int, x: np.ndarray) -> np.ndarray:
        f = self._mechanisms[i]
        if f is None:
            return np.zeros(len(x))
        value = np.asarray(f(x[:, self._parents[i]]), dtype=np.float64)
        if value.shape != (len(x),):
            raise ValueError(f"mechanism of variable {self._label(i)!r} returned shape {value.shape}, "
                             f"expected ({len(x)},)")
        return value

    def _label(self, i: int) -> str:
        return self._vars.label(i)

    def _rows(self, x: Any, name: str) -> np.ndarray:
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.d:
            raise ValueError(f"{name} must have shape (n, {self.d}), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} must be finite (found NaN or inf)")
        return arr

    def _parse_do(self, do: Mapping[Variable, Any] | None, n: int) -> dict[int, np.ndarray]:
        fixed: dict[int, np.ndarray] = {}
        for i, _, value in self._vars.do_items(do):
            v = np.asarray(value, dtype=np.float64)
            if v.ndim > 1 or (v.ndim == 1 and v.shape[0] != n):
                raise ValueError(f"do value for {self._label(i)!r} must be a scalar or have shape ({n},), "
                                 f"got {v.shape}")
            if not np.isfinite(v).all():
                raise ValueError(f"do value for {self._label(i)!r} must be finite")
            fixed[i] = np.broadcast_to(v, (n,))
        return fixed

    def _scalar_do(self, do: Mapping[Variable, Any]) -> dict[int, float]:
        if isinstance(do, Mapping):
            for var, value in do.items():
                if np.ndim(value) != 0:
                    raise ValueError(f"interventional means need scalar do values; {var!r} got an array")
        return {i: float(v[0]) for i, v in self._parse_do(do, 1).items()}

    def _per_variable(self, value: Any, name: str) -> np.ndarray:
        if isinstance(value, Mapping):
            out = np.full(self.d, np.nan)
            for var, v in value.items():
                out[self.index(var)] = float(v)
            missing = [self._label(i) for i in np.flatnonzero(np.isnan(out))]
            if missing:
                raise ValueError(f"{name} lacks values for variables {missing}")
            return out
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            arr = np.full(self.d, float(arr))
        if arr.shape != (self.d,):
            raise ValueError(f"{name} must be a scalar, {self.d} values or a mapping, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} must be finite, got {arr.tolist()}")
        return arr


class LinearSEM(SEM):
    r"""Linear additive-noise SEM ``x_i = intercept_i + sum_j W[i, j] x_j + e_i``.

    Arguments:
        edges: ``(parent, child, coefficient)`` triples, endpoints all names or all indices.
        noise_std: scalar, length-d sequence, or mapping variable -> std.
        names: variable order. Without it, named variables are numbered in order of first
            appearance, and indexed ones span ``len(noise_std)`` (or the largest index + 1).
        noise: "gaussian" or "laplace".
        intercept: scalar, length-d sequence, or mapping (default 0).

    Example:
        >>> sem = LinearSEM([(0, 1, -2.0)], [1.0, 1.0], noise="laplace", intercept=[3.0, 0.0])
        >>> sem.interventional_mean({}).tolist()
        [3.0, -6.0]
    """

    def __init__(
        self,
        edges: Sequence[tuple[Variable, Variable, float]],
        noise_std: float | Sequence[float] | Mapping[Variable, float],
        names: Sequence[str] | None = None,
        *,
        noise: str = "gaussian",
        intercept: float | Sequence[float] | Mapping[Variable, float] = 0.0,
    ) -> None:
        for e in edges:
            if not isinstance(e, (tuple, list)) or len(e) != 3:
                raise ValueError(f"edges must be (parent, child, coefficient) triples, got {e!r}")
        pairs = [(p, c) for p, c, _ in edges]
        A, found = as_adjacency(pairs, names if names is not None else self._index_names(pairs, noise_std))
        if names is None and not any(isinstance(v, str) for e in pairs for v in e):
            found = None  # the placeholder names only fixed the count of indexed variables
        coef = np.zeros(A.shape)
        lookup = {n: k for k, n in enumerate(found)} if found is not None else None
        for p, c, w in edges:
            i, j = (lookup[c], lookup[p]) if isinstance(c, str) else (int(c), int(p))
            if coef[i, j] != 0.0:
                raise ValueError(f"edge {p!r} -> {c!r} is listed twice")
            if not np.isfinite(w) or w == 0.0:
                raise ValueError(f"edge {p!r} -> {c!r} needs a finite non-zero coefficient, got {w!r}")
            coef[i, j] = float(w)
        mechanisms = [_Affine(coef[i, A[i]], 0.0) for i in range(A.shape[0])]
        super().__init__(A, mechanisms, noise_std, noise=noise, names=found)
        self._W = coef
        # The intercept can only be parsed once the variables are known (it may name them).
        self._intercept = self._per_variable(intercept, "intercept")
        for f, b in zip(mechanisms, self._intercept):
            f.bias = float(b)

    coefficients = _copied("_W", "(d, d) weights, ``[i, j]`` the coefficient of parent j in the equation of i.")
    intercept = _copied("_intercept", "(d,) constants of the equations.")

    def interventional_mean(self, do: Mapping[Variable, float], n: int | None = None, seed: Any = 0) -> np.ndarray:
        r"""E[x | do(...)]: exact when ``n`` is None (noise has mean zero), else a Monte-Carlo estimate.

        Example:
            >>> LinearSEM([(0, 1, 2.0)], 1.0, intercept=1.0).interventional_mean({0: 4.0}).tolist()
            [4.0, 9.0]
        """
        if n is not None:
            return super().interventional_mean(do, n, seed)
        fixed = self._scalar_do(do)
        mean = np.zeros(self.d)
        for i in self._order:
            mean[i] = fixed[i] if i in fixed else self._intercept[i] + self._W[i] @ mean
        return mean

    def _index_names(self, pairs: list[tuple[Variable, Variable]], noise_std: Any) -> list[str] | None:
        # Integer endpoints with per-variable noise: the noise vector, not the edges, says how many
        # variables there are (trailing variables may have no edges).
        ends = [v for e in pairs for v in e]
        if any(isinstance(v, str) for v in ends) or isinstance(noise_std, Mapping) or np.ndim(noise_std) != 1:
            return None
        return [str(k) for k in range(len(noise_std))]


class LinearGaussianSEM(LinearSEM):
    r"""Linear SEM with Gaussian noise; every interventional distribution is a known Gaussian.

    Arguments are those of :class:`LinearSEM` without ``noise``.

    Example:
        >>> sem = LinearGaussianSEM([(0, 1, 1.0)], [1.0, 1.0])
        >>> sem.interventional_distribution({})[1].tolist()
        [[1.0, 1.0], [1.0, 2.0]]
    """

    def __init__(
        self,
        edges: Sequence[tuple[Variable, Variable, float]],
        noise_std: float | Sequence[float] | Mapping[Variable, float],
        names: Sequence[str] | None = None,
        *,
        intercept: float | Sequence[float] | Mapping[Variable, float] = 0.0,
    ) -> None:
        super().__init__(edges, noise_std, names, noise="gaussian", intercept=intercept)

    def interventional_distribution(self, do: Mapping[Variable, float]) -> tuple[np.ndarray, np.ndarray]:
        r"""Mean (d,) and covariance (d, d) of x under ``do`` (intervened variables have zero variance).

        ``x = M (c + e)`` with ``M = (I - W_do)^-1``, where ``W_do`` drops the intervened rows.
        """
        fixed = self._scalar_do(do)
        W = self._W.copy()
        var = self._noise_std**2
        for i in fixed:
            W[i] = 0.0
            var[i] = 0.0
        M = np.linalg.inv(np.eye(self.d) - W)
        return self.interventional_mean(do), (M * var) @ M.T


class _Affine:
    # A class rather than a closure so that SEMs pickle (multiprocessing, saving ground truth).
    def __init__(self, weights: np.ndarray, bias: float) -> None:
        self.weights, self.bias = weights, bias

    def __call__(self, parents: np.ndarray) -> np.ndarray:
        return self.bias + parents @ self.weights
