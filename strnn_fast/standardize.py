r"""A density model fitted on standardized data, answering in the data's own units.

Flows with a standard-normal base train best on data with zero mean and unit variance. Wrapping
the fitted model with the training statistics keeps the change of variables exact:
``log p(x) = log p_base((x - mean) / std) - sum(log std)``, and samples are ``mean + std * z``.
The statistics are kept in float64 whatever the base model's dtype, and standardization runs
in float64 before the cast to the model's dtype: data far from zero (``1e6 + 0.01 * noise``, Unix
timestamps) keep their spread, where float32 statistics quantized them. Samples are returned in
float64 (data units), log-densities in the base model's dtype; ``.to(dtype)``, ``.float()``
and loading cast the weights only (:class:`KeepsFloat64`).

The wrapper saves and loads like any model (the inner model's class and configuration go into
its configuration), so ``strnn-fast sample`` and ``logprob`` work in data units. It is the one
home of "a model in data units": :meth:`Standardized.fit` sets the statistics from training rows
and trains the base (``strnn-fast fit`` fits every model this way), and
:class:`strnn_fast.causal.CausalFlow` holds its flow in one.

Example:
    >>> import numpy as np, torch
    >>> from strnn_fast.flows import StrAF
    >>> base = StrAF(np.tril(np.ones((2, 2)), -1), hidden_sizes=(8,), flow_steps=1)
    >>> model = Standardized(base, mean=[10.0, -5.0], std=[2.0, 0.5])
    >>> model.sample(3).shape
    torch.Size([3, 2])
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from ._validate import as_flag, as_input, as_rows, column_stats
from ._validate import warn_if_unstandardized  # the fit loop's check, public under this module's name
from .serialization import Savable, build, class_path
from .train import fit as train_fit
from .variables import Variables, is_frame

__all__ = ["KeepsFloat64", "Standardized", "Standardizer", "warn_if_unstandardized"]

Array = TypeVar("Array", np.ndarray, torch.Tensor)


@dataclass(frozen=True, eq=False)  # arrays: no elementwise ==
class Standardizer:
    r"""Per-column shift and scale: ``z = (x - mean) / std``; the one standardization convention.

    Statistics come from training rows only, with ``ddof=0`` (divide by n): the maximum-likelihood
    scale, what a Gaussian fitted to the column would use, defined for any n >= 1 and the same as
    numpy's default (torch's ``Tensor.std`` defaults to ddof=1: never use it for this). The
    difference to ddof=1 is a factor sqrt(n / (n - 1)), which the flow absorbs; what matters is one
    convention everywhere, so that a model fitted by the CLI and by the library agree.

    Constant columns follow the policy of :func:`strnn_fast._validate.column_stats`: modelled
    variables are refused (ValueError naming the column); ``constant="keep"`` instead scales them
    by 1, for context covariates, which are conditioned on rather than modelled.

    Arguments:
        mean: (d,) shifts.
        std: (d,) positive finite scales.

    Example:
        >>> s = Standardizer.fit(np.array([[0.0, 1.0], [2.0, 5.0]]))
        >>> s.mean.tolist(), s.std.tolist()
        ([1.0, 3.0], [1.0, 2.0])
        >>> s.transform(np.array([[1.0, 7.0]])).tolist(), s.inverse(np.array([[0.0, 1.0]])).tolist()
        ([[0.0, 2.0]], [[1.0, 5.0]])
    """

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        mean, std = np.asarray(self.mean, dtype=np.float64), np.asarray(self.std, dtype=np.float64)
        if mean.ndim != 1 or std.shape != mean.shape:
            raise ValueError(f"mean and std must each hold one value per column, got shapes {mean.shape}, {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ValueError("mean and std must be finite")
        if not (std > 0).all():
            # The constant-column policy (see strnn_fast._validate.column_stats): refuse, never rescale by 1.
            bad = [int(i) for i in np.flatnonzero(~(std > 0))]
            raise ValueError(f"std must be positive; variables {bad} have std {std[bad].tolist()} "
                             "(a constant column cannot be modelled: drop it)")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def fit(cls, x: Any, names: Sequence[str] | None = None, what: str = "data", *,
            constant: str = "refuse") -> Standardizer:
        r"""Statistics of the (n, d) training rows ``x``; ``constant``: "refuse" or "keep" (scale 1).

        Example:
            >>> Standardizer.fit(np.array([[1.0, 7.0], [3.0, 7.0]]), constant="keep").std.tolist()
            [1.0, 1.0]
        """
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().double().numpy()
        if constant == "refuse":
            return cls(*column_stats(x, names, what))
        if constant != "keep":
            raise ValueError(f"constant must be 'refuse' or 'keep', got {constant!r}")
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(f"{what} must be a non-empty 2-D array (rows x columns), got shape {arr.shape}")
        std = arr.std(axis=0)
        return cls(arr.mean(axis=0), np.where(std > 0, std, 1.0))

    @classmethod
    def identity(cls, d: int) -> Standardizer:
        """The standardizer that changes nothing (mean 0, std 1): for data used as they are."""
        return cls(np.zeros(d), np.ones(d))

    def _stats(self, like: Any) -> tuple[Any, Any]:
        if isinstance(like, torch.Tensor):
            dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
            return (torch.as_tensor(self.mean, dtype=dtype, device=like.device),
                    torch.as_tensor(self.std, dtype=dtype, device=like.device))
        return self.mean, self.std

    def transform(self, x: Array) -> Array:
        """``(x - mean) / std`` for an array or tensor of shape (..., d)."""
        mean, std = self._stats(x)
        return (x - mean) / std

    def inverse(self, z: Array) -> Array:
        """``mean + std * z``: back to data units."""
        mean, std = self._stats(z)
        return z * std + mean

    def log_scale(self) -> float:
        """``sum(log std)``: subtract it from a log-density of ``z`` to get one of ``x``."""
        return float(np.log(self.std).sum())


class KeepsFloat64:
    r"""Mixin for a module whose data-unit statistics (the buffers named in ``_float64_buffers``)
    stay float64 through ``.to(dtype)``, ``.float()``, ``.half()`` and loading: only their device
    follows the module. Casting them with the weights rounded data far from zero (1e6 + noise).

    Example:
        >>> from strnn_fast.flows import StrAF
        >>> m = Standardized(StrAF([[0, 0], [1, 0]], (4,), 1), mean=[1e6, 0.0], std=[0.01, 1.0]).half()
        >>> m.mean.dtype, next(m.base.parameters()).dtype
        (torch.float64, torch.float16)
    """

    _float64_buffers: tuple[str, ...] = ()

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        buffers = self._buffers  # type: ignore[attr-defined]
        kept = {n: buffers.pop(n) for n in self._float64_buffers if buffers.get(n) is not None}
        try:
            super()._apply(fn, recurse)  # type: ignore[misc]
        finally:
            like = next(self.parameters(), None)  # type: ignore[attr-defined]
            for n, b in kept.items():
                buffers[n] = b if like is None else b.to(like.device)
        return self


class Standardized(KeepsFloat64, Savable, nn.Module):
    r"""Density model on ``x`` given a model of ``(x - mean) / std``.

    Arguments:
        base: a savable module with ``log_prob`` and ``sample`` (fitted on standardized data), or
            the ``{"class", "config"}`` spec that rebuilds one (what loading passes).
        mean: per-variable shift (d values).
        std: per-variable positive scale (d values).
        names: optional variable names; defaults to the base model's.
        context_mean, context_std: for a conditional base model, the statistics its context was
            standardized with (C values each); ``log_prob``/``sample`` then take the context in
            its own units.

    Example:
        >>> import math, torch
        >>> from strnn_fast.flows import StrAF
        >>> base = StrAF([[0, 0], [1, 0]], hidden_sizes=(4,), flow_steps=1)
        >>> model = Standardized(base, mean=[1.0, 2.0], std=[2.0, 2.0])
        >>> x = torch.randn(5, 2)
        >>> expected = base.log_prob((x - torch.tensor([1.0, 2.0])) / 2) - 2 * math.log(2)
        >>> torch.allclose(model.log_prob(x), expected)
        True
    """

    mean: torch.Tensor
    std: torch.Tensor
    _float64_buffers = ("mean", "std", "context_mean", "context_std")

    def __init__(self, base: nn.Module | dict[str, Any], mean: Sequence[float], std: Sequence[float],
                 names: Sequence[str] | None = None, context_mean: Sequence[float] | None = None,
                 context_std: Sequence[float] | None = None):
        super().__init__()
        self.base = build(base.get("class", ""), base.get("config", {})) if isinstance(base, dict) else base
        if not isinstance(self.base, nn.Module) or not hasattr(self.base, "config"):
            raise TypeError(f"base must be a savable strnn_fast model, got {type(self.base).__name__}")
        mean_arr = np.asarray(mean, dtype=np.float64)
        std_arr = np.asarray(std, dtype=np.float64)
        d = mean_arr.shape[0] if mean_arr.ndim == 1 else -1
        if mean_arr.ndim != 1 or std_arr.shape != (d,) or getattr(self.base, "d", d) != d:
            raise ValueError(f"mean and std must each hold one value per variable "
                             f"(d={getattr(self.base, 'd', '?')}), got shapes {mean_arr.shape}, {std_arr.shape}")
        Standardizer(mean_arr, std_arr)  # finite, and positive std (the constant-column policy)
        self.d = d
        self.names = list(names) if names is not None else getattr(self.base, "names", None)
        like = next(self.base.parameters(), torch.empty(0))
        # float64 on the base's device: standardizing in the model's float32 quantized large offsets.
        self.register_buffer("mean", torch.tensor(mean_arr, dtype=torch.float64, device=like.device))
        self.register_buffer("std", torch.tensor(std_arr, dtype=torch.float64, device=like.device))
        self.context_features = int(getattr(self.base, "context_features", 0))
        if context_mean is not None or context_std is not None:
            c_mean = np.asarray(context_mean, dtype=np.float64)
            c_std = np.asarray(context_std, dtype=np.float64)
            if c_mean.shape != (self.context_features,) or c_std.shape != c_mean.shape or not self.context_features:
                raise ValueError(f"context_mean and context_std must each hold context_features="
                                 f"{self.context_features} values, got shapes {c_mean.shape}, {c_std.shape}")
            if not (np.isfinite(c_mean).all() and np.isfinite(c_std).all() and (c_std > 0).all()):
                raise ValueError("context_mean must be finite and context_std finite and positive")
            self.register_buffer("context_mean", torch.tensor(c_mean, dtype=torch.float64, device=like.device))
            self.register_buffer("context_std", torch.tensor(c_std, dtype=torch.float64, device=like.device))
        else:
            self.context_mean = self.context_std = None

    def _resolved_config(self) -> dict[str, Any]:
        # The base model as the {"class", "config"} spec that rebuilds it; statistics as float lists,
        # from the float64 buffers (KeepsFloat64: never rounded to the base's dtype), which fit sets.
        config = {"base": {"class": class_path(self.base), "config": self.base.config}, "names": self.names}
        for key in ("mean", "std", "context_mean", "context_std"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key).detach().cpu().tolist()
        return config

    def set_statistics(self, data: Standardizer, context: Standardizer | None = None) -> None:
        r"""Replaces the statistics: those of the rows the base model is (re)fitted on.

        Example:
            >>> from strnn_fast.flows import StrAF
            >>> m = Standardized(StrAF([[0, 0], [1, 0]], (4,), 1), mean=[0.0, 0.0], std=[1.0, 1.0])
            >>> m.set_statistics(Standardizer(np.array([5.0, 1.0]), np.array([2.0, 3.0])))
            >>> m.config["mean"], m.config["std"]
            ([5.0, 1.0], [2.0, 3.0])
        """
        if data.mean.shape != (self.d,):
            raise ValueError(f"data must hold statistics of d={self.d} variables, got {data.mean.shape[0]}")
        if (context is None) != (self.context_mean is None) or (
                context is not None and context.mean.shape != (self.context_features,)):
            raise ValueError(f"context must hold statistics of the {self.context_features} context features "
                             "exactly when the model was built with context_mean/context_std")
        with torch.no_grad():
            pairs = [(self.mean, data.mean), (self.std, data.std)]
            if context is not None:
                pairs += [(self.context_mean, context.mean), (self.context_std, context.std)]
            for buffer, value in pairs:
                buffer.copy_(torch.from_numpy(value))

    def _context(self, context: Any) -> dict[str, torch.Tensor]:
        # The keyword for the base model: none for an unconditional one (so any base model works).
        # Only what the float64 standardization needs is checked here (a tensor, C columns, finite);
        # rows and broadcasting are checked once, by the base model's entry point.
        if context is None:
            return {}
        if is_frame(context):  # matched by the base model's context names, in float64
            names = getattr(self.base, "context_names", None)
            context = torch.from_numpy(Variables(names, self.context_features).frame_rows(context, "context"))
        if self.context_mean is not None:
            context = as_input(context, self.context_features, self.context_mean, "context")
            if not bool(torch.isfinite(context).all()):
                raise ValueError("context contains NaN or infinite values")
            context = ((context - self.context_mean) / self.context_std).to(self._dtype())
        return {"context": context}

    def _dtype(self) -> torch.dtype:
        return next(self.base.parameters(), torch.empty(0)).dtype

    def _to_base(self, x: Any) -> torch.Tensor:
        # Rows in data units (a DataFrame matched by name) -> the base's units and dtype, through float64.
        if is_frame(x):
            x = torch.from_numpy(Variables(self.names, self.d).frame_rows(x, "x"))
        x = as_input(x, self.d, self.mean, "x")  # float64: standardized before the cast
        if not bool(torch.isfinite(x).all()):  # a NaN row has no density: refuse, never answer NaN
            raise ValueError("x contains NaN or infinite values")
        return ((x - self.mean) / self.std).to(self._dtype())

    def _from_base(self, z: torch.Tensor) -> torch.Tensor:
        # The base's units -> float64 data units.
        return z.to(self.std) * self.std + self.mean

    def log_scale(self) -> torch.Tensor:
        """``sum(log std)`` in the base's dtype: a log-density in data units is the base's minus this."""
        return self.std.log().sum().to(self._dtype())

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Log-density of rows ``x`` (..., d) in data units (given ``context`` in its units); a
        DataFrame is matched by name."""
        return self.base.log_prob(self._to_base(x), **self._context(context)) - self.log_scale()

    def transform(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A flow base's ``(z, log|det dz/dx|)`` of rows ``x`` (B, d) in data units."""
        z, log_det = self.base.transform(self._to_base(x), **self._context(context))
        return z, log_det - self.log_scale()

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """float64 rows in data units of a flow base's latents ``z`` (B, d)."""
        return self._from_base(self.base.inverse(z, **self._context(context)))

    def sample(self, sample_shape: Sequence[int] | int | torch.Size = (),
               context: torch.Tensor | None = None, *, as_frame: bool = False) -> Any:
        """float64 samples of shape ``(*sample_shape, d)`` in data units; an int n works for every base
        model. ``as_frame=True`` returns a DataFrame with a column per variable (1-D sample_shape)."""
        as_flag(as_frame, "as_frame")
        x = self._from_base(self.base.sample(sample_shape, **self._context(context)))
        return Variables(self.names, self.d).to_frame(x) if as_frame else x

    def fit(self, data: Any, *, val: Any = None, context: Any = None, val_context: Any = None,
            standardize: bool = True, **fit_options: Any) -> Any:
        r"""Sets the statistics from the training rows ``data`` and fits the base model on them.

        The rows are standardized in their own precision (float64 for arrays) before
        :func:`strnn_fast.train.fit` casts them to the model's dtype; the losses it reports are in
        data units. A constant variable is refused (:class:`Standardizer`'s policy), a constant
        covariate is kept (scaled by 1). Binary density data (a base with ``data_type="binary"``) are
        modelled as 0/1: their statistics are the identity.

        Arguments:
            data: (n, d) training rows (array, tensor or DataFrame).
            val: (m, d) validation rows for early stopping, or None.
            context, val_context: the covariates of ``data`` and ``val`` (base models with
                ``context_features``; the model must have been built with context statistics).
            standardize: False: the identity statistics (rows used as they are).
            **fit_options: passed to :func:`strnn_fast.train.fit` (epochs, lr, seed, ...).

        Returns:
            The :class:`strnn_fast.train.History`.

        Example:
            >>> from strnn_fast.flows import StrAF
            >>> m = Standardized(StrAF([[0, 0], [1, 0]], (4,), 1), mean=[0.0, 0.0], std=[1.0, 1.0])
            >>> _ = m.fit(np.array([[1.0, 10.0], [3.0, 30.0], [2.0, 20.0]]), epochs=1, verbose=False)
            >>> m.config["mean"]
            [2.0, 20.0]
        """
        as_flag(standardize, "standardize")
        x = _rows(data, "data", self.names)
        v = _rows(val, "val", self.names) if val is not None else None
        scaler = (Standardizer.fit(x, self.names, "data")
                  if standardize and getattr(self.base, "data_type", None) != "binary"
                  else Standardizer.identity(self.d))
        c_scaler = None
        if self.context_features:
            if context is None:
                raise ValueError(f"context is required: the model has context_features={self.context_features}")
            c = _rows(context, "context", None)
            if c.shape != (len(x), self.context_features):
                raise ValueError(f"context must have shape ({len(x)}, {self.context_features}) (one row per data "
                                 f"row), got {tuple(c.shape)}")
            # Covariates are conditioned on, not modelled: a constant one is kept (scaled by 1).
            c_scaler = (Standardizer.fit(c, None, "context", constant="keep") if standardize
                        else Standardizer.identity(self.context_features))
            fit_options["context"] = c_scaler.transform(c)
            if val_context is not None:
                fit_options["val_context"] = c_scaler.transform(_rows(val_context, "val_context", None))
        elif context is not None or val_context is not None:
            raise ValueError("context must be None: this model has no context features (context_features=0)")
        if self.context_mean is None:
            c_scaler = None  # a base conditioned on raw covariates (built without context statistics)
        self.set_statistics(scaler, c_scaler)
        return train_fit(_OnStandardizedRows(self), scaler.transform(x),
                         scaler.transform(v) if v is not None else None, **fit_options)

    @classmethod
    def around(cls, model: nn.Module) -> nn.Module:
        r"""``model`` as a model in data units whose ``fit`` sets the statistics: ``model`` itself
        when it holds them already (a Standardized, or a model with a ``standardized`` one such as
        CausalFlow), else a Standardized with the identity statistics around it.

        Example:
            >>> from strnn_fast.flows import StrAF
            >>> type(Standardized.around(StrAF([[0, 0], [1, 0]], (4,), 1))).__name__
            'Standardized'
        """
        if isinstance(model, cls) or isinstance(getattr(model, "standardized", None), cls):
            return model
        C = int(getattr(model, "context_features", 0))
        context = {"context_mean": np.zeros(C), "context_std": np.ones(C)} if C else {}
        d = int(model.d)
        return cls(model, np.zeros(d), np.ones(d), names=getattr(model, "names", None), **context)


def _rows(value: Any, name: str, names: Sequence[str] | None) -> torch.Tensor:
    # Finite (n, k) rows kept in their floating precision (float64 for arrays and integer data).
    dtype = value.dtype if isinstance(value, torch.Tensor) and value.is_floating_point() else torch.float64
    return as_rows(value, name, dtype, names)


class _OnStandardizedRows(nn.Module):
    """What :meth:`Standardized.fit` trains: rows (and covariates) come standardized, standardized in
    float64 before the cast; log-densities are in data units."""

    def __init__(self, model: Standardized):
        super().__init__()
        self.model = model
        self.d = model.d

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        kw = {} if context is None else {"context": context}
        return self.model.base.log_prob(z, **kw) - self.model.log_scale()
