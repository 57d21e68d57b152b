"""Selects the Triton interpreter on machines without a GPU; import before strnn_fast.kernels.

The interpreter is chosen when a kernel is decorated, i.e. when ``strnn_fast.kernels`` is first
imported, so this module must come first. With a GPU the kernels are compiled for it and the
interpreter tests skip (tests/test_kernels_cuda.py covers them) unless TRITON_INTERPRET=1 is set.

:data:`HAS_CUDA` is the test suite's one probe for a GPU (conftest.py gates on it).
"""
import os

import torch

HAS_CUDA: bool = torch.cuda.is_available()

if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
