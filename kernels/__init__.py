r"""Triton kernels of strnn_fast (installed as ``strnn_fast.kernels``), one module per op:
``strnn_fast.kernels.masked_linear`` holds the block-sparse masked linear layer."""
