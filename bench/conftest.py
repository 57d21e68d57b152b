"""Benchmark configuration: threads pinned so numbers are comparable on a 2-core machine."""
from __future__ import annotations

import os

import torch

THREADS = int(os.environ.get("STRNN_FAST_BENCH_THREADS", "1"))
torch.set_num_threads(THREADS)


def pytest_benchmark_update_machine_info(config, machine_info: dict) -> None:
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = THREADS
    try:
        import triton

        machine_info["triton"] = triton.__version__
    except ImportError:
        pass
