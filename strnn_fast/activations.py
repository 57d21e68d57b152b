"""Activation functions by name (the reference knows relu, tanh and softplus only)."""
from __future__ import annotations

import math
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

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

#: Derivative of each activation, given its input a and output h (forward-mode tangents of an
#: exported StrCNF's divergence, strnn_fast/flows/fixed_step.py).
SLOPES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relu": lambda a, h: (a > 0).to(a.dtype),
    "tanh": lambda a, h: 1 - h * h,
    # F.softplus is linear above its threshold (20).
    "softplus": lambda a, h: torch.where(a > 20, torch.ones_like(a), torch.sigmoid(a)),
    "elu": lambda a, h: torch.where(a > 0, torch.ones_like(a), torch.exp(a)),
    "gelu": lambda a, h: 0.5 * (1 + torch.erf(a * _SQRT_HALF)) + a * torch.exp(-0.5 * a * a) * _INV_SQRT_2PI,
    "silu": lambda a, h: torch.sigmoid(a) * (1 + a * (1 - torch.sigmoid(a))),
    "identity": lambda a, h: torch.ones_like(a),
}
