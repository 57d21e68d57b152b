r"""One-file model persistence: weights, adjacency, variable names and constructor configuration.

A savable model keeps the keyword arguments that rebuild it in ``self.config`` (JSON-friendly:
lists, numbers, strings; the adjacency as a nested list) and inherits ``save`` from
:class:`Savable`. :func:`load` rebuilds any such model from its file.

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

import importlib
import os
from pathlib import Path
from typing import Any

import torch

FORMAT = "strnn_fast-model-v1"


class Savable:
    """Mixin: ``save(path)`` for modules that define ``self.config``."""

    config: dict[str, Any]

    def save(self, path: str | os.PathLike, *, overwrite: bool = True) -> None:
        """Writes the model to ``path`` atomically (a temporary file, then a rename)."""
        if not isinstance(self, torch.nn.Module):
            raise TypeError("Savable must be mixed into a torch.nn.Module")
        if not hasattr(self, "config"):
            raise TypeError(f"{type(self).__name__} has no config to save")
        path = Path(path)
        if path.exists() and not overwrite:
            raise ValueError(f"path {str(path)!r} exists; pass overwrite=True or choose another file")
        payload = {
            "format": FORMAT,
            "class": class_path(self),
            "config": self.config,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "dtype": str(next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)),
            "extra": getattr(self, "extra_state_for_save", lambda: {})(),
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)


def class_path(model: torch.nn.Module) -> str:
    """``"module:QualName"`` of a model's class, as stored in model files."""
    cls = type(model)
    return f"{cls.__module__}:{cls.__qualname__}"


def build(path: str, config: dict[str, Any]) -> torch.nn.Module:
    """Instantiates the strnn_fast class at ``"module:QualName"`` with ``config``.

    Raises:
        ValueError: a class from outside strnn_fast (model files must not run arbitrary code).
    """
    module_name, _, qualname = str(path).partition(":")
    if not module_name.startswith("strnn_fast."):
        raise ValueError(f"refusing to build class {path!r} from outside strnn_fast")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj(**config)


def load(path: str | os.PathLike, map_location: Any = "cpu") -> torch.nn.Module:
    """Rebuilds a model saved with ``save``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a strnn_fast model file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a readable strnn_fast model file: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a strnn_fast model file")
    model = build(payload["class"], payload["config"])
    # Rebuilt in the default dtype; cast first so that a float64 model loads bit for bit.
    dtype = getattr(torch, str(payload.get("dtype", "torch.float32")).removeprefix("torch."), None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        model = model.to(dtype)
    model.load_state_dict(payload["state_dict"])
    if payload.get("extra") and hasattr(model, "load_extra_state_from_save"):
        model.load_extra_state_from_save(payload["extra"])
    return model
