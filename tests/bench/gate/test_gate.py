r"""The CI gate (bench.gate.design*, ``sbn-bench check``): its design, its checks, and that it catches
injected regressions while the real estimators pass against the committed baseline.

Injected regressions run the gate's own functions (real draws, the design's stopping rule) on one
problem with the real thresholds (the Bonferroni family of the full default run), so they fail
exactly as ``sbn-bench check`` would.  Those that rotate or lower a bias or break the compiled
kernel assert that their change is at least the one the run detects within the group with
probability $1-\beta$ (the SEs of the run's own tests), so each misses with probability at most
$\beta=10^{-3}$; the real estimators pass with probability
at least $1-\alpha$ (they reproduce the baseline's own streams, so in fact always).
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
from bench.commands.check import _estimators
from bench.gate.design import DESIGN, GroupStats, Measurement
from bench.gate.baseline import DEFAULT_BASELINE, load_baseline, write_baseline
from bench.gate.measure import load_targets, measure, plan_tasks, run_suite, task_seed
from estimators.kernels import psa_fc
from reference.moments import path_moments
from estimators import registry
from estimators.families.arm import antithetic_losses, dphi_da
from estimators.errors import InputError
from estimators.model import head_grad, layer_grad, sample_path
from estimators.families.reinforce import score_grads

P1, P2, P3, P4 = range(4)  # indices into load_targets(): DESIGN.problems, then the conv problem of DESIGN.paths


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as run_suite does: tiny tensors
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(one_thread):
    targets = load_targets()
    _, plan = plan_tasks(_estimators(None, builtin_only=True), targets)  # the default run's family
    return targets, plan, load_baseline(DEFAULT_BASELINE)


def run_gate(setup, estimator, problem=P1):
    """Measure ``estimator`` (seeded like the real one of the same spec) and return the failed checks."""
    targets, plan, baseline = setup
    meas = measure(estimator, targets[problem], plan)
    return gate.failures(gate.evaluate([meas], baseline, plan)), meas


# ---- the design --------------------------------------------------------------------------------------

def test_plan_counts_the_family_and_sets_bonferroni_thresholds():
    tasks = [[9, 12, 4], [9, 12, 4]]
    plan = gate.plan_for(tasks)
    assert plan.m == 2 * 25 + 6  # one test per coordinate (exact or baseline), one variance check per group
    assert plan.z_c == pytest.approx(norm.isf(DESIGN.alpha / (2 * plan.m)), rel=1e-9)
    assert plan.z_v == pytest.approx(norm.isf(DESIGN.alpha / plan.m), rel=1e-9)
    assert plan.z_beta == pytest.approx(norm.isf(DESIGN.beta), rel=1e-9)


def test_every_registered_estimator_is_in_the_committed_baseline(setup):
    targets, plan, baseline = setup
    tasks, _ = plan_tasks(_estimators(None, builtin_only=True), targets)
    for name in registry.names():
        assert any(e.name == name for _, e in tasks), f"estimator {name} supports none of the gate's problems"
    for p, spec in DESIGN.paths:
        assert any((t.spec, e.spec) == (p, spec) for t, e in tasks), f"path {spec} on {p} is not run"
    for t, est in tasks:
        assert (t.spec, est.spec) in baseline, f"no baseline for {est.spec} on {t.spec}: run sbn-bench check --update-baseline"


def test_the_committed_baseline_is_clean_and_the_gate_reads_it_strictly():
    data = json.loads(DEFAULT_BASELINE.read_text())
    assert data["version"] == 2 and data["manifest"]["git_dirty"] is False
    assert data["manifest"]["git_commit"] not in ("", "unknown")


def test_seeds_depend_only_on_the_specs():
    a = task_seed(DESIGN, "p", "st")
    assert a == task_seed(DESIGN, "p", "st") and a != task_seed(DESIGN, "p", "psa") and 0 <= a < 2**63
    assert a != task_seed(replace(DESIGN, root_seed=1), "p", "st")


# ---- pure checks ---------------------------------------------------------------------------------------

def _meas(mean, var, exact, n=10_000, declared=("layer0",)):
    gs = GroupStats(size=len(mean), n=n, grad_norm=float(np.linalg.norm(exact)),
                    bias_norm=float(np.linalg.norm(np.subtract(mean, exact))), noise_floor=0.0,
                    trace_var=float(np.sum(var)), trace_var_se=0.0, mean=np.asarray(mean, float),
                    var=np.asarray(var, float), exact=np.asarray(exact, float))
    return Measurement("p", "e", tuple(declared), n, 0, 0.0, gs.grad_norm, {"layer0": gs})


def test_unbiased_check_is_a_bonferroni_z_test():
    plan = gate.plan_for([[2]])
    se = 0.01  # var 1, n 10_000
    ok = gate.check_unbiased(_meas([1.0 + 0.9 * plan.z_c * se, 2.0], [1.0, 1.0], [1.0, 2.0]), plan)[0]
    bad = gate.check_unbiased(_meas([1.0, 2.0 - 1.1 * plan.z_c * se], [1.0, 1.0], [1.0, 2.0]), plan)[0]
    assert ok.passed and not bad.passed and "coordinate 1" in bad.note
    exact_ok = gate.check_unbiased(_meas([1.0, 2.0], [0.0, 0.0], [1.0, 2.0]), plan)[0]
    exact_bad = gate.check_unbiased(_meas([1.0, 2.001], [0.0, 0.0], [1.0, 2.0]), plan)[0]
    assert exact_ok.passed and not exact_bad.passed
    assert gate.check_unbiased(_meas([9.0, 9.0], [1.0, 1.0], [1.0, 2.0], declared=()), plan) == []  # not declared


def test_power_check_asserts_the_design():
    plan = gate.plan_for([[2]])
    g = np.array([3.0, 4.0])  # ||g|| = 5, delta_i = 0.25 / sqrt 2
    need_se = 0.05 * 5 / math.sqrt(2) / plan.power_factor
    n = 10_000
    ok = gate.check_power(_meas(g, [0.99 * (need_se**2) * n] * 2, g, n), plan)
    weak = gate.check_power(_meas(g, [1.01 * (need_se**2) * n] * 2, g, n), plan)
    assert ok.passed and not weak.passed
    # a group tested against the baseline: its SE is that of the difference, sqrt(2) larger here
    base = {"groups": {"layer0": {"var": [0.99 * (need_se**2) * n] * 2, "n": n}}}
    assert not gate.check_power(_meas(g, [0.99 * (need_se**2) * n] * 2, g, n, declared=()), plan, baseline_entry=base).passed
    assert gate.check_power(_meas(g, [0.49 * (need_se**2) * n] * 2, g, n, declared=()), plan,
                            baseline_entry={"groups": {"layer0": {"var": [0.49 * (need_se**2) * n] * 2, "n": n}}}).passed


def _summary(bias=0.1, floor=0.001, tr=1.0, tr_se=0.01, g=1.0):
    return dict(bias_norm=bias, noise_floor=floor, trace_var=tr, trace_var_se=tr_se, grad_norm=g)


def test_bias_check_is_a_bonferroni_z_test_of_the_difference_of_mean_vectors():
    """Var 1 now and in the baseline, n 10_000 each: the SE of a difference is sqrt(2) / 100."""
    plan = gate.plan_for([[2]])
    se = math.sqrt(2) / 100
    exact = [0.0, 0.0]
    base = dict(_summary(bias=1.0), mean=[0.6, 0.8], var=[1.0, 1.0], n=10_000)  # bias (0.6, 0.8)

    def shift(mean):
        return gate.check_bias_shift(_meas(mean, [1.0, 1.0], exact, declared=()), "layer0", base, plan)

    assert shift([0.6 + 0.9 * plan.z_c * se, 0.8]).passed
    assert not shift([0.6, 0.8 - 1.1 * plan.z_c * se]).passed  # a lower bias fails too
    assert not shift([0.8, 0.6]).passed  # the same norm, turned
    assert not shift([0.0, 0.0]).passed  # the bias gone
    det = dict(base, var=[0.0, 0.0])  # zero variance: compared to rounding
    assert gate.check_bias_shift(_meas([0.6, 0.8], [0.0, 0.0], exact, declared=()), "layer0", det, plan).passed
    assert not gate.check_bias_shift(_meas([0.6, 0.8001], [0.0, 0.0], exact, declared=()), "layer0", det, plan).passed


def test_variance_tolerances():
    plan = gate.plan_for([[4]])
    base = _summary()
    assert gate.check_variance("p", "e", "g", _summary(tr=1.1), base, plan).passed
    assert not gate.check_variance("p", "e", "g", _summary(tr=1.25), base, plan).passed
    # the SE widens the tolerance: the same increase passes when the estimates are noisy
    assert gate.check_variance("p", "e", "g", _summary(tr=1.25, tr_se=0.05), _summary(tr_se=0.05), plan).passed


def test_missing_or_stale_baseline_entry_fails_the_gate():
    plan = gate.plan_for([[2]])
    meas = _meas([1.0, 2.0], [1.0, 1.0], [1.0, 2.0])
    checks = gate.evaluate([meas], {}, plan)
    assert [c.check for c in gate.failures(checks)] == ["baseline"]
    entry = {"groups": {"layer0": meas.groups["layer0"].record()}}
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
    plan = gate.plan_for([[2]])
    meas = _meas([1.0, 2.0 + 1e-17], [1.0, 1.0], [1.0, 2.0])
    path = write_baseline(tmp_path / "b.json", [meas], plan, {"git_commit": "abc", "git_dirty": False})
    entries = load_baseline(path)
    assert entries[("p", "e")]["groups"]["layer0"]["trace_var"] == 2.0
    assert entries[("p", "e")]["groups"]["layer0"]["mean"] == [1.0, 2.0 + 1e-17]  # exact float round trip
    assert entries[("p", "e")]["unbiased_groups"] == ["layer0"]
    assert "[1.0, 2.0]" in path.read_text()  # vectors on one line
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
    data = json.loads(path.read_text())
    data["entries"][0]["groups"]["layer0"]["mean"] = [1.0]  # one coordinate short
    (tmp_path / "short.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="malformed"):
        load_baseline(tmp_path / "short.json")


def test_old_format_and_dirty_baselines_are_refused(tmp_path):
    plan = gate.plan_for([[2]])
    meas = _meas([1.0, 2.0], [1.0, 1.0], [1.0, 2.0])
    path = write_baseline(tmp_path / "b.json", [meas], plan, {"git_commit": "abc", "git_dirty": True})
    with pytest.raises(InputError, match="dirty tree.*--allow-dirty-baseline"):
        load_baseline(path)
    assert ("p", "e") in load_baseline(path, allow_dirty=True)
    data = json.loads(path.read_text())
    data["version"] = 1
    (tmp_path / "v1.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="version 1.*regenerate it with 'sbn-bench check --update-baseline'"):
        load_baseline(tmp_path / "v1.json", allow_dirty=True)


# ---- the real estimators pass; injected regressions fail -------------------------------------------------

@pytest.mark.parametrize("name,problem", [("st", P1), ("psa", P3), ("arm", P1), ("reinforce", P3), ("st-tanh", P2)])
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


def test_psa_with_a_biased_last_layer_fails(setup, monkeypatch):
    """The last hidden layer is declared unbiased: linearising its exact flips fails its z-test against the
    exact gradient (not only a comparison with the baseline)."""
    real = psa_module.last_layer_flips

    def linearised(problem, xL):
        eta, eta_flip, f0, _ = real(problem, xL)
        dfdx = problem.loss_fn.grad(eta, problem.y) @ problem.head_weight  # df/d enc(x^L)
        return eta, eta_flip, f0, f0.unsqueeze(-1) - problem.flip_scale * xL * dfdx

    monkeypatch.setattr(psa_module, "last_layer_flips", linearised)
    failed, _ = run_gate(setup, PSA(), P1)
    assert any(c.check == "unbiased" and c.group == "layer1" for c in failed)  # the last hidden layer

    def zero(problem, xL):
        eta, eta_flip, f0, f_flip = real(problem, xL)
        return eta, eta_flip, f0, f0.unsqueeze(-1).expand_as(f_flip)  # D^L = 0

    monkeypatch.setattr(psa_module, "last_layer_flips", zero)
    failed, _ = run_gate(setup, PSA(), P3)
    assert {c.group for c in failed if c.check == "bias"} >= {"layer0", "layer1"}
    assert any(c.check == "unbiased" and c.group == "layer2" for c in failed)


def _shifted_st(setup, problem, group, new_bias):
    r"""Deep ST plus a constant per-draw shift of ``group`` that turns its bias $b$ (the baseline's mean minus
    the exact gradient) into ``new_bias(b)``.  Asserts that the change is at least the one the run detects
    within that group with power $1-\beta$ (any change of that norm has a coordinate of
    $\max_i\mathrm{SE}_i(z_c+z_{1-\beta})$ or more), so the test misses with probability at most $\beta$."""
    targets, plan, baseline = setup
    t = targets[problem]
    entry = baseline[(t.spec, "st")]
    b = np.asarray(entry["groups"][group]["mean"]) - t.exact[group]
    change = new_bias(b) - b
    shift = torch.as_tensor(change)

    class Shifted(DeepST):
        def _estimate(self, problem_, draws, generator):
            out = super()._estimate(problem_, draws, generator)
            i = problem_.group_names.index(group)
            return [g + shift if k == i else g for k, g in enumerate(out)]

    failed, meas = run_gate(setup, Shifted(), problem)
    detectable = gate.detectable_group_bias(meas, plan, entry)[group] * np.linalg.norm(t.exact[group])
    assert np.linalg.norm(change) >= detectable, (np.linalg.norm(change), detectable)
    return failed, meas, b


def test_a_rotated_bias_fails(setup):
    """The same bias norm in another direction (coordinates reversed: an orthogonal map) fails the
    per-coordinate comparison, while the bias norm alone would not have moved."""
    failed, meas, b = _shifted_st(setup, P1, "layer0", lambda b: b[::-1].copy())
    assert any(c.check == "bias" and c.group == "layer0" for c in failed)
    assert meas.groups["layer0"].bias_norm == pytest.approx(float(np.linalg.norm(b)), rel=0.05)


def test_a_lowered_bias_fails(setup):
    """Half the bias is a change too: the baseline must be regenerated (and reviewed) deliberately."""
    failed, meas, b = _shifted_st(setup, P1, "layer0", lambda b: 0.5 * b)
    assert any(c.check == "bias" and c.group == "layer0" for c in failed)
    assert meas.groups["layer0"].bias_norm < 0.6 * float(np.linalg.norm(b))


def test_the_fused_kernel_runs_in_the_gate_and_a_wrong_one_fails(setup, monkeypatch):
    """``psa:kernel=fused`` is gated on the design's paths: the compiled kernel must really run (``path``), and
    a compiled kernel with the wrong flip scale (that of the 01 encoding on a pm1 problem) fails the
    comparison of the first layer's mean vector with the baseline."""
    fused = registry.get("psa:kernel=fused")
    assert (DESIGN.problems[P1], fused.spec) in DESIGN.paths
    failed, meas = run_gate(setup, fused, P1)
    assert not failed and not meas.path, failed
    real = psa_fc._fused_in_range

    def wrong_scale(x_in, a, W, h, noise, flip_scale, *rest):
        return real(x_in, a, W, h, noise, 0.5 * flip_scale, *rest)

    targets, plan, baseline = setup
    right = path_moments(fused, targets[P1].problem)["layer0"][0]
    monkeypatch.setattr(psa_fc, "_fused_in_range", wrong_scale)
    change = float((path_moments(fused, targets[P1].problem)["layer0"][0] - right).norm())  # exact, by enumeration
    failed, meas = run_gate(setup, fused, P1)
    entry = baseline[(DESIGN.problems[P1], fused.spec)]
    assert change >= gate.detectable_group_bias(meas, plan, entry)["layer0"] * np.linalg.norm(targets[P1].exact["layer0"])
    assert not meas.path  # the (wrong) compiled kernel ran
    assert any(c.check == "bias" and c.group == "layer0" for c in failed)
    assert not any(c.group in ("layer1", "head") for c in failed)  # exact last layer and head untouched


def test_a_fused_kernel_that_falls_back_to_eager_fails_the_path_check(setup, monkeypatch):
    monkeypatch.setattr(psa_fc, "fused_supported", lambda *a, **k: False)  # as when torch.compile is missing
    failed, meas = run_gate(setup, registry.get("psa:kernel=fused"), P1)
    assert [c.check for c in failed] == ["path"] and "never ran" in failed[0].note


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
    rows = [line.split() for line in out.splitlines() if line.startswith(("p1 ", "p2 ", "p3 ", "p4 "))]
    # per problem and estimator: (bias or unbiased, variance) per group plus power; p3 has one more layer
    assert len(rows) == 2 * (2 * 3 + 1) * 2 + 2 * (2 * 4 + 1)
    assert all(r[-1] == "ok" for r in rows)
    assert {(r[1], r[2]) for r in rows if r[3] == "unbiased"} == {("st", "head")}  # its declared group
    assert {(r[1], r[2]) for r in rows if r[3] == "bias"} == {(e, g) for e in ("st", "tanh")
                                                              for g in ("layer0", "layer1", "layer2")} | {("tanh", "head")}
    data = json.loads((tmp_path / "c.json").read_text())
    assert {c["estimator"] for c in data["checks"]} == {"st", "tanh"}


def test_check_cli_exit_1_on_a_regression_and_update_writes_a_manifest(capsys, tmp_path, one_thread):
    path = tmp_path / "ci.json"
    code, out, _ = _cli(["check", "--update-baseline", "--baseline", str(path), "--estimators", "tanh"], capsys)
    assert code == 0 and path.exists()
    data = json.loads(path.read_text())
    assert data["manifest"]["package_version"] and data["manifest"]["root_seed"] == DESIGN.root_seed
    assert {e["estimator"] for e in data["entries"]} == {"tanh"}
    ok = ["check", "--baseline", str(path), "--estimators", "tanh", "--allow-dirty-baseline"]
    assert _cli(ok, capsys)[0] == 0
    for entry in data["entries"]:
        entry["groups"]["layer0"]["mean"][0] *= 0.5  # the baseline's mean vector differs in one coordinate
    path.write_text(json.dumps(data))
    code, out, _ = _cli(ok + ["--failures-only"], capsys)
    assert code == 1 and "FAIL" in out and " bias " in out
    rows = [line for line in out.splitlines() if line.startswith(("p1 ", "p2 ", "p3 "))]
    assert len(rows) == len(DESIGN.problems) and all("layer0" in r and "FAIL" in r for r in rows)


@pytest.mark.parametrize("argv,message", [
    (["check", "--baseline", "/nonexistent/ci.json"], "not found"),
    (["check", "--estimators", "no-such-estimator"], "no-such-estimator"),
    (["check", "--baseline", "__corrupt__"], "not an sbn-bench gate baseline"),
    (["check", "--baseline", "__v1__", "--estimators", "st"], "regenerate it with 'sbn-bench check --update-baseline'"),
    (["check", "--baseline", "__dirty__", "--estimators", "st"], "dirty tree"),
])
def test_check_cli_bad_input_is_exit_2(argv, message, capsys, tmp_path):
    (tmp_path / "c.json").write_text("[]")
    data = json.loads(DEFAULT_BASELINE.read_text())
    (tmp_path / "dirty.json").write_text(json.dumps({**data, "manifest": {**data["manifest"], "git_dirty": True}}))
    (tmp_path / "v1.json").write_text(json.dumps({**data, "version": 1}))
    names = {"__corrupt__": "c.json", "__dirty__": "dirty.json", "__v1__": "v1.json"}
    argv = [str(tmp_path / names[a]) if a in names else a for a in argv]
    code, _, err = _cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err and message in err, err


@pytest.mark.slow
def test_full_check_passes_on_the_unchanged_tree(capsys):
    code, out, _ = _cli(["check", "--failures-only"], capsys)
    assert code == 0, out

