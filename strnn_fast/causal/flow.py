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
from ..flows.straf import StrAF
from ..graph import as_dag, topological_order
from ..serialization import Savable
from ..standardize import KeepsFloat64, Standardizer
from ..train import fit as train_fit
from ..variables import is_frame
from .query_io import QueryIO
from .queries import affected, do_inverse

__all__ = ["CausalFlow"]

STRUCTURES = ("graph", "full")


class CausalFlow(QueryIO, KeepsFloat64, Savable, nn.Module):
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

    _float64_buffers = ("loc", "scale", "context_loc", "context_scale")

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
        self.names: list[str] | None = list(found) if found is not None else None
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
        self.flow = StrAF(self.flow_adjacency, normalizer=normalizer, prior=prior, **flow_options)
        # Data-unit statistics in float64 (standardization runs in float64, then casts to the flow's
        # dtype): float32 ones quantized data with large offsets (1e6 + noise, Unix timestamps).
        self.register_buffer("loc", torch.zeros(self.d, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(self.d, dtype=torch.float64))
        self.register_buffer("fitted", torch.tensor(False))
        self.context_features = self.flow.context_features
        if self.context_features:  # only then, so that files of unconditional models keep their keys
            self.register_buffer("context_loc", torch.zeros(self.context_features, dtype=torch.float64))
            self.register_buffer("context_scale", torch.ones(self.context_features, dtype=torch.float64))

    def _resolved_config(self) -> dict[str, Any]:
        # The graph as a 0/1 matrix; names as found in the graph or adopted from a DataFrame by fit.
        return {"adjacency": self.graph.astype(int).tolist(), "names": self.names, "structure": self.structure}

    # ------------------------------------------------------------------ density

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.to(self.loc) - self.loc) / self.scale).to(self._device_dtype()[1])

    def _scaled_context(self, context: Any, n: int) -> torch.Tensor | None:
        # (n, C) standardized covariates in the model's dtype and device (None without context).
        if context is None or not self.context_features:
            return self.flow._check_context(context, n)  # None, or the flow's error
        if not isinstance(context, torch.Tensor):  # a DataFrame is matched by the context's names
            context = torch.as_tensor(self._context_rows(context, "context"))
        c = self.flow._check_context(context, n).to(self.loc)
        if not torch.isfinite(c).all():
            raise ValueError("context contains NaN or infinite values")
        return ((c - self.context_loc) / self.context_scale).to(self._device_dtype()[1])

    def _x(self, x: Any) -> Any:
        # A DataFrame is matched by name (model order); tensors are used as they are.
        return self._rows(x, "x", keep_precision=True) if is_frame(x) else x

    def transform(self, x: torch.Tensor, context: Any = None) -> torch.Tensor:
        """Latents (exogenous noise) of rows ``x`` (tensor or DataFrame) in data units: (n, d) -> (n, d)."""
        x = self._x(x)
        return self.flow.transform(self._scaled(x), self._scaled_context(context, len(x)))[0]

    def inverse(self, z: torch.Tensor, context: Any = None) -> torch.Tensor:
        """float64 rows in data units generated from latents ``z``: (n, d) -> (n, d)."""
        return self.flow.inverse(z, self._scaled_context(context, len(z))).to(self.loc) * self.scale + self.loc

    def log_prob(self, x: torch.Tensor, context: Any = None) -> torch.Tensor:
        r"""Log-density of rows ``x`` (data units; a tensor in model order or a DataFrame matched by
        name), one value per row.

        Example:
            >>> CausalFlow([[0, 0], [1, 0]]).log_prob(torch.zeros(3, 2)).shape
            torch.Size([3])
        """
        x = self._x(x)
        log_scale = self.scale.log().sum().to(self._device_dtype()[1])
        return self.flow.log_prob(self._scaled(x), self._scaled_context(context, len(x))) - log_scale

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
        before = (self.names, {k: v.clone() for k, v in self.state_dict().items() if k in _STATS})
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
        if val is not None:  # the given split: validation rows first, then the training rows in order
            v = self._rows(val, "val", keep_precision=True).cpu().to(x.dtype)
            x = x.to(torch.promote_types(x.dtype, v.dtype))
            x, perm, n_val = torch.cat([v, x]), torch.arange(len(v) + len(x)), len(v)
            if context is not None or val_context is not None:
                if context is None or val_context is None:
                    raise ValueError("give both context and val_context, or neither")
                context = np.concatenate([self._context_rows(val_context, "val_context"), self._context_rows(context, "context")])
        elif val_context is not None:
            raise ValueError("val_context needs val (the validation rows it belongs to)")
        else:
            perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
            n_val = int(round(val_fraction * len(x)))
        if len(x) - n_val < 2:
            raise ValueError(f"data has {len(x)} rows; need at least 2 training rows after the split")
        train, val = x[perm[n_val:]], (x[perm[:n_val]] if n_val else None)
        if self.context_features:
            if context is None:
                raise ValueError(f"context is required: the model has context_features={self.context_features}")
            c = torch.as_tensor(self._context_rows(context, "context")).to(x.dtype)
            if c.ndim != 2 or c.shape != (len(x), self.context_features):
                raise ValueError(f"context must have shape ({len(x)}, {self.context_features}) (one row per data "
                                 f"row), got {tuple(c.shape)}")
            # Training rows' statistics, like the variables'; covariates are conditioned on, not
            # modelled, so a constant one is kept (scaled by 1).
            scaler = (Standardizer.fit(c[perm[n_val:]], None, "context", constant="keep")
                      if self.config["standardize"] else Standardizer.identity(c.shape[1]))
            with torch.no_grad():
                self.context_loc.copy_(torch.from_numpy(scaler.mean))
                self.context_scale.copy_(torch.from_numpy(scaler.std))
            c = scaler.transform(c)
            fit_options["context"] = c[perm[n_val:]]
            if n_val:
                fit_options["val_context"] = c[perm[:n_val]]
        elif context is not None:
            raise ValueError("context must be None: this model has no context features (context_features=0)")
        with torch.no_grad():
            # Constant columns are refused (the policy of strnn_fast._validate.column_stats).
            scaler = (Standardizer.fit(train, self.names, "data") if self.config["standardize"]
                      else Standardizer.identity(self.d))
            self.loc.copy_(torch.from_numpy(scaler.mean))
            self.scale.copy_(torch.from_numpy(scaler.std))
        train, val = scaler.transform(train), (scaler.transform(val) if val is not None else None)
        history = train_fit(_Scaled(self), train, val, **fit_options)
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
        """transform and inverse with the covariates bound (checked once, here)."""
        if not self.context_features:
            self.flow._check_context(context, n)  # raises for a context given to an unconditional model
            return self.transform, self.inverse
        c = self._scaled_context(context, n)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return self.flow.transform(self._scaled(x), c)[0]

        def backward(z: torch.Tensor) -> torch.Tensor:
            return self.flow.inverse(z, c).to(self.loc) * self.scale + self.loc

        return forward, backward

    def _check_fitted(self) -> None:
        if not bool(self.fitted):
            raise RuntimeError("the CausalFlow is not fitted yet; call fit(data) first (or load a fitted model)")

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        # The flow's dtype (the statistics are float64 whatever it is).
        return self.loc.device, self.flow._like().dtype

    def _latents(self, n: int, seed: int | None = None) -> torch.Tensor:
        # A seed means a private generator: the global RNG (other threads' draws) is never touched.
        device, dtype = self._device_dtype()
        # Latents, samples and the intermediate worlds of a query: a few (n, d) float64 tables.
        check_memory(4 * n * self.d * 8, f"{n} samples of {self.d} variables", "draw fewer, or in batches")
        if seed is None:
            return self.flow.sample_latent(n).to(device=device, dtype=dtype)
        generator = torch.Generator(device=device).manual_seed(as_seed(seed))
        return self.flow.prior.sample((n, self.d), torch.empty(0, dtype=dtype, device=device), generator)


_STATS = ("loc", "scale", "context_loc", "context_scale", "fitted")


class _Scaled(nn.Module):
    """The training view of a CausalFlow: fit hands it rows and context already standardized (in
    float64, before the cast to the flow's dtype); log-densities stay in data units."""

    def __init__(self, model: CausalFlow):
        super().__init__()
        self.model = model
        self.d = model.d

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        log_scale = self.model.scale.log().sum().to(z.dtype)
        return self.model.flow.log_prob(z, context) - log_scale
