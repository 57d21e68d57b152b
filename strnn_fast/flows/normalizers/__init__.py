r"""Elementwise normalizers of autoregressive flows, by name: "affine", "umnn" and "spline"."""
from __future__ import annotations

from typing import Any

from ..._validate import choice
from .affine import AffineNormalizer
from .base import Normalizer
from .quadrature import clenshaw_curtis
from .spline import SplineNormalizer
from .umnn import UMNNNormalizer

__all__ = [
    "NORMALIZERS", "AffineNormalizer", "Normalizer", "SplineNormalizer", "UMNNNormalizer", "clenshaw_curtis",
    "make_normalizer",
]

NORMALIZERS: dict[str, type[Normalizer]] = {
    "affine": AffineNormalizer, "umnn": UMNNNormalizer, "spline": SplineNormalizer,
}


def make_normalizer(name: str, **options: Any) -> Normalizer:
    r"""Builds the normalizer ``name`` with its keyword options.

    Raises:
        ValueError: unknown name.
        TypeError: an option the normalizer does not take (named in the message).

    Example:
        >>> make_normalizer("affine", scale_bound=2.0).n_params
        2
    """
    cls = NORMALIZERS[choice(name, tuple(NORMALIZERS), "normalizer")]
    try:
        return cls(**options)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise TypeError(f"normalizer {name!r} does not take option(s) {sorted(options)}: {err}") from err
        raise
