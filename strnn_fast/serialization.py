r"""One-file model persistence that cannot run code: tensors plus a JSON header.

A savable model inherits from :class:`Savable`, which records the arguments of its constructor
itself (``config``: every ``__init__`` argument, defaults included, overlaid with the resolved values
the class returns from :meth:`Savable._resolved_config`), and ``save``; :func:`load` rebuilds the
model from its file as ``cls(**config)``.

File format (``strnn_fast-model-v2``): one ``torch.save`` of a dict holding only strings and
tensors, read back with ``torch.load(weights_only=True)``, whose unpickler refuses every other
object, so a crafted file cannot execute anything:

* ``"format"``: ``"strnn_fast-model-v2"``;
* ``"header"``: a JSON string ``{"format_version", "class", "config", "dtype", "extra"}``;
  ``class`` is a name from :data:`ALLOWED_CLASSES` (an explicit allow-list, never an import path);
  ``extra`` is reserved and written empty;
* ``"tensors"``: the state dict under ``state/<key>``, and every array found in the config
  (numpy arrays, torch tensors, scipy.sparse arrays, rectangular nested lists of numbers such as
  adjacency matrices and masks) under ``config/<k>``; the JSON config holds a reference
  ``{"__tensor__": "config/<k>", "kind": ...}`` that loading turns back into the same type.

Files written by earlier versions (``strnn_fast-model-v1``, a pickle) load only with
``load(path, trusted=True)`` (CLI: ``--trust-legacy-file``), which runs the pickle: use it only
for files you made yourself. A tampered, truncated or foreign file raises ValueError naming the
file and what is wrong.

Example:
    >>> import os, tempfile, numpy as np
    >>> from strnn_fast import FastStrNN
    >>> net = FastStrNN(3, (8,), 3, adjacency=np.tril(np.ones((3, 3)), -1))
    >>> path = os.path.join(tempfile.mkdtemp(), "net.pt")
    >>> net.save(path)
    >>> load(path).hidden_sizes
    (8,)
"""
from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ._files import atomic_path
from ._memory import check_model_header
from ._config_codec import decode, encode

__all__ = ["ALLOWED_CLASSES", "FORMAT", "Savable", "build", "class_path", "load"]

FORMAT = "strnn_fast-model-v2"
FORMAT_VERSION = 2
LEGACY_FORMAT = "strnn_fast-model-v1"

# The only classes a model file may name: short name -> (module, attribute). A new savable model
# is one more entry; nothing else is ever imported on behalf of a file.
ALLOWED_CLASSES: dict[str, tuple[str, str]] = {
    "FastStrNN": ("strnn_fast.nn", "FastStrNN"),
    "StrNN": ("strnn_fast.compat", "StrNN"),
    "StrNNDensityEstimator": ("strnn_fast.density", "StrNNDensityEstimator"),
    "StrAF": ("strnn_fast.flows.straf", "StrAF"),
    "ARF": ("strnn_fast.flows.arf", "ARF"),
    "GNF": ("strnn_fast.flows.gnf", "GNF"),
    "StrCNF": ("strnn_fast.flows.cnf", "StrCNF"),
    "FFJORD": ("strnn_fast.flows.cnf", "FFJORD"),
    "CausalFlow": ("strnn_fast.causal.flow", "CausalFlow"),
    "Standardized": ("strnn_fast.standardize", "Standardized"),
}
_HEADER_KEYS = ("format_version", "class", "config", "dtype")
_FLOAT_DTYPES = {"torch.float16": torch.float16, "torch.bfloat16": torch.bfloat16,
                 "torch.float32": torch.float32, "torch.float64": torch.float64}


class Savable:
    r"""Mixin for ``torch.nn.Module`` models: records the constructor's arguments and adds ``save``.

    Every subclass's ``__init__`` is wrapped (in ``__init_subclass__``) so that the outermost call,
    the one of the model's own class, binds its arguments to the signature (defaults included;
    ``**kwargs`` flattened). :attr:`config` is that record overlaid with :meth:`_resolved_config`
    (values the constructor resolved or that change later: a normalized adjacency, a fitted name
    list, a solver chosen after construction) and with :attr:`config_overrides` (patches made from
    outside, kept per instance). The JSON header of a model file is this ``config``.

    Example:
        >>> import torch.nn as nn
        >>> class Scaled(Savable, nn.Module):
        ...     def __init__(self, d: int, scale: float = 1.0, *, names=None):
        ...         super().__init__()
        ...         self.names = list(names or [f"x{i}" for i in range(d)])
        ...     def _resolved_config(self):
        ...         return {"names": self.names}
        >>> Scaled(2, names=("a", "b")).config
        {'d': 2, 'scale': 1.0, 'names': ['a', 'b']}
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_records_arguments", False):
            return
        signature = inspect.signature(init)
        if any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
            raise TypeError(f"{cls.__qualname__}.__init__ takes *args, which a model file cannot record")

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kw: Any) -> None:
            # Only the outermost __init__ (the instance's own class) records: super().__init__
            # calls of base classes see the record already there.
            if "_savable_arguments" not in self.__dict__:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                record: dict[str, Any] = {}
                for i, (name, value) in enumerate(bound.arguments.items()):
                    if i == 0:
                        continue  # self
                    if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                        record.update(value)
                    else:
                        record[name] = value
                self.__dict__["_savable_arguments"] = record
            init(self, *args, **kw)

        __init__._records_arguments = True  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[method-assign]

    def _resolved_config(self) -> dict[str, Any]:
        """Hook: config entries that replace the recorded arguments (resolved or updated values)."""
        return {}

    def _upgrade_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hook: a state dict read from a file under today's keys (files of earlier versions)."""
        return state

    @property
    def _init_arguments(self) -> dict[str, Any]:
        """The constructor's arguments as recorded (read-only use: ``config`` is what is saved)."""
        return self.__dict__["_savable_arguments"]

    @property
    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this model (a fresh dict on every access)."""
        recorded = self.__dict__.get("_savable_arguments")
        if recorded is None:
            raise AttributeError(f"{type(self).__name__} has no recorded constructor arguments")
        return {**recorded, **self._resolved_config(), **self.config_overrides}

    @property
    def config_overrides(self) -> dict[str, Any]:
        """Per-instance patches of :attr:`config` (e.g. after reordering a network's inputs)."""
        return self.__dict__.setdefault("_config_overrides", {})

    def save(self, path: str | os.PathLike, *, overwrite: bool = True) -> None:
        r"""Writes the model to ``path`` atomically (a temporary file in the same folder, then a rename).

        Arguments:
            path: the model file.
            overwrite: replace an existing file (FileExistsError otherwise).
        """
        if not isinstance(self, torch.nn.Module):
            raise TypeError("Savable must be mixed into a torch.nn.Module")
        if not hasattr(self, "config"):
            raise TypeError(f"{type(self).__name__} has no config to save")
        tensors: dict[str, torch.Tensor] = {}
        config = encode(self.config, tensors, "config")
        for key, value in self.state_dict().items():
            tensors[f"state/{key}"] = value.detach().cpu().contiguous()
        dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)
        header = {"format_version": FORMAT_VERSION, "class": class_path(self), "config": config,
                  "dtype": str(dtype), "extra": {}}
        payload = {"format": FORMAT, "header": json.dumps(header, allow_nan=False), "tensors": tensors}
        with atomic_path(path, overwrite=overwrite, what="model file") as tmp:
            torch.save(payload, tmp)


def class_path(model: torch.nn.Module) -> str:
    """The allow-list name of a model's class, as stored in model files (TypeError if not listed)."""
    cls = type(model)
    for name, (module, attr) in ALLOWED_CLASSES.items():
        if cls.__module__ == module and cls.__qualname__ == attr:
            return name
    raise TypeError(f"{cls.__module__}.{cls.__qualname__} is not a savable strnn_fast model "
                    f"(allowed: {', '.join(ALLOWED_CLASSES)})")


def build(name: str, config: Mapping[str, Any]) -> torch.nn.Module:
    r"""Instantiates the allow-listed class ``name`` with ``config``.

    ``name`` is a key of :data:`ALLOWED_CLASSES`; the ``"module:QualName"`` spelling of older
    files is accepted when it denotes one of those classes.

    Raises:
        ValueError: a class not on the allow-list (model files must not run arbitrary code).

    Example:
        >>> build("os:system", {})
        Traceback (most recent call last):
        ...
        ValueError: unknown model class 'os:system'; a model file may name only FastStrNN, StrNN, StrNNDensityEstimator, StrAF, ARF, GNF, StrCNF, FFJORD, CausalFlow, Standardized
    """
    key = _allowed_name(name)
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        raise ValueError(f"the configuration of {key} must be a mapping of argument names, got {type(config).__name__}")
    module, attr = ALLOWED_CLASSES[key]
    cls = getattr(importlib.import_module(module), attr)
    return cls(**config)


def load(path: str | os.PathLike, map_location: Any = "cpu", *, trusted: bool = False) -> torch.nn.Module:
    r"""Rebuilds a model saved with ``save``.

    Arguments:
        path: the model file.
        map_location: where tensors go (as for ``torch.load``).
        trusted: also accept files in the old pickled format (``strnn_fast-model-v1``). Loading
            those runs arbitrary code stored in the file: pass True only for files you trust.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a (safe) strnn_fast model file, or it is damaged; the message
            names the file and what is wrong.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if not isinstance(trusted, bool):
        raise TypeError(f"trusted must be True or False, got {trusted!r}")
    if isinstance(map_location, (str, torch.device)):
        try:
            torch.device(map_location)
        except RuntimeError as err:  # blamed the file before: say it is the argument
            raise ValueError(f"map_location={map_location!r} is not a device (e.g. 'cpu', 'cuda:0'): {err}") from None
    path = Path(path)
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise ValueError(f"model file {str(path)!r} is {'a folder' if path.is_dir() else 'not a regular file'}; "
                         "give the file a model was saved to")
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    where = f"model file {str(path)!r}"
    payload = _read(path, map_location, trusted, where)
    if not isinstance(payload, dict) or not isinstance(payload.get("format"), str):
        raise ValueError(f"{where} is not a strnn_fast model file (no format marker)")
    if payload["format"] == LEGACY_FORMAT:
        if not trusted:
            raise ValueError(f"{where} is in the old pickled format {LEGACY_FORMAT}, which can run code when "
                             "loaded; if you wrote it yourself, load it with load(path, trusted=True) "
                             "(CLI: --trust-legacy-file) and save it again")
        return _load_legacy(payload, where)
    if payload["format"] != FORMAT:
        raise ValueError(f"{where} has format {payload['format']!r}; this version reads {FORMAT!r}")
    missing = [k for k in ("header", "tensors") if k not in payload]
    if missing:
        raise ValueError(f"{where} lacks the entries {missing}")
    tensors = payload["tensors"]
    if not isinstance(tensors, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in tensors.items()):
        raise ValueError(f"{where}: 'tensors' must map names to tensors")
    header = _header(payload["header"], where)
    try:
        config = decode(header["config"], tensors, where)
        # "extra" is reserved (always {} so far); decoded only so that a damaged entry is refused.
        decode(header.get("extra") or {}, tensors, where)
    except RecursionError:
        raise ValueError(f"{where}: the header is nested too deeply") from None
    state = {k[len("state/"):]: v for k, v in tensors.items() if k.startswith("state/")}
    check_model_header(config, state, where)  # before building: a header may ask for 200,000 steps
    return _restore(header["class"], config, header["dtype"], state, where)


# ---------------------------------------------------------------------------------------- reading

def _read(path: Path, map_location: Any, trusted: bool, where: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "pickle protocol 4": the refusal below says enough
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure of a hostile file is "not readable"
        safe_err = err
    if trusted:
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"{where} is not a readable model file: {type(err).__name__}: {err}") from None
    if "weights_only" in str(safe_err) or "Unsupported global" in str(safe_err):
        raise ValueError(f"{where} holds Python objects other than tensors and plain values; it may be an "
                         "older strnn_fast file (then load(path, trusted=True) or --trust-legacy-file read it, "
                         "running its code) or a foreign pickle, which is refused") from None
    first = str(safe_err).strip().splitlines()[0][:200] if str(safe_err).strip() else type(safe_err).__name__
    raise ValueError(f"{where} is not a readable model file (truncated or not a torch file): {first}") from None


def _header(text: Any, where: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ValueError(f"{where}: the header must be a JSON string, got {type(text).__name__}")
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{where}: the header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where}: the header must be a JSON object")
    missing = [k for k in _HEADER_KEYS if k not in header]
    if missing:
        raise ValueError(f"{where}: the header lacks the keys {missing}")
    if header["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{where}: format_version {header['format_version']!r} is not {FORMAT_VERSION}")
    if not isinstance(header["class"], str):
        raise ValueError(f"{where}: the header's class must be a string")
    if not isinstance(header["config"], dict):
        raise ValueError(f"{where}: the header's config must be a JSON object")
    if header["dtype"] not in _FLOAT_DTYPES:
        raise ValueError(f"{where}: unknown dtype {header['dtype']!r}; expected one of {sorted(_FLOAT_DTYPES)}")
    return header


def _restore(name: Any, config: Any, dtype: str, state: dict[str, torch.Tensor], where: str) -> torch.nn.Module:
    try:
        key = _allowed_name(name)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    try:
        model = build(key, config)
    except Exception as err:  # noqa: BLE001 - a tampered config may fail anywhere in a constructor
        raise ValueError(f"{where}: its configuration does not build a {key}: {type(err).__name__}: {err}") from None
    # Rebuilt in the default dtype; cast first so that a float64 model loads bit for bit.
    model = model.to(_FLOAT_DTYPES.get(dtype, torch.float32))
    if isinstance(model, Savable):  # keys of earlier versions renamed before they are compared
        state = model._upgrade_state(dict(state))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{where} does not match a {key} with its configuration: missing weights "
                         f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected weights "
                         f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for k, ref in expected.items():
        got = state[k]
        if tuple(got.shape) != tuple(ref.shape):
            raise ValueError(f"{where}: weight {k!r} has shape {tuple(got.shape)}, the model needs {tuple(ref.shape)}")
        if got.is_floating_point() != ref.is_floating_point() or got.is_complex():
            raise ValueError(f"{where}: weight {k!r} has dtype {got.dtype}, the model needs {ref.dtype}")
    try:
        model.load_state_dict(state)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{where}: its weights do not load into a {key}: {type(err).__name__}: {err}") from None
    return model


def _load_legacy(payload: dict[str, Any], where: str) -> torch.nn.Module:
    missing = [k for k in ("class", "config", "state_dict") if k not in payload]
    if missing:
        raise ValueError(f"{where} lacks the entries {missing}")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{where}: its state_dict must map names to tensors")
    dtype = str(payload.get("dtype", "torch.float32"))
    # Old Standardized configs name their base "module:QualName"; build() maps that to the allow-list.
    return _restore(payload["class"], payload["config"], dtype, state, where)


def _allowed_name(name: Any) -> str:
    if isinstance(name, str):
        if name in ALLOWED_CLASSES:
            return name
        module, _, attr = name.partition(":")
        for key, spec in ALLOWED_CLASSES.items():
            if spec == (module, attr):
                return key
    raise ValueError(f"unknown model class {name!r}; a model file may name only {', '.join(ALLOWED_CLASSES)}")
