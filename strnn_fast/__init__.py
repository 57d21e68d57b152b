r"""strnn_fast: Structured Neural Networks with a C++ factorizer and Triton block-sparse kernels.

Example:
    >>> import numpy as np, torch, strnn_fast
    >>> A = np.tril(np.ones((4, 4)), -1)
    >>> net = strnn_fast.FastStrNN(4, (16, 16), 4, adjacency=A)
    >>> net(torch.randn(2, 4)).shape
    torch.Size([2, 4])
"""
from .factorize import check_masks, connections, factorize, path_counts, required_width
from .nn import FastStrNN, MaskedLinear
from .serialization import load

__all__ = [
    "FastStrNN",
    "MaskedLinear",
    "check_masks",
    "connections",
    "factorize",
    "load",
    "path_counts",
    "required_width",
]
__version__ = "0.1.0"
