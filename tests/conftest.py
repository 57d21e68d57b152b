"""Shared test configuration: hypothesis profile, torch threads, device/dtype selection."""
from __future__ import annotations

import os

import _interp  # noqa: F401  (first: selects the Triton interpreter before anything imports triton)
import pytest
import torch

try:  # the GPU machine has no hypothesis; only the property tests need it
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - depends on the machine
    settings = None

# Two cores: one intra-op thread per test process avoids oversubscription.
torch.set_num_threads(int(os.environ.get("STRNN_FAST_TEST_THREADS", "1")))

if settings is not None:
    settings.register_profile(
        "default", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.register_profile("thorough", max_examples=300, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=_devices())
def device(request: pytest.FixtureRequest) -> str:
    """Every device this machine has."""
    return request.param


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
