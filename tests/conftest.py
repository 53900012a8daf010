"""Shared fixtures: devices (CUDA skipped, not failed, when absent), dtypes, deterministic torch, one thread.

Shared plain helpers (not fixtures) live in ``helpers.py``."""

from __future__ import annotations

import pytest
import torch

from estimators import registry

#: the plugin sbn-bench ships for outsiders' test suites; its own suite uses it the same way
pytest_plugins = ["bench.pytest_plugin"]


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="CUDA is not available")
    skip_slow = pytest.mark.skip(reason="slow: run with --run-slow (tox -e stat)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> str:
    return request.param


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture(autouse=True)
def _deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.fixture
def one_thread():
    """Small tensors: one intra-op thread (a second one only adds barrier waits, badly so on a loaded machine).

    Request it as an argument, or for a whole module with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


@pytest.fixture
def make_gen():
    """``make_gen(seed, device)``: an explicit, seeded generator (library code never uses the global one)."""
    return _gen


@pytest.fixture(autouse=True)
def _registry_restored():
    """Plugins a test loads stay in that test: the estimator registry is restored after each one."""
    registry.classes()  # discovery happens once, outside the snapshot
    saved = dict(registry._REGISTRY), dict(registry._ORIGINS)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved[0])
    registry._ORIGINS.clear()
    registry._ORIGINS.update(saved[1])
