"""Shared test configuration: hypothesis profile, torch threads, the ``cuda`` gate, device/dtype selection.

* ``cuda`` gate: mark a test (or a module, with ``pytestmark``) ``@pytest.mark.cuda``; without a
  GPU it is skipped here, the one place that asks (through ``_interp.HAS_CUDA``). The default
  ``addopts`` deselect ``cuda`` tests; run them with ``-o addopts= -m cuda``.
* ``device`` and ``dtype`` fixtures (zuko style): a test taking ``device`` runs on every device
  ``--device`` names (default ``auto``: cpu, plus cuda when there is a GPU; a device the machine
  lacks is skipped), one taking ``dtype`` on every floating dtype ``--dtype`` names (default
  ``float32,float64``). Example: ``pytest --device cpu --dtype float64 tests/test_serialization.py``.
"""
from __future__ import annotations

import os

import _interp  # first: selects the Triton interpreter before anything imports triton
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


HAS_CUDA = _interp.HAS_CUDA
needs_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
DEVICES = ("cpu", "cuda")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("strnn_fast")
    group.addoption("--device", default="auto",
                    help="devices for tests taking `device`: auto (cpu, plus cuda with a GPU) or a comma list of "
                         f"{', '.join(DEVICES)}")
    group.addoption("--dtype", default="float32,float64",
                    help=f"floating dtypes for tests taking `dtype`: a comma list of {', '.join(DTYPES)}")


def _option_list(config: pytest.Config, name: str, known: tuple[str, ...] | dict) -> list[str]:
    values = [v.strip() for v in str(config.getoption(name)).split(",") if v.strip()]
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        raise pytest.UsageError(f"--{name} {config.getoption(name)!r}: expected a comma list of {', '.join(known)}")
    return values


def pytest_configure(config: pytest.Config) -> None:
    # Bad --device/--dtype values stop the run before collection.
    if config.getoption("device") != "auto":
        _option_list(config, "device", DEVICES)
    _option_list(config, "dtype", DTYPES)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    config = metafunc.config
    if "device" in metafunc.fixturenames:
        option = config.getoption("device")
        devices = ["cpu", "cuda"] if option == "auto" and HAS_CUDA else ["cpu"] if option == "auto" \
            else _option_list(config, "device", DEVICES)
        metafunc.parametrize("device", [pytest.param(d, marks=needs_cuda if d == "cuda" and not HAS_CUDA else ())
                                        for d in devices])
    if "dtype" in metafunc.fixturenames and not _parametrized(metafunc, "dtype"):
        names = _option_list(config, "dtype", DTYPES)
        metafunc.parametrize("dtype", [DTYPES[n] for n in names], ids=names)


def _parametrized(metafunc: pytest.Metafunc, name: str) -> bool:
    # A test's own @pytest.mark.parametrize("dtype", ...) wins over --dtype.
    return any(name in [a.strip() for a in (m.args[0].split(",") if isinstance(m.args[0], str) else m.args[0])]
               for m in metafunc.definition.iter_markers("parametrize"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_CUDA:
        return
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(needs_cuda)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A saved 2-variable Standardized StrAF (names a, b), one per test module."""
    from _cli_world import save_small_model

    return save_small_model(tmp_path_factory.mktemp("cli_world") / "m.pt")


@pytest.fixture(scope="session")
def bad_world(tmp_path_factory):
    """The folder of good and hostile input files of tests/_trust_world.py (no case may change it)."""
    from _trust_world import make_world

    folder = tmp_path_factory.mktemp("corpus") / "w"
    folder.mkdir()
    return make_world(folder)


@pytest.fixture
def abc_files(tmp_path):
    """(data.csv, graph.csv) of a small chain a -> b -> c in tmp_path."""
    from _trust_world import write_abc_files

    return write_abc_files(tmp_path)
