r"""CausalFlow: a structured autoregressive flow read as a learned structural equation model.

With an affine (or any monotone) autoregressive flow on the causal graph and no permutation
between steps, the latent ``z_i`` of variable ``i`` depends on ``x_i`` and its ancestors only, so
it plays the role of ``i``'s exogenous noise. Interventions sample the noise and regenerate the
variables with the intervened ones held fixed; counterfactuals recover the noise of observed rows
(abduction), set the intervened values (action) and regenerate their descendants (prediction).
See :mod:`strnn_fast.causal.queries` for the algorithm.

``structure="graph"`` is the causal StrAF of the StrNN paper; ``structure="full"`` is CAREFL
(Khemakhem et al., 2021): every variable may depend on all its predecessors in a topological
order of the graph.

Example:
    >>> import numpy as np, torch
    >>> g = [("x", "y"), ("y", "w")]
    >>> x = torch.randn(400, 1)
    >>> y = 2 * x + 0.5 * torch.randn(400, 1)
    >>> w = -y + 0.5 * torch.randn(400, 1)
    >>> model = CausalFlow(g, hidden_sizes=(8,), flow_steps=1)
    >>> _ = model.fit(torch.cat([x, y, w], 1), epochs=2, verbose=False)
    >>> sorted(model.interventional_mean({"y": 1.0}, 100, seed=0))
    ['w', 'x', 'y']
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._memory import check_memory
from .._validate import as_flag, as_positive_int, as_seed, check_fits_dtype, choice
from ..data.dataset import split
from ..flows.straf import StrAF
from ..graph import as_dag, topological_order
from ..serialization import Savable
from ..standardize import Standardized
from ..variables import is_frame
from .query_io import QueryIO
from .queries import affected, do_inverse

__all__ = ["CausalFlow"]

STRUCTURES = ("graph", "full")


class CausalFlow(QueryIO, Savable, nn.Module):
    r"""Structured autoregressive flow on a causal DAG, answering interventional and
    counterfactual queries.

    Arguments:
        adjacency: the causal graph: a (d, d) 0/1 matrix (``A[i, j] = 1``: j causes i), an edge
            list of ``(cause, effect)`` pairs, or a networkx DiGraph. Any variable order.
        names: variable names in matrix order (taken from the edge list or graph otherwise).
        structure: "graph" (causal StrAF: the flow follows the graph) or "full" (CAREFL: the
            flow follows the full ordering of a topological sort of the graph).
        normalizer: the flow's normalizer, "affine", "spline" or "umnn".
        prior: latent (exogenous noise) distribution, "normal" or "laplace".
        standardize: fit on variables scaled to zero mean and unit variance (statistics of the
            training split, by :class:`strnn_fast.standardize.Standardizer`); answers stay in
            the data's units.
        **flow_options: passed to :class:`strnn_fast.flows.StrAF` (``hidden_sizes``,
            ``flow_steps``, ``scale_bound``, ``bins``, ...). Must be JSON-friendly so that
            ``save`` can record them. ``context_features=C`` (with an optional (d, C)
            ``context_adjacency`` and ``context_names``) adds covariates: the model is
            ``p(x | c)``, every method takes ``context=`` (one (C,) row for all, or one row per
            sample), covariates are standardized like the variables and are conditioned on,
            never intervened on.

    Raises:
        ValueError: the graph has a cycle (named in the message), or a bad option.

    Example:
        >>> CausalFlow([[0, 0], [1, 0]], names=["a", "b"], structure="full").names
        ['a', 'b']
        >>> c = torch.randn(200, 1)
        >>> x = torch.cat([c + 0.1 * torch.randn(200, 1), torch.randn(200, 1)], 1)
        >>> m = CausalFlow([[0, 0], [1, 0]], hidden_sizes=(8,), flow_steps=1, context_features=1)
        >>> _ = m.fit(x, context=c, epochs=1, verbose=False)
        >>> m.interventional_samples({1: 0.5}, 3, context=torch.ones(1), output="tensor").shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        adjacency: Any,
        *,
        names: Sequence[str] | None = None,
        structure: str = "graph",
        normalizer: str = "affine",
        prior: str = "normal",
        standardize: bool = True,
        **flow_options: Any,
    ):
        super().__init__()
        A, found = as_dag(adjacency, names)
        self.graph: np.ndarray = A
        self.d = int(A.shape[0])
        self.structure = choice(structure, STRUCTURES, "structure")
        as_flag(standardize, "standardize")
        self.order = topological_order(A)
        if self.structure == "graph":
            self.flow_adjacency = A.copy()
        else:
            pos = np.empty(self.d, dtype=np.int64)
            pos[self.order] = np.arange(self.d)
            self.flow_adjacency = pos[None, :] < pos[:, None]
        flow = StrAF(self.flow_adjacency, normalizer=normalizer, prior=prior, **flow_options)
        self.context_features = flow.context_features
        # The flow in data units (float64 statistics, set by fit; the identity until then).
        self.standardized = Standardized.around(flow)
        self.names = list(found) if found is not None else None
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def flow(self) -> StrAF:
        """The structured flow on standardized variables (``standardized.base``)."""
        return self.standardized.base

    @property
    def names(self) -> list[str] | None:
        """Variable names in model order (found in the graph, or adopted from a DataFrame by fit)."""
        return self.standardized.names

    @names.setter
    def names(self, value: list[str] | None) -> None:
        self.standardized.names = value

    # The statistics under their earlier names (read-only views of self.standardized's buffers).
    loc = property(lambda self: self.standardized.mean, doc="(d,) float64 means of the training rows.")
    scale = property(lambda self: self.standardized.std, doc="(d,) float64 standard deviations of the training rows.")
    context_loc = property(lambda self: self.standardized.context_mean, doc="(C,) float64 covariate means, or None.")
    context_scale = property(lambda self: self.standardized.context_std, doc="(C,) float64 covariate scales, or None.")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # Files written before the flow moved into a Standardized name its statistics and weights
        # loc, scale, context_loc, context_scale and flow.*: renamed here, so that they load as they were.
        upgrade_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @staticmethod
    def _upgrade_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # serialization.load compares a file's keys with the model's before loading: today's names.
        upgrade_state_dict(state, "")
        return state

    def _resolved_config(self) -> dict[str, Any]:
        # The graph as a 0/1 matrix; names as found in the graph or adopted from a DataFrame by fit.
        return {"adjacency": self.graph.astype(int).tolist(), "names": self.names, "structure": self.structure}

    # ------------------------------------------------------------------ density

    def _context(self, context: Any) -> torch.Tensor | None:
        # Covariates as a tensor (a DataFrame matched by the context's names, arrays in float64);
        # their shape is checked once, by the flow, and they are standardized by self.standardized.
        if context is None or isinstance(context, torch.Tensor):
            return context
        return torch.from_numpy(self._context_rows(context, "context"))

    def _x(self, x: Any) -> Any:
        # A DataFrame is matched by name (model order); tensors are used as they are.
        return self._rows(x, "x", keep_precision=True) if is_frame(x) else x

    def transform(self, x: torch.Tensor, context: Any = None) -> torch.Tensor:
        """Latents (exogenous noise) of rows ``x`` (tensor or DataFrame) in data units: (n, d) -> (n, d)."""
        return self.standardized.transform(self._x(x), self._context(context))[0]

    def inverse(self, z: torch.Tensor, context: Any = None) -> torch.Tensor:
        """float64 rows in data units generated from latents ``z``: (n, d) -> (n, d)."""
        return self.standardized.inverse(z, self._context(context))

    def log_prob(self, x: torch.Tensor, context: Any = None) -> torch.Tensor:
        r"""Log-density of rows ``x`` (data units; a tensor in model order or a DataFrame matched by
        name), one value per row.

        Example:
            >>> CausalFlow([[0, 0], [1, 0]]).log_prob(torch.zeros(3, 2)).shape
            torch.Size([3])
        """
        return self.standardized.log_prob(self._x(x), self._context(context))

    def sample(self, n: int, *, seed: int | None = None, output: str = "auto", context: Any = None) -> Any:
        r"""Draws ``n`` observational samples (given ``context``: (n, C) or (C,) covariates).

        Returns:
            (n, d) tensor, or a dict of columns / DataFrame keyed by name (see ``output``).
        """
        self._check_fitted()
        n = as_positive_int(n, "n")
        with torch.no_grad():
            x = self.inverse(self._latents(n, seed), context)
        return self._keyed(x, output)

    # ------------------------------------------------------------------ fitting

    def fit(self, data: Any, *, val: Any = None, val_fraction: float = 0.2, split_seed: int = 0,
            context: Any = None, val_context: Any = None, **fit_options: Any) -> Any:
        r"""Fits the flow to observational data by maximum likelihood.

        Arguments:
            data: (n, d) array, tensor or DataFrame (columns matched to the model's names; their
                names are adopted when the model has none).
            val: validation rows for early stopping, like ``data``; when given, all of ``data``
                is trained on and ``val_fraction``/``split_seed`` are unused (``strnn-fast fit``
                passes its own split this way).
            context: (n, C) covariates of the rows (array or tensor), for a model with
                ``context_features``.
            val_context: covariates of the ``val`` rows.
            val_fraction: share of rows held out for early stopping (0 for none).
            split_seed: seed of the train/validation shuffle.
            **fit_options: passed to :func:`strnn_fast.train.fit` (epochs, batch_size, lr,
                patience, seed, verbose, threads, ...).

        Returns:
            The :class:`strnn_fast.train.History`.
        """
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
        # A failed fit leaves the model as it was: names (adopted from a DataFrame) and statistics
        # are restored here, the weights by strnn_fast.train.fit.
        stats = [k for k in self.state_dict() if k == "fitted" or k.startswith("standardized.") and
                 not k.startswith("standardized.base.")]
        before = (self.names, {k: v.clone() for k, v in self.state_dict().items() if k in stats})
        try:
            return self._fit(data, val, context, val_context, val_fraction, split_seed, fit_options)
        except BaseException:
            self.names = before[0]
            self.load_state_dict(before[1], strict=False)
            raise

    def _fit(self, data: Any, val: Any, context: Any, val_context: Any, val_fraction: float, split_seed: int,
             fit_options: dict[str, Any]) -> Any:
        # Rows kept in float64: statistics and standardization in float64, before the cast.
        x = self._rows(data, "data", adopt_names=True, keep_precision=True).cpu()
        check_fits_dtype(x, self._device_dtype()[1], "data", self.names)  # queries read rows in the model's dtype
        c = None if context is None else torch.from_numpy(self._context_rows(context, "context")).to(x.dtype)
        if val is not None:  # the given split
            v = self._rows(val, "val", keep_precision=True).cpu().to(x.dtype)
            if (context is None) != (val_context is None):
                raise ValueError("give both context and val_context, or neither")
            c_val = (None if val_context is None
                     else torch.from_numpy(self._context_rows(val_context, "val_context")).to(x.dtype))
            train_idx, val_idx = np.arange(len(x)), None
        elif val_context is not None:
            raise ValueError("val_context needs val (the validation rows it belongs to)")
        else:  # a shuffled split: validation rows first, strnn_fast.data's convention for the cut
            perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed)).numpy()
            val_idx, train_idx = split(perm, (val_fraction, 1 - val_fraction), allow_empty=True)
        if len(train_idx) < 2:
            raise ValueError(f"data has {len(x)} rows; need at least 2 training rows after the split")
        if c is not None and self.context_features and (c.ndim != 2 or c.shape != (len(x), self.context_features)):
            raise ValueError(f"context must have shape ({len(x)}, {self.context_features}) (one row per data "
                             f"row), got {tuple(c.shape)}")
        if val is None:
            v = x[val_idx] if len(val_idx) else None
            c_val = c[val_idx] if c is not None and len(val_idx) else None
            x, c = x[train_idx], (c[train_idx] if c is not None else None)
        history = self.standardized.fit(x, val=v, context=c, val_context=c_val,
                                        standardize=self.config["standardize"], **fit_options)
        self.fitted.fill_(True)
        return history

    # ------------------------------------------------------------------ queries

    def interventional_samples(self, do: Mapping[Any, Any], n: int, *, seed: int | None = None,
                               output: str = "auto", context: Any = None) -> Any:
        r"""Samples from the interventional distribution ``p(x | do(x_k = v_k, ...))``.

        Arguments:
            do: maps a variable (name or index) to a value: a number (every sample) or a
                length-``n`` tensor/array (one value per sample). Several variables at once.
            n: number of samples.
            seed: seeds a private generator for the noise draw (the global RNG is left untouched,
                so seeded calls from several threads give the serial result).
            output: "auto" (dict of columns keyed by name when names are known, else a tensor),
                "tensor", "dict" or "frame" (a pandas DataFrame).
            context: covariates, (n, C) or (C,) (models with ``context_features`` only).

        Returns:
            (n, d) samples; intervened columns equal their values exactly.

        Example:
            >>> m = CausalFlow([("a", "b")], hidden_sizes=(4,), flow_steps=1)
            >>> _ = m.fit(torch.randn(50, 2), epochs=1, verbose=False)
            >>> bool((m.interventional_samples({"a": 2.0}, 5)["a"] == 2.0).all())
            True
        """
        self._check_fitted()
        n = as_positive_int(n, "n")
        idx, values = self._do(do, n)
        forward, backward = self._maps(context, n)
        with torch.no_grad():
            x = do_inverse(forward, backward, self.flow_adjacency, self._latents(n, seed), idx, values)
        return self._keyed(x, output)

    def interventional_mean(self, do: Mapping[Any, Any], n: int = 10_000, *, seed: int | None = None,
                            output: str = "auto", context: Any = None) -> Any:
        r"""Monte Carlo estimate of ``E[x | do(...)]`` from ``n`` interventional samples.

        Returns:
            A dict name -> float when names are known (``output="auto"``), else a (d,) tensor;
            ``output="frame"`` gives a pandas Series.
        """
        x = self.interventional_samples(do, n, seed=seed, output="tensor", context=context)
        return self._keyed_row(x.mean(0), output)

    def average_treatment_effect(self, target: Any, do_a: Mapping[Any, Any], do_b: Mapping[Any, Any],
                                 n: int = 10_000, *, seed: int | None = None, context: Any = None) -> float:
        r"""``E[x_target | do_a] - E[x_target | do_b]``, both worlds driven by the same noise
        draws so that the Monte Carlo error largely cancels.

        Arguments:
            target: name or index of the outcome.
            do_a, do_b: treatment and control interventions (as in ``interventional_samples``).
            n: number of noise draws.
            seed: seeds the noise draw.
            context: covariates, (n, C) or (C,) (models with ``context_features`` only): the
                effect conditional on them.

        Example:
            >>> m = CausalFlow([("t", "y")], hidden_sizes=(4,), flow_steps=1)
            >>> _ = m.fit(torch.randn(50, 2), epochs=1, verbose=False)
            >>> m.average_treatment_effect("t", {"t": 1.0}, {"t": 0.0}, 10)
            1.0
        """
        self._check_fitted()
        n = as_positive_int(n, "n")
        t = self.variables.index(target, "target")
        idx_a, val_a = self._do(do_a, n, "do_a")
        idx_b, val_b = self._do(do_b, n, "do_b")
        forward, backward = self._maps(context, n)
        with torch.no_grad():
            z = self._latents(n, seed)
            x0 = backward(z)
            xa = do_inverse(forward, backward, self.flow_adjacency, z, idx_a, val_a, x0)
            xb = do_inverse(forward, backward, self.flow_adjacency, z, idx_b, val_b, x0)
        return float((xa[:, t].double() - xb[:, t].double()).mean())

    def counterfactual(self, x_obs: Any, do: Mapping[Any, Any], *, output: str = "auto", context: Any = None) -> Any:
        r"""Counterfactual rows: what each observed row would have been under ``do``.

        Abduction recovers each row's noise, action sets the intervened values, prediction
        regenerates their descendants. Non-descendants keep their observed values exactly and
        intervened variables take exactly their new values.

        Arguments:
            x_obs: (m, d) observed rows (array, tensor or DataFrame), or one (d,) row.
            do: maps a variable to a number or to m values (one per row).
            output: "auto" (a DataFrame for DataFrame input, a dict keyed by name when names are
                known, else a tensor), "tensor", "dict" or "frame".
            context: the rows' covariates, (m, C) or (C,) (models with ``context_features``
                only); they are held at their observed values.

        Returns:
            (m, d) counterfactual rows, on the model's device.

        Example:
            >>> m = CausalFlow([("a", "b"), ("c", "b")], hidden_sizes=(4,), flow_steps=1)
            >>> _ = m.fit(torch.randn(50, 3), epochs=1, verbose=False)
            >>> cf = m.counterfactual(torch.zeros(4, 3), {"a": 1.0})
            >>> cf["a"].tolist(), cf["c"].tolist()
            ([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0])
        """
        self._check_fitted()
        frame_index = getattr(x_obs, "index", None) if is_frame(x_obs) else None
        # Float64 rows stay float64 so that kept and intervened values are exact, not rounded
        # to the model's precision.
        x = self._rows(x_obs, "x_obs", keep_precision=True)
        idx, values = self._do(do, len(x), dtype=x.dtype)
        model_dtype = self._device_dtype()[1]
        check_fits_dtype(x, model_dtype, "x_obs", self.names)  # the flow itself runs in its own dtype
        forward, backward = self._maps(context, len(x))
        with torch.no_grad():
            xm = x.to(model_dtype)
            cf = do_inverse(forward, backward, self.flow_adjacency, forward(xm), idx,
                            values.to(model_dtype), xm).to(x.dtype)
            cf[:, idx] = values
            keep = torch.from_numpy(~affected(self.flow_adjacency, idx)).to(x.device)
            cf = torch.where(keep, x, cf)
        if output == "auto" and frame_index is not None:
            return self.variables.to_frame(cf, index=frame_index)
        return self._keyed(cf, output)

    # ------------------------------------------------------------------ helpers

    def _maps(self, context: Any, n: int) -> tuple[Any, Any]:
        """transform and inverse with the covariates bound (converted once, here)."""
        c = self._context(context)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return self.standardized.transform(x, c)[0]

        def backward(z: torch.Tensor) -> torch.Tensor:
            return self.standardized.inverse(z, c)

        return forward, backward

    def _check_fitted(self) -> None:
        if not bool(self.fitted):
            raise RuntimeError("the CausalFlow is not fitted yet; call fit(data) first (or load a fitted model)")

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        # The flow's dtype (the statistics are float64 whatever it is).
        like = self.flow._like()
        return like.device, like.dtype

    def _latents(self, n: int, seed: int | None = None) -> torch.Tensor:
        # A seed means a private generator: the global RNG (other threads' draws) is never touched.
        device, dtype = self._device_dtype()
        # Latents, samples and the intermediate worlds of a query: a few (n, d) float64 tables.
        check_memory(4 * n * self.d * 8, f"{n} samples of {self.d} variables", "draw fewer, or in batches")
        if seed is None:
            return self.flow.sample_latent(n).to(device=device, dtype=dtype)
        generator = torch.Generator(device=device).manual_seed(as_seed(seed))
        return self.flow.prior.sample((n, self.d), torch.empty(0, dtype=dtype, device=device), generator)


# Keys of files written before the flow moved into a Standardized -> today's keys.
_OLD_KEYS = {"loc": "standardized.mean", "scale": "standardized.std", "context_loc": "standardized.context_mean",
             "context_scale": "standardized.context_std"}


def upgrade_state_dict(state: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Renames, in place, the keys of a CausalFlow state dict written before the flow moved into a
    :class:`~strnn_fast.standardize.Standardized` (``loc``, ``scale``, ..., ``flow.*``)."""
    for key in [k for k in state if k.startswith(prefix)]:
        rest = key[len(prefix):]
        if rest in _OLD_KEYS:
            state[prefix + _OLD_KEYS[rest]] = state.pop(key)
        elif rest.startswith("flow."):
            state[prefix + "standardized.base." + rest[len("flow."):]] = state.pop(key)
