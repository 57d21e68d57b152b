"""Activation functions by name (the reference knows relu, tanh and softplus only)."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,  # the builtin: F.relu's Python wrapper costs about 1 us a call
    "tanh": torch.tanh,
    "softplus": F.softplus,
    "elu": F.elu,
    "gelu": F.gelu,
    "silu": F.silu,
    "identity": lambda x: x,
}

# Gain for the mask-aware Kaiming initialization (torch.nn.init.calculate_gain names).
GAINS: dict[str, str] = {
    "relu": "relu",
    "tanh": "tanh",
    "softplus": "relu",
    "elu": "relu",
    "gelu": "relu",
    "silu": "relu",
    "identity": "linear",
}
