"""The CI gate (bench.gate.design*, ``sbn-bench check``): its design, its checks, and that it catches
injected regressions while the real estimators pass against the committed baseline.

Injected regressions run the gate's own functions on one problem with the real thresholds (the
Bonferroni family of the full registry), so they fail exactly as ``sbn-bench check`` would.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import norm

import estimators.families.psa as psa_module
from bench.gate import design as gate
from bench.cli import main
from bench.gate.design import DESIGN, GroupStats, Measurement
from bench.gate.baseline import DEFAULT_BASELINE, load_baseline, write_baseline
from bench.gate.measure import load_targets, measure, plan_tasks, run_suite, supported, task_seed
from estimators import registry
from estimators.families.arm import antithetic_losses, dphi_da
from estimators.errors import InputError
from estimators.model import head_grad, layer_grad, sample_path
from estimators.families.reinforce import score_grads

P1, P2, P3 = range(3)  # indices into DESIGN.problems


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as run_suite does: tiny tensors
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(one_thread):
    targets = load_targets()
    _, plan = plan_tasks([registry.get(n) for n in registry.names()], targets)
    return targets, plan, load_baseline(DEFAULT_BASELINE)


def run_gate(setup, estimator, problem=P1):
    """Measure ``estimator`` (seeded like the real one of the same spec) and return the failed checks."""
    targets, plan, baseline = setup
    meas = measure(estimator, targets[problem], plan)
    return gate.failures(gate.evaluate([meas], baseline, plan)), meas


# ---- the design --------------------------------------------------------------------------------------

def test_plan_counts_the_family_and_sets_bonferroni_thresholds():
    tasks = [([9, 12, 4], True), ([9, 12, 4], False)]
    plan = gate.plan_for(tasks)
    assert plan.m == 25 + 2 * 50 + 6
    assert plan.z_c == pytest.approx(norm.isf(DESIGN.alpha / (2 * plan.m)), rel=1e-9)
    assert plan.z_v == pytest.approx(norm.isf(DESIGN.alpha / plan.m), rel=1e-9)
    assert plan.z_beta == pytest.approx(norm.isf(DESIGN.beta), rel=1e-9)


def test_every_registered_estimator_is_in_the_committed_baseline(setup):
    targets, plan, baseline = setup
    for name in registry.names():
        est = registry.get(name)
        runs = [t for t in targets if supported(est, t.problem)]
        assert runs, f"estimator {name} supports none of the gate's problems"
        for t in runs:
            assert (t.spec, est.spec) in baseline, f"no baseline for {name} on {t.spec}: run sbn-bench check --update-baseline"


def test_seeds_depend_only_on_the_specs():
    a = task_seed(DESIGN, "p", "st")
    assert a == task_seed(DESIGN, "p", "st") and a != task_seed(DESIGN, "p", "psa") and 0 <= a < 2**63
    assert a != task_seed(replace(DESIGN, root_seed=1), "p", "st")


# ---- pure checks ---------------------------------------------------------------------------------------

def _meas(mean, var, exact, n=10_000):
    gs = GroupStats(size=len(mean), n=n, grad_norm=float(np.linalg.norm(exact)), bias_norm=0.0, noise_floor=0.0,
                    trace_var=float(np.sum(var)), trace_var_se=0.0, mean=np.asarray(mean, float),
                    var=np.asarray(var, float), exact=np.asarray(exact, float))
    return Measurement("p", "e", True, n, 0, 0.0, gs.grad_norm, {"layer0": gs})


def test_unbiased_check_is_a_bonferroni_z_test():
    plan = gate.plan_for([([2], True)])
    se = 0.01  # var 1, n 10_000
    ok = gate.check_unbiased(_meas([1.0 + 0.9 * plan.z_c * se, 2.0], [1.0, 1.0], [1.0, 2.0]), plan)[0]
    bad = gate.check_unbiased(_meas([1.0, 2.0 - 1.1 * plan.z_c * se], [1.0, 1.0], [1.0, 2.0]), plan)[0]
    assert ok.passed and not bad.passed and "coordinate 1" in bad.note
    exact_ok = gate.check_unbiased(_meas([1.0, 2.0], [0.0, 0.0], [1.0, 2.0]), plan)[0]
    exact_bad = gate.check_unbiased(_meas([1.0, 2.001], [0.0, 0.0], [1.0, 2.0]), plan)[0]
    assert exact_ok.passed and not exact_bad.passed


def test_power_check_asserts_the_design():
    plan = gate.plan_for([([2], True)])
    g = np.array([3.0, 4.0])  # ||g|| = 5, delta_i = 0.25 / sqrt 2
    need_se = 0.05 * 5 / math.sqrt(2) / plan.power_factor
    n = 10_000
    ok = gate.check_power(_meas(g, [0.99 * (need_se**2) * n] * 2, g, n), plan)
    weak = gate.check_power(_meas(g, [1.01 * (need_se**2) * n] * 2, g, n), plan)
    assert ok.passed and not weak.passed


def _summary(bias=0.1, floor=0.001, tr=1.0, tr_se=0.01, g=1.0):
    return dict(bias_norm=bias, noise_floor=floor, trace_var=tr, trace_var_se=tr_se, grad_norm=g)


def test_bias_and_variance_tolerances():
    plan = gate.plan_for([([4], False)])
    base = _summary()
    assert gate.check_bias("p", "e", "g", _summary(bias=0.105), base, plan).passed  # inside the 10% margin
    assert not gate.check_bias("p", "e", "g", _summary(bias=0.13), base, plan).passed
    assert gate.check_variance("p", "e", "g", _summary(tr=1.1), base, plan).passed
    assert not gate.check_variance("p", "e", "g", _summary(tr=1.25), base, plan).passed
    # the SE widens the tolerance: the same increase passes when the estimates are noisy
    assert gate.check_variance("p", "e", "g", _summary(tr=1.25, tr_se=0.05), _summary(tr_se=0.05), plan).passed


def test_missing_or_stale_baseline_entry_fails_the_gate():
    plan = gate.plan_for([([2], True)])
    meas = _meas([1.0, 2.0], [1.0, 1.0], [1.0, 2.0])
    checks = gate.evaluate([meas], {}, plan)
    assert [c.check for c in gate.failures(checks)] == ["baseline"]
    entry = {"groups": {"layer0": meas.groups["layer0"].summary()}}
    assert not gate.failures(gate.evaluate([meas], {("p", "e"): entry}, plan))
    entry["groups"]["layer0"]["grad_norm"] *= 1.001  # the problem changed since the baseline was made
    failed = gate.failures(gate.evaluate([meas], {("p", "e"): entry}, plan))
    assert [c.check for c in failed] == ["baseline"] and "problem changed" in failed[0].note


def test_a_crashing_or_nan_estimator_is_a_failed_check_not_bad_input(one_thread):
    class Crashing(registry.classes()["st"]):
        def _estimate(self, problem, draws, generator):
            raise RuntimeError("boom")

    class NaN(registry.classes()["st"]):
        def _estimate(self, problem, draws, generator):
            return [g * float("nan") for g in super()._estimate(problem, draws, generator)]

    measurements, plan = run_suite([Crashing(), NaN()])
    failed = gate.failures(gate.evaluate(measurements, None, plan))
    assert len(failed) == 2 * len(DESIGN.problems) and {c.check for c in failed} == {"error"}
    assert any("boom" in c.note for c in failed) and any("non-finite" in c.note for c in failed)


# ---- baseline file ---------------------------------------------------------------------------------------

def test_baseline_roundtrip_and_bad_files(tmp_path):
    plan = gate.plan_for([([2], True)])
    meas = _meas([1.0, 2.0], [1.0, 1.0], [1.0, 2.0])
    path = write_baseline(tmp_path / "b.json", [meas], plan, {"git_commit": "abc"})
    entries = load_baseline(path)
    assert entries[("p", "e")]["groups"]["layer0"]["trace_var"] == 2.0
    assert json.loads(path.read_text())["manifest"]["git_commit"] == "abc"
    with pytest.raises(InputError, match="another gate design"):
        load_baseline(path, replace(DESIGN, root_seed=1))
    with pytest.raises(InputError, match="not found"):
        load_baseline(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_baseline(tmp_path / "bad.json")
    data = json.loads(path.read_text())
    data["entries"][0]["groups"]["layer0"]["trace_var"] = -1
    (tmp_path / "neg.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="malformed"):
        load_baseline(tmp_path / "neg.json")


# ---- the real estimators pass; injected regressions fail -------------------------------------------------

@pytest.mark.parametrize("name,problem", [("st", P1), ("psa", P3), ("arm", P1), ("reinforce", P3)])
def test_real_estimators_pass(setup, name, problem):
    failed, _ = run_gate(setup, registry.get(name), problem)
    assert not failed, failed


DeepST = registry.classes()["st"]
PSA = registry.classes()["psa"]
Arm = registry.classes()["arm"]
Reinforce = registry.classes()["reinforce"]


class HalfSlopeST(DeepST):
    """Deep ST with the 0/1 slope F'(a) used in the +-1 encoding: half the right scale."""

    def slope(self, problem, a):
        return 0.5 * super().slope(problem, a)


class DoubleSlopeST(DeepST):
    """Deep ST with twice the right slope."""

    def slope(self, problem, a):
        return 2.0 * super().slope(problem, a)


@pytest.mark.parametrize("bad", [HalfSlopeST(), DoubleSlopeST()], ids=["half", "double"])
def test_deep_st_with_the_wrong_scale_fails(setup, bad):
    failed, _ = run_gate(setup, bad, P1)
    assert {c.check for c in failed} >= {"bias"}
    assert any(c.group == "layer1" and c.check == "bias" for c in failed)


class OwnLossReinforce(Reinforce):
    """REINFORCE whose baseline is the draw's own sampled loss (so f - c = 0: hidden gradients vanish)."""

    def _estimate(self, problem, draws, generator):
        path = sample_path(problem, draws, generator)
        f = problem.loss_of(path.x[-1])
        return score_grads(problem, path, f - f)


class BatchMeanReinforce(Reinforce):
    """REINFORCE whose baseline is the batch mean of the draw's own losses, including the point's own:
    biased by -g/B on every hidden layer (25% for B = 4)."""

    def _estimate(self, problem, draws, generator):
        path = sample_path(problem, draws, generator)
        f = problem.loss_of(path.x[-1])
        return score_grads(problem, path, f - f.mean(1, keepdim=True))


@pytest.mark.parametrize("bad", [OwnLossReinforce(), BatchMeanReinforce()], ids=["own-loss", "batch-mean"])
def test_reinforce_with_a_state_dependent_baseline_fails(setup, bad):
    failed, meas = run_gate(setup, bad, P1)
    assert any(c.check == "unbiased" and c.group.startswith("layer") for c in failed)


def test_psa_without_the_exact_last_layer_term_fails(setup, monkeypatch):
    real = psa_module.last_layer_flips

    def linearised(problem, xL):
        eta, eta_flip, f0, _ = real(problem, xL)
        dfdx = problem.loss_fn.grad(eta, problem.y) @ problem.head_weight  # df/d enc(x^L)
        return eta, eta_flip, f0, f0.unsqueeze(-1) - problem.flip_scale * xL * dfdx

    monkeypatch.setattr(psa_module, "last_layer_flips", linearised)
    failed, _ = run_gate(setup, PSA(), P1)
    assert any(c.check == "bias" and c.group == "layer1" for c in failed)  # the last hidden layer

    def zero(problem, xL):
        eta, eta_flip, f0, f_flip = real(problem, xL)
        return eta, eta_flip, f0, f0.unsqueeze(-1).expand_as(f_flip)  # D^L = 0

    monkeypatch.setattr(psa_module, "last_layer_flips", zero)
    failed, _ = run_gate(setup, PSA(), P3)
    assert {c.group for c in failed if c.check == "bias"} >= {"layer0", "layer1", "layer2"}


class SignErrorArm(Arm):
    """ARM with (1/2 - u) instead of (u - 1/2) on the layers in ``WRONG``."""

    WRONG = (0, 1)

    def from_path(self, problem, path, generator):
        grads = []
        for k in range(problem.depth):
            _, f1, f2 = antithetic_losses(problem, path, k, generator, self.shared)
            sign = -1.0 if k in self.WRONG else 1.0
            g_phi = sign * (f1 - f2).unsqueeze(-1) * (path.u[k] - 0.5)
            grads.append(layer_grad(g_phi * dphi_da(problem, path.a[k]), path.inputs[k]))
        grads.append(head_grad(problem, problem.enc(path.x[-1])))
        return grads


class FirstLayerSignErrorArm(SignErrorArm):
    WRONG = (0,)


@pytest.mark.parametrize("bad", [SignErrorArm(), FirstLayerSignErrorArm()], ids=["all-layers", "layer0-only"])
def test_arm_with_a_sign_error_fails(setup, bad):
    failed, _ = run_gate(setup, bad, P1)
    assert any(c.check == "unbiased" and c.group == "layer0" for c in failed)


def test_a_bias_of_the_promised_size_is_caught(setup):
    """REINFORCE plus a bias of exactly 5% of ||g||, spread evenly over all coordinates (the worst case):
    the power design promises detection with probability >= 1 - beta."""
    targets, plan, _ = setup
    t = targets[P1]
    g = t.flat
    signs = np.where(np.arange(g.size) % 2 == 0, 1.0, -1.0)
    b = torch.as_tensor(DESIGN.rel_delta * np.linalg.norm(g) / math.sqrt(g.size) * signs)
    assert float(b.norm()) == pytest.approx(DESIGN.rel_delta * np.linalg.norm(g))
    sizes = t.problem.group_sizes

    class Shifted(Reinforce):
        def _estimate(self, problem, draws, generator):
            grads = super()._estimate(problem, draws, generator)
            return [gr + part for gr, part in zip(grads, torch.split(b, sizes))]

    failed, meas = run_gate(setup, Shifted(), P1)
    assert gate.check_power(meas, plan).passed
    assert any(c.check == "unbiased" for c in failed)


# ---- the command -----------------------------------------------------------------------------------------

def _cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_check_cli_on_a_subset_passes_and_prints_the_table(capsys, tmp_path, one_thread):
    code, out, _ = _cli(["check", "--estimators", "st", "tanh", "--json", str(tmp_path / "c.json")], capsys)
    assert code == 0, out
    assert "p1 = random:widths=2-3-3" in out and "hold" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("p1 ", "p2 ", "p3 "))]
    assert len(rows) == 3 * 2 * 2 * 3 + 2 * 2 * 1  # (bias, variance) x groups; p3 has one more layer
    assert all(r[-1] == "ok" for r in rows)
    data = json.loads((tmp_path / "c.json").read_text())
    assert {c["estimator"] for c in data["checks"]} == {"st", "tanh"}


def test_check_cli_exit_1_on_a_regression_and_update_writes_a_manifest(capsys, tmp_path, one_thread):
    path = tmp_path / "ci.json"
    code, out, _ = _cli(["check", "--update-baseline", "--baseline", str(path), "--estimators", "tanh"], capsys)
    assert code == 0 and path.exists()
    data = json.loads(path.read_text())
    assert data["manifest"]["package_version"] and data["manifest"]["root_seed"] == DESIGN.root_seed
    assert {e["estimator"] for e in data["entries"]} == {"tanh"}
    assert _cli(["check", "--baseline", str(path), "--estimators", "tanh"], capsys)[0] == 0
    for entry in data["entries"]:
        entry["groups"]["layer0"]["bias_norm"] *= 0.5  # the baseline claims half the bias
    path.write_text(json.dumps(data))
    code, out, _ = _cli(["check", "--baseline", str(path), "--estimators", "tanh", "--failures-only"], capsys)
    assert code == 1 and "FAIL" in out and " bias " in out
    rows = [line for line in out.splitlines() if line.startswith(("p1 ", "p2 ", "p3 "))]
    assert len(rows) == len(DESIGN.problems) and all("layer0" in r and "FAIL" in r for r in rows)


@pytest.mark.parametrize("argv", [
    ["check", "--baseline", "/nonexistent/ci.json"],
    ["check", "--estimators", "no-such-estimator"],
    ["check", "--baseline", "__corrupt__"],
])
def test_check_cli_bad_input_is_exit_2(argv, capsys, tmp_path):
    if "__corrupt__" in argv:
        (tmp_path / "c.json").write_text("[]")
        argv = [a.replace("__corrupt__", str(tmp_path / "c.json")) for a in argv]
    code, _, err = _cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_full_check_passes_on_the_unchanged_tree(capsys):
    code, out, _ = _cli(["check", "--failures-only"], capsys)
    assert code == 0, out

