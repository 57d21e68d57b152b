r"""Triton kernels of strnn_fast (installed as ``strnn_fast.kernels``), one module per op:
``strnn_fast.kernels.masked_linear`` holds the block-sparse masked linear layer (kernels,
launchers, custom ops, autograd), and ``strnn_fast.kernels.aot`` compiles them ahead of time
for sm_90a / sm_80 on a machine without a GPU (the CI's guard of the GPU code)."""
