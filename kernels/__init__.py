r"""Triton kernels of strnn_fast (installed as ``strnn_fast.kernels``), one module per op."""
from .masked_linear import MaskedLinearFunction, masked_linear

__all__ = ["MaskedLinearFunction", "masked_linear"]
