"""The paper's checkable claims on synthetic psa2020 runs: every verdict reachable for every claim.

The runs are tidy score rows built from a bias / sd model per (checkpoint, method, group), with
|g| = 1 and fixed intervals, so each verdict below follows from the numbers by hand (no draws, no
randomness). The tasks carry the estimator names and options of the paper's mapping
(``reports.paper_values.METHODS``), so "PSA" is whatever that mapping calls PSA.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from reports.claims import MANY_DRAWS, VERDICTS, Cell, below, claims_table, verdict
from reports.paper_values import METHOD_SPECS, METHODS
from reports.results import RunResults, validate
from reports.sections import claims_section, psa2020_section, run_sections

CHKS = ("chk-100", "chk-2000")
GROUPS = ("layer0", "layer1", "layer2", "head")
MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 9000)
W_BIAS, W_REL = 0.01, 0.02  # half width of the bias intervals; relative half width of the RMSE and trace intervals

# (bias per group, sd of one draw per group) relative to |g| = 1, shaped like the paper's figures:
# every claim holds on this model
PAPER_LIKE = {
    "chk-100": {
        "PSA": ((0.05, 0.03, 0.0, 0.0), (0.16, 0.38, 0.43, 0.38)),
        "ST": ((0.08, 0.33, 0.36, 0.0), (0.2, 0.45, 0.45, 0.45)),
        "ARM": ((0.0, 0.0, 0.0, 0.0), (2.3, 2.5, 1.8, 0.45)),
        "REINFORCE": ((0.0, 0.0, 0.0, 0.0), (13.8, 11.2, 6.8, 0.45)),
        "Concrete-t=0.1": ((0.05, 0.05, 0.05, 0.03), (7.7, 5.4, 2.06, 0.42)),
        "Concrete-t=1": ((0.3, 0.33, 0.25, 0.12), (0.25, 0.4, 0.48, 0.3)),
        "tanh": ((0.25, 0.41, 0.48, 0.33), (0.0, 0.0, 0.0, 0.0)),
    },
    "chk-2000": {
        "PSA": ((0.2, 0.13, 0.0, 0.0), (1.8, 3.6, 2.3, 0.4)),
        "ST": ((0.56, 0.77, 0.85, 0.0), (2.5, 4.3, 2.5, 0.42)),
        "ARM": ((0.0, 0.0, 0.0, 0.0), (5.9, 13.0, 7.8, 0.42)),
        "REINFORCE": ((0.0, 0.0, 0.0, 0.0), (9.2, 19.5, 10.0, 0.42)),
        "Concrete-t=0.1": ((0.05, 0.05, 0.05, 0.02), (113.0, 58.0, 9.0, 0.41)),
        "Concrete-t=1": ((1.36, 2.5, 0.9, 0.16), (3.5, 5.2, 2.9, 0.3)),
        "tanh": ((8.2, 10.6, 3.9, 0.2), (0.0, 0.0, 0.0, 0.0)),
    },
}


def _model(changes=None):
    """PAPER_LIKE with ``changes[(chk, method)] = {group index: (bias, sd)}`` applied."""
    out = {c: {m: [list(b), list(s)] for m, (b, s) in v.items()} for c, v in PAPER_LIKE.items()}
    for (chk, method), cells in (changes or {}).items():
        for gi, (b, s) in cells.items():
            out[chk][method][0][gi], out[chk][method][1][gi] = b, s
    return out


def make_run(model=None, checkpoints=CHKS, methods=tuple(METHODS), failed=(), w_bias=W_BIAS, w_rel=W_REL,
             no_ci=(), draws=20000) -> RunResults:
    """A validated psa2020 run from ``model``; ``failed`` lists (chk, method) tasks that failed; ``no_ci`` lists
    metrics stored without intervals."""
    model = model or _model()
    tasks, rows = [], []
    for chk in checkpoints:
        problem = f"psa-2-5-5-5@{chk}"
        for i, method in enumerate(methods):
            name, opts = METHODS[method]
            key = f"{problem}|{method}"
            status = "failed" if (chk, method) in failed else "done"
            tasks.append(dict(task_key=key, problem=problem, estimator=METHOD_SPECS[method], estimator_name=name,
                              estimator_options=json.dumps(opts), status=status,
                              error="worker died" if status == "failed" else "", draws=draws, seed=i))
            if status == "failed":
                continue
            bias, sd = model[chk][method]
            for g, b, s in zip(GROUPS, bias, sd):
                def add(metric, v, lo=math.nan, hi=math.nan, M=0):
                    if metric in no_ci:
                        lo = hi = math.nan
                    rows.append((key, problem, METHOD_SPECS[method], g, metric, M, v, lo, hi))
                add("grad_norm", 1.0)
                add("rel_bias", b, max(b - w_bias, 0.0), b + w_bias)
                add("noise_floor", s / math.sqrt(draws))
                add("trace_var", s**2, s**2 * (1 - w_rel), s**2 * (1 + w_rel))
                for M in MS:
                    r = math.sqrt(b**2 + s**2 / M)
                    for metric in ("rel_rmse", "rel_rmse_emp"):
                        add(metric, r, r * (1 - w_rel), r * (1 + w_rel), M)
    cols = ["task_key", "problem", "estimator", "group", "metric", "M", "value", "lo", "hi"]
    manifest = {"run_id": "r-claims", "preset": "psa2020"}
    return validate(RunResults(manifest, pd.DataFrame(tasks), pd.DataFrame(rows, columns=cols)))


def _verdicts(run) -> dict:
    """{(claim number, where's first word): verdict}."""
    t = claims_table(run)
    return {(int(c.split(".")[0]), w.split(";")[0]): v for c, w, v in zip(t["claim"], t["where"], t["verdict"])}


def _row(run, n: int, where: str) -> pd.Series:
    t = claims_table(run)
    sel = t[(t["claim"].str.startswith(f"{n}.")) & (t["where"].str.startswith(where))]
    assert len(sel) == 1
    return sel.iloc[0]


def test_below_and_verdict_rules():
    a, b = Cell(1.0, 0.9, 1.1), Cell(2.0, 1.8, 2.2)
    assert below(a, b) is True and below(b, a) is False and below(a, Cell(1.05, 1.0, 1.1)) is None
    assert below(a, Cell(2.0)) is None  # no interval: not resolved
    assert verdict([True, True]) == "holds" and verdict([True, None]) == "not resolved"
    assert verdict([True, False, None], missing=["ARM not run"]) == "fails"  # one counter-example refutes
    assert verdict([True], missing=["ARM not run"]) == "not run" and verdict([]) == "not run"


def test_paper_like_run_every_claim_holds():
    t = claims_table(make_run())
    assert list(t["claim"].str.split(".").str[0].astype(int)) == [1, 1, 2, 2, 3, 3, 7, 7, 8, 8, 9]
    assert set(t["verdict"]) <= set(VERDICTS)
    assert (t["verdict"] == "holds").all(), t[["claim", "where", "verdict", "this run (95% CI)"]].to_string()
    # the numbers behind a verdict come with their intervals, and the paper's values beside them
    one = t.iloc[0]
    assert "PSA 0.168 [0.164, 0.171]" in one["this run (95% CI)"] and "PSA 0.158" in one["paper"]
    assert one["where"] == "chk-100; layer0, layer1, layer2; M = 1"
    assert _row(make_run(), 3, "chk-100")["where"] == "chk-100; layer2, head"
    # where ARM overtakes: chk-100 layer0 between M = 2000 and 5000 in the model (sqrt(5.29/M) vs sqrt(.0025+.0256/M))
    arm = _row(make_run(), 7, "chk-100")["this run (95% CI)"]
    assert arm.startswith("layer0: ARM below PSA from M = 5000") and "layer2: not within M ≤ 9000" in arm
    assert "layer0: between M = 1000 and 9000" in _row(make_run(), 7, "chk-100")["paper"]


@pytest.mark.parametrize("claim, chk, change", [
    (1, "chk-100", {("chk-100", "ST"): {1: (0.0, 0.2)}}),  # ST's one-draw error below PSA's in layer1
    (1, "chk-2000", {("chk-2000", "Concrete-t=1"): {0: (0.1, 0.5)}}),
    (2, "chk-2000", {("chk-2000", "PSA"): {0: (0.7, 1.8)}}),  # PSA's plateau above ST's in layer0
    (3, "chk-100", {("chk-100", "PSA"): {3: (0.05, 0.38)}}),  # PSA biased for the head
    (3, "chk-2000", {("chk-2000", "PSA"): {2: (0.03, 2.3)}}),  # ... or for the last hidden layer
    (7, "chk-100", {("chk-100", "PSA"): {2: (0.05, 0.43)}}),  # ARM overtakes in the last hidden layer
    (7, "chk-2000", {("chk-2000", "PSA"): {0: (1.0, 1.8)}}),  # ARM overtakes layer0 at M < MANY_DRAWS
    (8, "chk-100", {("chk-100", "Concrete-t=0.1"): {1: (0.5, 5.4)}}),  # low tau with the larger bias
    (8, "chk-2000", {("chk-2000", "Concrete-t=0.1"): {2: (0.05, 2.0)}}),  # low tau with the smaller sd
    (9, "chk-100 → chk-2000", {("chk-2000", "ST"): {1: (0.2, 4.3)}}),  # ST's layer1 bias shrinks with training
])
def test_each_claim_can_fail(claim, chk, change):
    assert _verdicts(make_run(_model(change)))[(claim, chk)] == "fails"


def test_arm_crossing_threshold_is_many_draws():
    # PSA bias 1.0, sd 1.8; ARM sd 5.9: MSEs cross where 34.8 / M = 1 + 3.24 / M, at M = 31.6 < MANY_DRAWS
    row = _row(make_run(_model({("chk-2000", "PSA"): {0: (1.0, 1.8)}})), 7, "chk-2000")
    assert row["this run (95% CI)"].startswith("layer0: ARM below PSA from M = 50") and 50 < MANY_DRAWS


@pytest.mark.parametrize("claim, chk, kwargs", [
    (2, "chk-100", dict(model=_model({("chk-100", "PSA"): {0: (0.075, 0.16)}}))),  # 0.075±0.01 vs 0.08±0.01
    (1, "chk-100", dict(no_ci=("rel_rmse", "rel_rmse_emp"))),  # no intervals: nothing resolved
    # PSA's layer1 bias 0.03 -> 0.04 (intervals overlap)
    (9, "chk-100 → chk-2000", dict(model=_model({("chk-2000", "PSA"): {1: (0.04, 3.6)}}))),
    (8, "chk-100", dict(model=_model({("chk-100", "Concrete-t=0.1"): {2: (0.05, 0.485)}}))),  # sds within 2%
    (7, "chk-100", dict(w_rel=0.7)),  # wide RMSE intervals: PSA 0.43 / √M vs ARM 1.8 / √M not resolved
])
def test_not_resolved(claim, chk, kwargs):
    assert _verdicts(make_run(**kwargs))[(claim, chk)] == "not resolved"


def test_unbiased_falls_back_to_the_noise_floor_without_an_interval():
    # without a CI, a bias at most its noise floor (sd / sqrt(N) = 0.0027 for layer2) counts as consistent with 0
    ok = make_run(_model({("chk-100", "PSA"): {2: (0.002, 0.38)}}), no_ci=("rel_bias",))
    bad = make_run(_model({("chk-100", "PSA"): {2: (0.01, 0.38)}}), no_ci=("rel_bias",))
    assert _verdicts(ok)[(3, "chk-100")] == "holds" and _verdicts(bad)[(3, "chk-100")] == "fails"


def test_not_run_says_what_is_missing():
    only = _verdicts(make_run(checkpoints=("chk-100",)))
    late = {k: v for k, v in only.items() if k[1] == "chk-2000"}
    assert late == {(n, "chk-2000"): "not run" for n in (1, 2, 3, 7, 8)}
    assert only[(9, "chk-100 → chk-2000")] == "not run"
    assert "psa-2-5-5-5@chk-2000 not run" in _row(make_run(checkpoints=("chk-100",)), 9, "chk-100")["this run (95% CI)"]
    assert all(only[(n, "chk-100")] == "holds" for n in (1, 2, 3, 7, 8))

    no_high = make_run(methods=tuple(m for m in METHODS if m != "Concrete-t=1"))
    row = _row(no_high, 8, "chk-100")
    assert row["verdict"] == "not run" and "two temperatures" in row["this run (95% CI)"]
    assert "Concrete-t=1 not run" in row["this run (95% CI)"]
    assert _verdicts(no_high)[(1, "chk-100")] == "not run"  # a rival of the one-draw claim is missing

    arm_failed = make_run(failed=(("chk-2000", "ARM"),))
    row = _row(arm_failed, 7, "chk-2000")
    assert row["verdict"] == "not run" and "ARM failed (worker died)" in row["this run (95% CI)"]
    assert _verdicts(arm_failed)[(7, "chk-100")] == "holds"


def test_a_counter_example_refutes_even_with_a_rival_missing():
    run = make_run(_model({("chk-100", "ST"): {1: (0.0, 0.2)}}), failed=(("chk-100", "ARM"),))
    assert _verdicts(run)[(1, "chk-100")] == "fails"


def test_psa_is_whatever_the_mapping_calls_psa():
    run = make_run()
    psa = run.tasks["estimator_name"] == METHODS["PSA"][0]
    run.tasks.loc[psa, "estimator"] = "psa-any-spelling"  # the spec string is not what identifies PSA
    assert (claims_table(run)["verdict"] == "holds").all()
    required = METHODS["PSA"][1]
    if required:  # a PSA variant the mapping does not call PSA
        run.tasks.loc[psa, "estimator_options"] = json.dumps({k: "something-else" for k in required})
    else:
        run.tasks.loc[psa, "estimator_name"] = "not-the-papers-psa"
    t = claims_table(run)
    assert (t["verdict"] == "not run").sum() == 9 and t["this run (95% CI)"].str.contains("PSA not run").any()


def test_claims_lead_the_report_of_a_psa2020_run():
    run = make_run()
    (claims_sec,) = claims_section(run, {"rid": "r"})
    assert claims_sec.blocks[0].name == "r_psa2020_claims" and "11 holds" in claims_sec.blocks[0].caption
    results = [s for s in run_sections([validate(run)]) if s.level == 3]
    assert results[0].anchor.endswith("_psa2020_claims")  # the first result section of the run
    (sec,) = psa2020_section(run, {"rid": "r"})  # the ratio tables stay in the comparison, after it
    tables = [b.name for b in sec.blocks if getattr(b, "name", None)]
    assert "r_psa2020_claims" not in tables and "r_psa2020_chk-100_rel_rmse" in tables
    # no section without the paper's checkpoints, nor for a run that is not psa2020
    assert claims_section(_no_checkpoints(run), {"rid": "r"}) == []
    assert claims_section(RunResults({"run_id": "x"}, run.tasks.assign(problem="toy"), run.scores), {"rid": "r"}) == []


def _no_checkpoints(run):
    tasks = run.tasks.assign(problem="psa-2-5-5-5@chk-1")
    return RunResults(dict(run.manifest), tasks, run.scores.assign(problem="psa-2-5-5-5@chk-1"))
