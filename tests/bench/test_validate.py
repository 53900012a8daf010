"""check_estimator / ``sbn-bench validate``: every built-in estimator passes, and each check has teeth.

The statistical checks have the design stated in :mod:`bench.validate` (family-wise false-fail
rate 1e-3 per estimator; the unbiasedness check asserts its power).  With 18 estimators run here
the suite's share is at most 1.8e-2 of a false fail per run in the worst case — the seeds are
fixed, so a run on one platform is deterministic and a torch upgrade fails with that probability.
The broken estimators below are built to fail exactly one check each, by a margin far beyond the
thresholds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from bench.cli import main
from bench.pytest_plugin import parametrize_checks
from bench.validate import CHECKS, check_estimator
from estimators import registry
from estimators.families.straight_through import DeepST
from estimators.families.reinforce import Reinforce
from estimators.model import sample_path


@pytest.mark.parametrize("name", registry.names())
def test_every_builtin_estimator_passes_the_contract(name):
    report = check_estimator(name)
    assert report.passed, report.table()
    assert {v.check.split("[")[0] for v in report.verdicts} == set(CHECKS)


# ---- teeth: each broken estimator fails its check -------------------------------------------------------------------

@dataclass(frozen=True)
class WrongShape(DeepST):
    """Deep ST whose head group loses its last column: the output check must fail it (test double)."""

    name: ClassVar[str] = "wrong-shape"

    def _estimate(self, problem, draws, generator):
        grads = super()._estimate(problem, draws, generator)
        return grads[:-1] + [grads[-1][:, :-1]]


@dataclass(frozen=True)
class GlobalStream(DeepST):
    """Deep ST sampling from torch's global generator: not reproducible under an explicit one (test double)."""

    name: ClassVar[str] = "global-stream"

    def _estimate(self, problem, draws, generator):
        return self.from_path(problem, sample_path(problem, draws, torch.Generator().manual_seed(
            int(torch.randint(0, 2**31, (1,))))), generator)


@dataclass(frozen=True)
class ClaimsUnbiased(DeepST):
    """Deep ST declared unbiased: the unbiasedness check must find its hidden-layer bias (test double)."""

    name: ClassVar[str] = "claims-unbiased"
    unbiased: ClassVar[bool] = True


@dataclass(frozen=True)
class OnePathPerCall(DeepST):
    """Deep ST whose draws in one call share one sampled path: not D independent draws (test double)."""

    name: ClassVar[str] = "one-path"
    has_from_path: ClassVar[bool] = False

    def _estimate(self, problem, draws, generator):
        grads = self.from_path(problem, sample_path(problem, 1, generator), generator)
        return [g.expand(draws, -1).clone() for g in grads]


@dataclass(frozen=True)
class NotPathDeterministic(Reinforce):
    """REINFORCE with noise added from the generator but declared path-deterministic (test double)."""

    name: ClassVar[str] = "noisy-path"

    def from_path(self, problem, path, generator=None):
        grads = super().from_path(problem, path, generator)
        g = generator or torch.Generator().manual_seed(1)
        return [x + torch.randn(x.shape, generator=g, dtype=x.dtype) for x in grads]


@dataclass(frozen=True)
class AcceptsEverything(DeepST):
    """Deep ST declaring logistic noise only but never refusing the others (test double)."""

    name: ClassVar[str] = "accepts-all"
    noises: ClassVar[tuple[str, ...]] = ("logistic",)

    def check(self, problem):
        return None


@dataclass(frozen=True)
class Overflows(DeepST):
    """Deep ST with exp(a) slopes: infinite on a saturated network (test double)."""

    name: ClassVar[str] = "overflows"

    def slope(self, problem, a):
        return torch.exp(a.abs() * 20)


@dataclass(frozen=True)
class ReturnsNaN(DeepST):
    """Deep ST whose estimates are all NaN: the output check must fail it (test double)."""

    name: ClassVar[str] = "returns-nan"

    def _estimate(self, problem, draws, generator):
        return [torch.full_like(g, float("nan")) for g in super()._estimate(problem, draws, generator)]


@pytest.mark.parametrize("cls, check", [
    (WrongShape, "output"), (ReturnsNaN, "output"), (GlobalStream, "determinism"), (ClaimsUnbiased, "unbiasedness"),
    (OnePathPerCall, "draws-in-one-call"), (NotPathDeterministic, "path-determinism"),
    (AcceptsEverything, "declared-support"), (Overflows, "finite"),
])
def test_a_broken_estimator_fails_its_check(cls, check):
    report = check_estimator(cls())
    failed = {v.check.split("[")[0] for v in report.failures()}
    assert check in failed, report.table()


def test_an_output_off_the_contract_is_the_estimators_fault_not_the_problems():
    """Estimator.estimate's contract check (OutputError) fails the output check with its own message; it
    read "refused the check's problem" when the contract check came to raise before the verdict's own."""
    verdict = next(v for v in check_estimator(WrongShape(), ["output"]).verdicts if v.check == "output")
    assert verdict.verdict == "fail" and verdict.detail.startswith("estimator wrong-shape returned shape"), verdict


# ---- the command ----------------------------------------------------------------------------------------------------

def test_validate_command_exit_codes(tmp_path, capsys):
    out = tmp_path / "v.json"
    assert main(["validate", "st", "--checks", "output,cost", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data[0]["estimator"] == "st" and data[0]["passed"] and len(data[0]["verdicts"]) == 2
    assert main(["validate", "no-such-estimator"]) == 2
    assert "unknown estimator" in capsys.readouterr().err
    assert main(["validate", "st", "--checks", "nonsense"]) == 2


def test_validate_command_fails_a_broken_plugin_file(tmp_path, capsys):
    plugin = tmp_path / "claims.py"
    plugin.write_text(
        "from dataclasses import dataclass\nfrom typing import ClassVar\n"
        "from estimators.families.straight_through import DeepST\n\n"
        "@dataclass(frozen=True)\nclass Claims(DeepST):\n"
        "    '''Deep ST declared unbiased (a plugin file that lies about its bias, for the test).'''\n"
        "    name: ClassVar[str] = 'claims-unbiased-file'\n    unbiased: ClassVar[bool] = True\n")
    assert main(["validate", f"{plugin}:Claims", "--checks", "unbiasedness"]) == 1
    assert "FAIL" in capsys.readouterr().out


# ---- the pytest plugin ----------------------------------------------------------------------------------------------

@parametrize_checks("psa", checks=["output", "from-path", "path-determinism"])
def test_the_pytest_plugin_parametrises_checks(sbn_verdicts):
    assert sbn_verdicts and all(v.verdict == "ok" for v in sbn_verdicts), sbn_verdicts


def test_the_pytest_plugin_fixtures(sbn_problem, sbn_exact, sbn_check):
    assert set(sbn_exact) == set(sbn_problem.group_names)
    assert sbn_check("tanh", ["output"]).passed
