"""Random parameter noise for structure tests, keeping the weights masked at rest."""
from __future__ import annotations

import torch

from strnn_fast import MaskedLinear


def shake(model: torch.nn.Module, scale: float = 0.3, only: str | None = "conditioner") -> torch.nn.Module:
    """Adds ``scale`` * N(0, 1) to the parameters whose name contains ``only`` (all when None).

    Conditioners start at zero output (each step the identity); the noise makes every edge act.
    Masked layers keep their weights zero where the mask is zero (the library's invariant), so the
    masked-out entries the noise hit are zeroed again.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if only is None or only in name:
                p.add_(scale * torch.randn_like(p))
        for layer in model.modules():
            if isinstance(layer, MaskedLinear):
                layer.apply_mask_()
    return model
