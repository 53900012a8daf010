"""Trend figures across problems (reports/trends.py): axes parsed from specs, families, MC marking."""

from __future__ import annotations

import math

from reports.document import Plot, Table, Text
from reports.plots import styles
from reports.trends import budget_text, problem_axes, reference_table, trend_families, trend_frame, trends_section

WIDTHS = [f"random:widths=4-{w}-{w}-{w},points=8" for w in (4, 8, 16)]
GROUPS = ("layer0", "layer1", "layer2", "head")


def _run(make_run, mc: bool):
    run = make_run(problems=WIDTHS + ["toy-a"], estimators=("psa", "st"), groups=GROUPS, failed=())
    ref = ({"kind": "mc", "by_group": {"layer0": "disarm", "head": "st"}, "draws": 2048, "level": 0.95} if mc
           else {"kind": "exact", "method": "transfer"})
    run.tasks["facts"] = [{"reference": ref} for _ in range(len(run.tasks))]
    return run


def test_problem_axes():
    assert problem_axes("random:widths=16-64-32,scale=2.5,init=fanin") == dict(width=64, depth=2, scale=2.5)
    assert problem_axes("random:points=3") == dict(width=5, depth=3, scale=1.0)  # the builder's defaults
    assert problem_axes("psa-2-5-5-5") is None and problem_axes("conv:input=1x4x4") is None
    assert problem_axes("random:widths=4-x") is None


def test_frame_roles_and_families(synthetic_run):
    run = _run(synthetic_run, mc=False)
    frame = trend_frame(run)
    assert set(frame["problem"]) == set(WIDTHS)  # toy-a has no axes
    assert set(frame["role"]) == {"first hidden", "last hidden", "head", "all"}
    s = run.scores
    for r in frame[(frame["metric"] == "rel_bias") & (frame["role"] == "last hidden")].itertuples():
        stored = s[(s["problem"] == r.problem) & (s["group"] == "layer2") & (s["metric"] == "rel_bias")
                   & (s["estimator"] == r.label)]["value"]
        assert math.isclose(float(stored.iloc[0]), r.value)
    one = frame[(frame["metric"] == "rel_rmse") & (frame["role"] == "head") & (frame["label"] == "psa")]
    assert len(one) == 3  # rel_rmse of one draw (M = 1) only
    fams = trend_families(frame)
    assert list(fams) == ["width"] and sorted(fams["width"]["width"].unique()) == [4, 8, 16]


def test_section_marks_monte_carlo_scores(synthetic_run):
    run = _run(synthetic_run, mc=True)
    (sec,) = trends_section(run, {"rid": "r", "styles": styles(run)})
    texts = [b.text for b in sec.blocks if isinstance(b, Text)]
    assert any("Monte Carlo reference" in t for t in texts)
    plots = [b for b in sec.blocks if isinstance(b, Plot)]
    assert [p.name for p in plots] == ["r_trend_width_rel_bias", "r_trend_width_rel_rmse"]
    assert all("hollow: Monte Carlo" in p.caption for p in plots)
    fig = plots[0].figure
    assert fig is not None and len([a for a in fig.axes if a.get_visible()]) == 4
    refs = [b.frame for b in sec.blocks if isinstance(b, Table) and b.name == "r_references"][0]
    assert set(refs["reference"]) == {"Monte Carlo"} and "layer0: disarm" in refs["estimators"].iloc[0]


def test_reference_budget_text():
    assert budget_text({"budget": {"draws": 4096, "seconds": None}}) == "4,096 draws"
    assert budget_text({"budget": {"draws": None, "seconds": 240.0, "precision": 0.02}, "stopped_by": "precision"}) \
        == "240 s; ended at precision 2%"
    assert budget_text({"budget": {"draws": None, "seconds": 240.0, "precision": 0.02}, "stopped_by": "seconds"}) \
        == "240 s; precision 2% not reached"
    assert budget_text({"budget": {"seconds": 30}}) == "30 s" and budget_text({}) == ""


def test_exact_run_has_trends_but_no_monte_carlo_note(synthetic_run):
    run = _run(synthetic_run, mc=False)
    (sec,) = trends_section(run, {"rid": "r", "styles": styles(run)})
    assert not [b for b in sec.blocks if isinstance(b, Text)]
    assert all("hollow" not in b.caption for b in sec.blocks if isinstance(b, Plot))
    assert set(reference_table(run)["reference"]) == {"exact (transfer)"}


def test_runs_without_a_family_or_facts_get_no_section(synthetic_run):
    run = synthetic_run(failed=())  # toy problems, no facts column (a store before schema 2)
    assert "facts" not in run.tasks
    assert trends_section(run, {"rid": "r", "styles": styles(run)}) == []


def test_each_problem_section_says_when_its_scores_are_monte_carlo(synthetic_run):
    from reports.sections import problem_section
    for mc in (True, False):
        run = _run(synthetic_run, mc=mc)
        for sec in problem_section(run, {"rid": "r", "styles": styles(run)}):
            warned = [b for b in sec.blocks if isinstance(b, Text) and "Monte Carlo reference" in b.text]
            assert bool(warned) == mc and (not mc or sec.blocks[0] is warned[0])


def test_a_panel_with_one_outlier_gets_a_symmetric_log_axis(synthetic_run):
    """One relative bias 1000 times the others' (a badly estimated ||g|| at the widest network) would flatten
    every other line on a linear axis: that panel switches to symlog (0 stays on it), the others stay linear."""
    from reports.trends import trend_figure

    run = _run(synthetic_run, mc=True)
    frame = trend_frame(run)
    fam = trend_families(frame)["width"].copy()
    hit = (fam["metric"] == "rel_bias") & (fam["role"] == "first hidden") & (fam["width"] == 16)
    fam.loc[hit, "value"] = 1000 * fam.loc[(fam["metric"] == "rel_bias") & (fam["role"] == "first hidden"),
                                           "value"].median()
    fig = trend_figure(fam, "width", "rel_bias", styles(run))
    scales = {ax.get_title(): ax.get_yscale() for ax in fig.axes if ax.get_visible() and ax.get_title()}
    assert scales["first hidden"] == "symlog" and scales["last hidden"] == "linear"
