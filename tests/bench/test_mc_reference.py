"""The Monte Carlo reference against the exact one, where both apply.

Design.  Each validation test makes ``m`` interval checks, each at level ``1 - ALPHA / m``, so by the
union bound a correct reference fails a test with probability at most ``ALPHA`` = 0.01 (nominal:
the jackknife and normal intervals are asymptotic; 16 batches, t quantile with 15 degrees of freedom).
The checks, per parameter group and for ``all``:

- ``grad_norm``: the Monte Carlo interval of ``||g||`` covers the exact ``||g||``;
- ``rel_bias`` of a biased estimator (ST): the Monte Carlo interval and the exact scorer's interval
  (independent draws of A, scored against the exact gradient) overlap.  Both cover the truth except
  with probability ``ALPHA / m`` each, so two intervals count as two of the ``m``.

A biased reference (reinforce-loo plus a constant offset orthogonal to ``g`` in every group, of norm
``OFFSET * ||g_group||``) shifts ``||g||`` of the whole gradient by ``(sqrt(1 + OFFSET^2) - 1)`` = 11.8%
for OFFSET = 0.5; the test asserts that this shift exceeds the half-width of the ``all`` interval three
times over (so the interval misses the exact value unless the estimate errs by two half-widths towards
it: power > 0.999) and that the validation fails on it.  Seeds are fixed.
"""

from __future__ import annotations

import math
import os
from statistics import NormalDist

import numpy as np
import pytest
import torch

from bench.mc_reference import Reference, ReferenceSums, pilot, reference_settings, reference_sums, score_mc
from bench.scoring import score
from estimators import registry
from estimators.errors import InputError
from reference import exact
from reference.problems import build_problem

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: a second thread only adds barrier waits

ALPHA = 0.01
OFFSET = 0.5


def _rows(rows, metric, M=0):
    return {r["group"]: r for r in rows if r["metric"] == metric and r["M"] == M}


def _validate(problem, reference, estimator, draws, seed, ref_draws=None):
    """The failed checks (strings) of the Monte Carlo scores against the exact reference (``ref_draws``
    reference draws, default ``draws``)."""
    groups = list(problem.group_names) + ["all"]
    m = 3 * len(groups)  # grad_norm interval, MC rel_bias interval, exact rel_bias interval
    level = 1 - ALPHA / m
    ex = exact(problem)
    gnorm = {g: float(v.norm()) for g, v in ex.grads.items()}
    gnorm["all"] = float(ex.flat.norm())
    gen, rgen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    if ref_draws is not None:
        reference = reference_sums(problem, reference, rgen, draws=ref_draws)
    mc = score_mc(estimator, problem, reference, draws, gen, rgen, grid=[1], level=level)
    xs = score(estimator, problem, ex.grads, draws, torch.Generator().manual_seed(seed + 2), grid=[1], level=level)
    bad = []
    gn, rb_mc, rb_ex = _rows(mc.rows, "grad_norm"), _rows(mc.rows, "rel_bias"), _rows(xs.rows, "rel_bias")
    for g in groups:
        if not gn[g]["lo"] <= gnorm[g] <= gn[g]["hi"]:
            bad.append(f"grad_norm {g}: exact {gnorm[g]:.5g} outside [{gn[g]['lo']:.5g}, {gn[g]['hi']:.5g}]")
        if rb_mc[g]["lo"] > rb_ex[g]["hi"] or rb_ex[g]["lo"] > rb_mc[g]["hi"]:
            bad.append(f"rel_bias {g}: MC [{rb_mc[g]['lo']:.4f}, {rb_mc[g]['hi']:.4f}] and exact "
                       f"[{rb_ex[g]['lo']:.4f}, {rb_ex[g]['hi']:.4f}] do not overlap")
    return bad, mc, gnorm


PROBLEMS = {
    "psa-2-5-5-5": ("psa-2-5-5-5", 4096),
    "random-12": ("random:widths=4-12-6,points=16,scale=1.0,seed=3", 4096),
}


@pytest.mark.parametrize("ref_name, seed", [("reinforce-loo", 17), ("psa-iw", 23)])
@pytest.mark.parametrize("key", list(PROBLEMS))
def test_mc_scores_agree_with_exact(key, ref_name, seed):
    """The reference drawn by leave-one-out REINFORCE, or by the importance-weighted PSA (the pilot's usual
    choice for the hidden layers of wide networks), in every group; the same design and false-fail rate."""
    spec, draws = PROBLEMS[key]
    problem = build_problem(spec)
    ref = Reference({g: registry.get(ref_name) for g in problem.group_names})
    bad, mc, _ = _validate(problem, ref, registry.get("st"), draws, seed=seed)
    assert not bad, f"{key}: " + "; ".join(bad)
    assert mc.reference["by_group"] == {g: ref_name for g in problem.group_names}
    assert mc.draws >= draws and mc.draws % 16 == 0


def test_mc_scores_agree_with_exact_with_more_reference_draws():
    """The reference stream and the scored one need not have the same length: 8 times as many reference
    draws (the sweep's shared reference), same design and false-fail rate as above."""
    problem = build_problem("psa-2-5-5-5")
    ref = Reference({g: registry.get("reinforce-loo") for g in problem.group_names})
    bad, mc, _ = _validate(problem, ref, registry.get("st"), 1024, seed=41, ref_draws=8192)
    assert not bad, "; ".join(bad)
    assert mc.reference["draws"] == 8192 and mc.draws == 1024


def test_time_budget_splits_draws_per_group_and_still_agrees_with_exact():
    """With the pilot's timings, a time budget gives each group equal compute: here PSA (timed 4 times
    faster, two groups) draws 4 times as often as leave-one-out REINFORCE (two groups).  One round of
    16 chunks (a budget of 1e-9 s stops after the first); the validation of the first test (same design
    and false-fail rate) holds with these unequal per-group counts."""
    problem = build_problem("psa-2-5-5-5")
    rl, psa = registry.get("reinforce-loo"), registry.get("psa")
    ref = Reference({"layer0": rl, "layer1": rl, "layer2": psa, "head": psa}, [],
                    {rl.spec: 4e-3, psa.spec: 1e-3})
    assert ref.draws_per_chunk(512) == {rl.spec: 128, psa.spec: 512}
    # with the pilot's variances and a ||g||^2 proxy, half the time goes by need nu = tr Var t / ||g||^2:
    # layer0 3.2, layer1 0.004, layer2 and head 0.001 (sum 3.206), half equally (1/8 each): reinforce-loo's
    # share is 1/8 + 3.2 / 6.412 = 0.62406 for 4e-3 s a draw, PSA's 1/8 + 0.001 / 6.412 = 0.12516 for 1e-3 s,
    # so per chunk of 800 PSA draws 800 * (0.12516 / 1e-3) / (0.62406 / 4e-3) = 641.8
    table = [dict(estimator=rl.spec, group="layer0", trace_var=8.0), dict(estimator=rl.spec, group="layer1",
             trace_var=1.0), dict(estimator=psa.spec, group="layer2", trace_var=1.0),
             dict(estimator=psa.spec, group="head", trace_var=1.0)]
    proxy = {"layer0": 1e-2, "layer1": 1.0, "layer2": 1.0, "head": 1.0}
    weighted = Reference(ref.by_group, table, ref.seconds_per_draw, proxy)
    assert weighted.draws_per_chunk(800) == {rl.spec: 800, psa.spec: 642}
    assert Reference(ref.by_group, table, ref.seconds_per_draw, dict(proxy, head=-1.0)).draws_per_chunk(512) \
        == {rl.spec: 128, psa.spec: 512}  # an unusable proxy (an estimate <= 0): equal time per group
    sums = reference_sums(problem, ref, torch.Generator().manual_seed(7), seconds=1e-9, chunk=512)
    assert sums.record["draws_by_group"] == {"layer0": 2048, "layer1": 2048, "layer2": 8192, "head": 8192}
    bad, mc, _ = _validate(problem, sums, registry.get("st"), 2048, seed=43)
    assert not bad, "; ".join(bad)


def test_reference_sums_round_trip_and_refuse_foreign_files(tmp_path):
    problem = build_problem("random:widths=3-4-4,points=8,seed=2")
    ref = Reference({g: registry.get("reinforce-loo") for g in problem.group_names})
    sums = reference_sums(problem, ref, torch.Generator().manual_seed(0), draws=64)
    path = str(tmp_path / "r.npz")
    sums.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["r.npz"]  # no temporary file left
    back = ReferenceSums.load(path, sums.S.shape[1], sums.Q.shape[1])
    assert np.array_equal(back.S, sums.S) and np.array_equal(back.Q, sums.Q) and back.record == sums.record
    assert ReferenceSums.load(path, sums.S.shape[1] + 1, sums.Q.shape[1]) is None  # another problem's shape
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert ReferenceSums.load(str(tmp_path / "bad.npz"), sums.S.shape[1], sums.Q.shape[1]) is None
    t = reference_sums(problem, ref, torch.Generator().manual_seed(0), seconds=0.2)
    assert t.draws >= 16 and t.draws % 16 == 0 and t.record["budget"] == {"draws": None, "seconds": 0.2, "precision": None}
    assert t.record["stopped_by"] == "seconds"
    # a spent budget with one draw per chunk (a slow estimator) still gives every group 16 batches of two draws
    # (a new-user probe found 16 draws per group, against the documented minimum of 32)
    spent = reference_sums(problem, ref, torch.Generator().manual_seed(0), seconds=1e-9, chunk=1)
    assert set(spent.record["draws_by_group"].values()) == {32} and (spent.n >= 2).all()
    with pytest.raises(InputError, match="either a number of draws or a time budget"):
        reference_sums(problem, ref, torch.Generator(), draws=64, seconds=1.0)


def test_a_precision_target_ends_a_time_budget_early_by_the_pilots_figures():
    """``precision`` p: an estimator's stream ends after the first whole round in which it has
    tr Var / (p^2 ||g||^2) draws for each of its groups (the pilot's figures); a group without a usable
    ||g||^2 proxy never ends it early (the time budget does)."""
    problem = build_problem("random:widths=3-4-4,points=8,seed=2")
    rl = registry.get("reinforce-loo")
    table = [dict(estimator=rl.spec, group=g, trace_var=v) for g, v in zip(problem.group_names, (1.0, 2.0, 0.5))]
    ref = Reference({g: rl for g in problem.group_names}, table, {rl.spec: 1e-5},
                    dict(zip(problem.group_names, (1.0, 4.0, 0.01))))
    # per group 1/(0.1^2 * proxy) * trace_var: 100, 50, 5000 -> the estimator needs 5000
    assert ref.enough_draws(0.1) == {rl.spec: pytest.approx(5000.0)}
    sums = reference_sums(problem, ref, torch.Generator().manual_seed(0), seconds=600.0, chunk=64, precision=0.1)
    assert sums.record["stopped_by"] == "precision" and sums.record["budget"]["precision"] == 0.1
    assert sums.draws == 5120  # whole rounds of 16 chunks of 64: the first round past 5000
    assert sums.record["seconds"] < 60
    unusable = Reference(ref.by_group, table, ref.seconds_per_draw, dict(ref.norm2_proxy, head=-1.0))
    assert unusable.enough_draws(0.1) == {rl.spec: math.inf}
    timed = reference_sums(problem, unusable, torch.Generator().manual_seed(0), seconds=0.3, chunk=64, precision=0.1)
    assert timed.record["stopped_by"] == "seconds"
    # a number of draws is exact: precision leaves it alone
    fixed = reference_sums(problem, ref, torch.Generator().manual_seed(0), draws=64 * 16 * 8, chunk=64, precision=0.1)
    assert fixed.draws == 8192 and fixed.record["stopped_by"] == "draws"


class _Offset(Reference):
    """A deliberately biased reference: every draw shifted by a constant vector."""

    def __init__(self, by_group, shift):
        super().__init__(by_group)
        self.shift = shift

    def draw_estimator(self, problem, spec, draws, generator):
        return super().draw_estimator(problem, spec, draws, generator) + self.shift


def test_biased_reference_is_caught():
    problem = build_problem("psa-2-5-5-5")
    ex = exact(problem)
    rng = np.random.default_rng(5)
    parts = []
    for g in problem.group_names:
        v = ex.grads[g].double().numpy()
        u = rng.normal(size=v.size)
        u -= (u @ v) / (v @ v) * v  # orthogonal to g in the group
        parts.append(OFFSET * np.linalg.norm(v) * u / np.linalg.norm(u))
    shift = np.concatenate(parts)
    ref = _Offset({g: registry.get("reinforce-loo") for g in problem.group_names}, shift)
    bad, mc, gnorm = _validate(problem, ref, registry.get("st"), 1024, seed=23)
    gn = _rows(mc.rows, "grad_norm")
    half = (gn["all"]["hi"] - gn["all"]["lo"]) / 2  # the power design holds on this sample
    assert (math.sqrt(1 + OFFSET**2) - 1) * gnorm["all"] > 3 * half, f"offset too small for the CI {half:.3g}"
    assert any(b.startswith("grad_norm all") for b in bad), "a reference biased by 50% of ||g|| went unnoticed"


def test_unbiased_estimator_has_zero_bias_in_its_interval():
    """A = reference estimator family (independent draws): ||E A - g||^2 = 0 lies in the interval of b^2
    (lower end clipped at 0) in every group and ``all``: 4 checks at level 1 - ALPHA / 4."""
    problem = build_problem("random:widths=3-6-6,points=16,scale=1.0,seed=1")
    ref = Reference({g: registry.get("reinforce-loo") for g in problem.group_names})
    gen, rgen = torch.Generator().manual_seed(31), torch.Generator().manual_seed(32)
    mc = score_mc(registry.get("reinforce-loo"), problem, ref, 1024, gen, rgen, grid=[1, 10], level=1 - ALPHA / 4)
    for g, r in _rows(mc.rows, "rel_bias").items():
        assert r["lo"] == 0.0, f"{g}: an unbiased estimator's relative bias interval excludes 0: {r}"


def test_pilot_picks_per_group_and_records():
    problem = build_problem("random:widths=3-4-4,points=8,seed=2")
    ref = pilot(problem, torch.Generator().manual_seed(0), candidates=("reinforce-loo", "psa"), draws=64)
    assert set(ref.by_group) == set(problem.group_names)
    # PSA is exact only for its last hidden layer and head: it can never be chosen for layer0
    assert ref.by_group["layer0"].name == "reinforce-loo"
    rec = ref.record()
    assert rec["kind"] == "mc" and {r["estimator"] for r in rec["pilot"]} == {"reinforce-loo", "psa"}
    for g in problem.group_names:  # the choice is the minimum of trace_var x seconds among eligible rows
        rows = [r for r in rec["pilot"] if r["group"] == g]  # (a candidate refused by its size guard has group "")
        assert rec["by_group"][g] == min(rows, key=lambda r: r["score"])["estimator"]


def test_pilot_without_unbiased_candidate_is_one_line_error():
    problem = build_problem("random:widths=3-4-4,points=8,seed=2")
    with pytest.raises(InputError, match="no unbiased reference estimator for groups layer0"):
        pilot(problem, torch.Generator().manual_seed(0), candidates=("st",), draws=8)


def test_jackknife_interval_matches_known_variance():
    """trace_var of a fixed-covariance Gaussian stream: the interval covers the truth (level 1 - ALPHA)."""
    from estimators.base import Estimator

    problem = build_problem("random:widths=2-2,points=2,seed=0")
    P = sum(problem.group_sizes)

    class Gauss(Estimator):
        name = "gauss-test"
        summary = "test double"

        def _estimate(self, problem, draws, generator):
            x = torch.randn(draws, P, generator=generator, dtype=torch.float64)
            return list(torch.split(x, list(problem.group_sizes), dim=1))

    Gauss.__doc__ = "Test double: i.i.d. standard normal draws, so E A = 0 and tr Var = P exactly."
    Gauss = __import__("dataclasses").dataclass(frozen=True)(Gauss)
    est = Gauss()
    ref = Reference({g: est for g in problem.group_names})
    mc = score_mc(est, problem, ref, 4096, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2),
                  grid=[1], level=1 - ALPHA)
    tv = _rows(mc.rows, "trace_var")["all"]
    assert tv["lo"] <= P <= tv["hi"]
    z = NormalDist().inv_cdf(1 - ALPHA / 2)
    assert tv["hi"] - tv["lo"] < 2 * 1.5 * z * math.sqrt(2 * P / 4096) + 1e-9  # near the normal-theory width


def test_sweep_records_which_reference_scored_each_task(tmp_path):
    """``--reference mc`` on an enumerable problem and ``auto`` on one too wide to enumerate both score by
    Monte Carlo and say so in the task's facts; ``auto`` on an enumerable one stays exact."""
    from bench.cli import main
    from bench.store import Store

    db = str(tmp_path / "r.sqlite")
    small, wide = "random:widths=2-3-3,points=4,seed=1", "random:widths=2-70,points=2,seed=1"
    for ref, problem in (("mc", small), ("auto", wide), ("auto", small)):
        rc = main(["run", "--problem", problem, "--estimators", "st", "-N", "64", "--reference", ref, "--db", db,
                   "--no-report", "--name", f"t-{ref}-{len(problem)}"])
        assert rc == 0
    with Store(db) as st:
        runs = st.runs()
        kinds = {}
        for run_id in runs["run_id"]:
            tasks = st.tasks(run_id)
            scores = st.scores(run_id)
            (facts,) = list(tasks["facts"])
            kinds[run_id.split("-")[1] + str(tasks["problem"].iloc[0] == wide)] = facts["reference"]["kind"]
            if facts["reference"]["kind"] == "mc":
                ref = facts["reference"]
                assert ref["draws"] >= 64 and ref["batches"] == 16 and ref["level"] == 0.95 and ref["by_group"]
                rb = scores[scores["metric"] == "rel_bias"]
                assert rb["lo"].notna().all() and (rb["lo"] <= rb["value"]).all() and (rb["value"] <= rb["hi"]).all()
    assert kinds == {"mcFalse": "mc", "autoTrue": "mc", "autoFalse": "exact"}


def test_scaling_presets_have_trend_families():
    """The scaling presets' problems span the trend axes the report draws (reports/trends.py)."""
    import pandas as pd

    from bench.config import SWEEP_PRESETS, SweepConfig
    from reports.trends import problem_axes, trend_families

    expect = {"scaling": {"width", "depth"}, "scaling-large": {"width", "depth", "scale"}}
    for name, axes in expect.items():
        cfg = SweepConfig(**SWEEP_PRESETS[name])
        rows = [dict(problem=p, **problem_axes(p)) for p in cfg.problems if problem_axes(p)]
        assert set(trend_families(pd.DataFrame(rows))) == axes, name
    large = SweepConfig(**SWEEP_PRESETS["scaling-large"])
    assert large.reference == "mc" and large.dtype == "float32"
    widths = sorted({problem_axes(p)["width"] for p in large.problems if problem_axes(p)})
    assert widths[0] == 16 and widths[-1] == 512
    for spec in large.problems:  # every problem builds (sizes checked, nothing drawn)
        build_problem(spec)


def test_jackknife_intervals_have_their_coverage():
    """Coverage of the 95% intervals of ``rel_bias`` (every group) and ``grad_norm`` (all) over R = 200
    independent replicates of 512 draws, against the exact relative bias of ST from path enumeration.

    Design: with the nominal coverage 0.95 a count is Binomial(200, 0.95) (mean 190, sd 3.1), so a
    count under 180 has probability 6e-4 per check, 0.004 over the 6 checks (false-fail rate); an
    interval whose true coverage were 0.85 passes a check with probability 0.02 (power 0.98)."""
    from reference.moments import path_moments

    problem = build_problem("random:widths=3-4-4,points=4,seed=5,scale=1.5")
    ex = exact(problem)
    st = registry.get("st")
    pm = path_moments(st, problem)
    truth = {g: float((pm[g][0] - ex.grads[g]).norm() / ex.grads[g].norm()) for g in problem.group_names}
    mean = torch.cat([pm[g][0] for g in problem.group_names])
    truth["all"] = float((mean - ex.flat).norm() / ex.flat.norm())
    ref = Reference({g: registry.get("reinforce-loo") for g in problem.group_names})
    R, hits, gn_hits = 200, dict.fromkeys(truth, 0), 0
    for r in range(R):
        mc = score_mc(st, problem, ref, 512, torch.Generator().manual_seed(100 + r),
                      torch.Generator().manual_seed(10_000 + r), grid=[1])
        for g, row in _rows(mc.rows, "rel_bias").items():
            hits[g] += row["lo"] <= truth[g] <= row["hi"]
        row = _rows(mc.rows, "grad_norm")["all"]
        gn_hits += row["lo"] <= float(ex.flat.norm()) <= row["hi"]
    assert min(hits.values()) >= 180 and gn_hits >= 180, (hits, gn_hits)


def test_reference_setting_is_checked_and_keeps_old_run_identities():
    from bench.config import SweepConfig

    with pytest.raises(InputError, match="unknown reference 'x'; use auto, exact or mc"):
        SweepConfig(problems=("toy-arm4",), estimators=("arm",), reference="x")
    auto = SweepConfig(problems=("toy-arm4",), estimators=("arm",))
    assert "reference" not in auto.as_dict()  # run ids of sweeps planned before the setting are unchanged
    assert auto.hash != auto.replace(reference="mc").hash and auto.replace(reference="mc").as_dict()["reference"] == "mc"


def test_scores_that_need_no_reference_match_the_exact_scorer_definitions():
    """trace_var, snr and var_x_loss_evals come from A's own draws: on the same draws (same seed) they equal
    the exact scorer's up to rounding (both use the unbiased sample variance)."""
    problem = build_problem("random:widths=3-5-5,points=8,seed=2")
    ex = exact(problem)
    st = registry.get("st")
    ref = Reference({g: registry.get("reinforce-loo") for g in problem.group_names})
    mc = score_mc(st, problem, ref, 512, torch.Generator().manual_seed(3), torch.Generator().manual_seed(4), grid=[1],
                  chunk=32)
    xs = score(st, problem, ex.grads, 512, torch.Generator().manual_seed(3), grid=[1], chunk=32)
    for metric in ("trace_var", "snr", "var_x_loss_evals"):
        a, b = _rows(mc.rows, metric), _rows(xs.rows, metric)
        for g in b:
            assert math.isclose(a[g]["value"], b[g]["value"], rel_tol=1e-9), (metric, g)


def test_sweep_shares_one_reference_stream_per_problem(tmp_path, capsys):
    """The estimators of a problem are scored against one reference stream, computed once, cached beside
    the store and reused by a later sweep with the same reference settings (another estimator set)."""
    from bench.cli import main
    from bench.store import Store

    db = str(tmp_path / "r.sqlite")
    args = ["run", "--problem", "random:widths=2-3-3,points=4,seed=1", "-N", "64", "--reference", "mc",
            "--reference-draws", "256", "--db", db, "--no-report", "--cost-time", "0"]
    from bench import mc_reference

    assert main(args + ["--estimators", "st,psa"]) == 0
    mc_reference._STREAMS.clear()  # as in a new process: the second sweep must read the file
    cache = tmp_path / "sbn_checkpoints" / "mc-references"
    (stream,) = list(cache.iterdir())
    stamp = stream.stat().st_mtime_ns
    assert main(args + ["--estimators", "st,tanh"]) == 0
    assert list(cache.iterdir()) == [stream] and stream.stat().st_mtime_ns == stamp  # reused, not recomputed
    mc_reference._STREAMS.clear()
    norms = {}
    with Store(db) as st:
        for run_id in st.runs()["run_id"]:
            for facts in st.tasks(run_id)["facts"]:
                assert facts["reference"]["draws"] == 256 and facts["reference"]["budget"]["draws"] == 256
            sc = st.scores(run_id)
            for (est, group), v in sc[sc["metric"] == "grad_norm"].set_index(["estimator", "group"])["value"].items():
                norms.setdefault(group, set()).add(v)
    assert norms and all(len(v) == 1 for v in norms.values()), norms  # ||g|| comes from the shared stream alone
    capsys.readouterr()
    assert main(["show", "latest", "--db", db]) == 0  # Monte Carlo runs have no rel_rmse_emp: show uses rel_rmse
    assert ": rel_rmse at M = 1" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--reference-draws", "64", "--reference-seconds", "5"], "either reference_draws or reference_seconds"),
    (["--reference-draws", "10"], "reference draws must be at least 32"),
    (["--reference-seconds", "nan"], "reference seconds must be a finite number > 0"),
    (["--reference-seconds", "1e9"], "reference seconds must be at most 86400"),
    (["--reference-precision", "0.02"], "reference precision ends a time budget early; give reference seconds"),
    (["--reference-precision", "0.02", "--reference-draws", "64"], "give reference seconds too"),
    (["--reference-seconds", "5", "--reference-precision", "1.5"], "from 1e-6 to below 1; got 1.5"),
    (["--reference-seconds", "5", "--reference-precision", "1e-300"], "from 1e-6 to below 1; got 1e-300"),
    (["--reference-seconds", "5", "--reference-precision", "0"], "reference precision must be a finite number > 0"),
    (["--reference-seconds", "5", "--reference-precision", "nan"], "reference precision must be a finite number"),
])
def test_reference_budget_flags_are_checked(tmp_path, capsys, argv, message):
    from bench.cli import main

    db = tmp_path / "r.sqlite"
    rc = main(["run", "--problem", "random:widths=2-3-3,points=4,seed=1", "--estimators", "st", "-N", "64",
               "--reference", "mc", "--db", str(db), "--no-report"] + argv)
    assert rc == 2 and message in capsys.readouterr().err and not db.exists()


def test_budget_flags_on_a_preset_with_an_early_end():
    """``scaling-large`` sets seconds and precision: --reference-seconds keeps the early end, --reference-draws
    (an exact number) drops it, --reference-precision changes it."""
    from bench.cli import build_parser
    from bench.commands.run import build_config

    parser = build_parser()
    base = ["run", "--preset", "scaling-large"]
    assert build_config(parser.parse_args(base)).reference_budget() == {"seconds": 240.0, "precision": 0.02}
    assert build_config(parser.parse_args(base + ["--reference-seconds", "30"])).reference_budget() \
        == {"seconds": 30.0, "precision": 0.02}
    assert build_config(parser.parse_args(base + ["--reference-draws", "64"])).reference_budget() == {"draws": 64}
    assert build_config(parser.parse_args(base + ["--reference-precision", "0.1"])).reference_budget() \
        == {"seconds": 240.0, "precision": 0.1}


def test_reference_budget_in_toml_and_run_identity(tmp_path):
    from bench.config import SweepConfig, load_toml

    cfg = tmp_path / "s.toml"
    cfg.write_text('problems = ["toy-arm4"]\nestimators = ["arm"]\nreference = "mc"\nreference_seconds = 30\n')
    c = SweepConfig(**load_toml(str(cfg)))
    assert c.reference_budget() == {"seconds": 30.0}
    plain = c.replace(reference_seconds=None)
    plain = SweepConfig(**{**plain.as_dict(), "reference_seconds": None})
    assert "reference_seconds" not in plain.as_dict() and "reference_draws" not in plain.as_dict()
    assert plain.hash != c.hash
    cfg.write_text('problems = ["toy-arm4"]\nestimators = ["arm"]\nreference_seconds = 30\nreference_precision = 0.05\n')
    p = SweepConfig(**load_toml(str(cfg)))
    assert p.reference_budget() == {"seconds": 30.0, "precision": 0.05} and p.hash != c.hash
    assert "reference_precision" not in c.as_dict()  # absent unless set: older run identities stay
    task = dict(problem="toy-arm4", dtype="float64", device="cpu", draws=64)
    assert "precision" not in reference_settings(dict(task, mc=c.reference_budget()))
    assert reference_settings(dict(task, mc=p.reference_budget()))["precision"] == 0.05
    cfg.write_text('problems = ["toy-arm4"]\nestimators = ["arm"]\nreference_precision = "high"\n')
    with pytest.raises(InputError, match="reference_precision"):
        load_toml(str(cfg))
    cfg.write_text('problems = ["toy-arm4"]\nestimators = ["arm"]\nreference_draws = "many"\n')
    with pytest.raises(InputError, match="reference_draws"):
        load_toml(str(cfg))


@pytest.mark.parametrize("widths", ["16-128-128-128", "16-32-32-32"])
def test_reference_draws_that_cannot_finish_are_refused_before_writing(tmp_path, capsys, widths):
    """10^9 reference draws: the slowest reference candidate of each group, timed here, puts it over a day of
    compute (round six: on the 32-wide network only the fastest candidate was counted, and it passed);
    refused with both bounds, nothing written."""
    from bench.cli import main

    db = tmp_path / "r.sqlite"
    rc = main(["run", "--problem", f"random:widths={widths},points=16,init=fanin", "--estimators", "st",
               "-N", "64", "--reference", "mc", "--reference-draws", str(999_999_999), "--db", str(db), "--no-report"])
    err = capsys.readouterr().err
    assert rc == 2 and "reference draws per problem could need up to" in err and "at least" in err
    assert "--allow-large" in err and len(err.strip().splitlines()) == 1
    assert not db.exists() and not (tmp_path / "sbn_checkpoints").exists()


def test_reference_draws_bound_counts_the_slowest_candidate_per_group(monkeypatch):
    """The upper bound sums, over groups, the slowest candidate unbiased for the group (capped by the sum over
    all candidates): with fake timings 1 s and 1000 s per draw, 100 draws are judged by the slow one."""
    import bench.sweep as sweep
    from bench.config import SweepConfig
    problem = build_problem("random:widths=4-6-6,points=4")
    calls = []

    def fake(est, prob, n, gen, warmup=1):
        calls.append(est.spec)
        return (1000.0 if est.spec == "local-expectation" else 1.0), None

    monkeypatch.setattr(sweep, "timed_draws", fake)
    cfg = SweepConfig(problems=("p",), estimators=("st",), draws=64, reference="mc", reference_draws=100)
    task = dict(problem="p", reference="mc", budget=0, mc={"draws": 100})
    with pytest.raises(InputError, match=r"could need up to 1\.\d+ days .*at least"):
        sweep._check_reference_size(cfg, [task], {"p": problem}, torch.float64)
    assert "local-expectation" in calls


def _stream_task(reference_draws: int):
    """A small problem and a sweep task on it (64 draws) whose reference stream has ``reference_draws`` draws."""
    spec = "random:widths=3-4-4,points=8,seed=2"
    problem = build_problem(spec)
    return problem, dict(problem=spec, problem_digest=problem.digest(), root_seed=0, dtype="float64", device="cpu",
                         draws=64, mc={"draws": reference_draws})


def test_prepared_reference_is_cached_and_a_damaged_cache_file_is_recomputed(tmp_path):
    from bench import mc_reference as mcr

    problem, task = _stream_task(128)
    mcr._STREAMS.clear()
    first = mcr.prepare_reference(task, problem, str(tmp_path))
    path = tmp_path / "mc-references" / f"{mcr.reference_key(task)}.npz"
    assert path.exists() and first.record["budget"] == {"draws": 128, "seconds": None, "precision": None} and first.draws == 128
    mcr._STREAMS.clear()
    again = mcr.prepare_reference(task, problem, str(tmp_path))  # read back: the same sums
    assert np.array_equal(again.S, first.S) and again.record == first.record
    path.write_bytes(b"damaged")
    mcr._STREAMS.clear()
    redone = mcr.prepare_reference(task, problem, str(tmp_path))  # recomputed (the pilot's choice rests on timings)
    back = ReferenceSums.load(str(path), first.S.shape[1], first.Q.shape[1])
    assert back is not None and np.array_equal(back.S, redone.S) and redone.draws == 128
    other = dict(task, mc={"draws": 256})
    assert mcr.reference_key(other) != mcr.reference_key(task)  # another budget is another stream
    mcr._STREAMS.clear()


@pytest.mark.parametrize("kind", ["folder", "fifo", "link"])
def test_a_reference_cache_entry_that_is_not_a_file_is_one_line(tmp_path, kind):
    """Never read through a link, block on a pipe, or fail deep inside numpy on a folder."""
    from bench import mc_reference as mcr

    problem, task = _stream_task(64)
    path = tmp_path / "mc-references" / f"{mcr.reference_key(task)}.npz"
    path.parent.mkdir()
    {"folder": path.mkdir, "fifo": lambda: os.mkfifo(path),
     "link": lambda: path.symlink_to(tmp_path / "elsewhere.npz")}[kind]()
    mcr._STREAMS.clear()
    with pytest.raises(InputError, match="is a link, folder, pipe or device"):
        mcr.prepare_reference(task, problem, str(tmp_path))


def test_an_edited_cache_file_is_recomputed_and_a_stream_saved_first_wins(tmp_path):
    """B4: sums multiplied by 10 in the file no longer match their stored digest: recomputed, not used.
    I1: when another process saved the same stream first, its file is kept and used."""
    from bench import mc_reference as mcr

    problem, task = _stream_task(64)
    mcr._STREAMS.clear()
    first = mcr.prepare_reference(task, problem, str(tmp_path))
    path = tmp_path / "mc-references" / f"{mcr.reference_key(task)}.npz"
    with np.load(path) as z:
        parts = {k: z[k] for k in z.files}
    np.savez(path, **{**parts, "S": parts["S"] * 10})
    assert ReferenceSums.load(str(path), first.S.shape[1], first.Q.shape[1]) is None
    mcr._STREAMS.clear()
    assert not np.allclose(mcr.prepare_reference(task, problem, str(tmp_path)).S, first.S * 10)
    other = ReferenceSums(first.S * 2, first.Q, first.n, dict(first.record))
    assert other.save(str(path)) is False  # the file there wins
    assert other.save(str(tmp_path / "new.npz")) is True
    mcr._STREAMS.clear()


def test_a_tiny_time_budget_still_gives_a_reference(tmp_path, capsys):
    """A20/H2: a budget the pilot overruns left the draws 16 (or divided by zero); the draws now get at
    least half the budget, and the sweep scores."""
    from bench.cli import main
    from bench import mc_reference
    from bench.store import Store

    db = str(tmp_path / "r.sqlite")
    mc_reference._STREAMS.clear()
    assert main(["run", "--problem", "psa-2-5-5-5", "--estimators", "st", "-N", "64", "--reference", "mc",
                 "--reference-seconds", "0.000001", "--cost-time", "0", "--no-report", "--db", db]) == 0
    with Store(db) as st:
        (facts,) = list(st.tasks(st.resolve("latest"))["facts"])
    assert facts["reference"]["draws"] >= 16
    mc_reference._STREAMS.clear()


def test_a_cache_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    """F1: sbn_checkpoints is a regular file: one line naming the folder (was a failed task per estimator)."""
    from bench.cli import main

    (tmp_path / "sbn_checkpoints").write_text("not a folder")
    rc = main(["run", "--problem", "random:widths=2-3-3,points=4,seed=1", "--estimators", "st", "-N", "64",
               "--reference", "mc", "--cost-time", "0", "--no-report", "--db", str(tmp_path / "r.sqlite")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot create the Monte Carlo reference cache" in err[0], err
    assert not (tmp_path / "r.sqlite").exists()  # refused before the store is created


def test_a_reference_budget_without_monte_carlo_problems_is_noted(tmp_path, capsys):
    """A13: --reference-draws on problems scored exactly was silently ignored; now a note says so."""
    from bench.cli import main

    assert main(["run", "--problem", "psa-2-5-5-5", "--estimators", "st", "-N", "64", "--reference-draws", "100",
                 "--cost-time", "0", "--no-report", "--db", str(tmp_path / "r.sqlite")]) == 0
    assert "has no effect: every problem of this sweep is scored against the exact reference" in capsys.readouterr().err
