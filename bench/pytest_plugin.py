"""pytest plugin shipped with sbn-bench: the contract checks in your own test suite.

Opt in (it imports torch, so it is not loaded into every pytest run of the environment) with
``pytest_plugins = ["bench.pytest_plugin"]`` in your top-level ``conftest.py``, or ``pytest -p
bench.pytest_plugin``.

Fixtures:

- ``sbn_problem`` — the small float64 problem the checks use (``random:widths=2-3-3``, 8 points);
- ``sbn_exact`` — its exact gradient per parameter group (float64, by enumeration);
- ``sbn_check`` — a function ``sbn_check(estimator, checks=None) -> Report``.

And a helper to turn every check into its own test with a readable id::

    from bench.pytest_plugin import parametrize_checks

    @parametrize_checks("mypkg.estimators:MyEstimator")
    def test_my_estimator(sbn_verdicts):
        assert all(v.verdict != "fail" for v in sbn_verdicts), sbn_verdicts

(``pytest -k unbiasedness`` then selects one check.)  The statistical checks have the designed
false-fail rate of :mod:`bench.validate`.
"""

from __future__ import annotations

import pytest
import torch

from bench.validate import PROBLEM, check_estimator, check_names
from estimators import registry
from reference.exact import exact
from reference.problems import build_problem

__all__ = ["parametrize_checks"]


@pytest.fixture(scope="session")
def sbn_problem():
    return build_problem(PROBLEM).to(dtype=torch.float64)


@pytest.fixture(scope="session")
def sbn_exact(sbn_problem):
    return exact(sbn_problem).grads


@pytest.fixture
def sbn_check():
    return check_estimator


def parametrize_checks(spec: str, checks: list[str] | None = None, seed: int = 0):
    """A decorator: one test per check of ``spec``; the test receives ``sbn_verdicts`` (that check's verdicts)."""
    names = checks or check_names()
    return pytest.mark.parametrize("sbn_verdicts", [pytest.param((spec, n, seed), id=n) for n in names],
                                   indirect=True)


@pytest.fixture
def sbn_verdicts(request):
    """The verdicts of one check (set by :func:`parametrize_checks`)."""
    spec, name, seed = request.param
    return check_estimator(registry.get(spec), [name], seed=seed).verdicts
