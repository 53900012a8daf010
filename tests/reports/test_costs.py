"""The "Cost per draw" table (reports/costs.py): stored cost records shown as they are, clock in the caption."""

from __future__ import annotations

import math

import pandas as pd

from reports import build_report
from reports.costs import cost_caption, cost_table
from reports.sections import problem_section

CLEAN = dict(measured=True, s_per_draw=2e-4, iqr_s_per_draw=1e-5, runs=12, batch=500, clock="cpu", threads=1,
             device="cpu", load_before=0.4, load_after=0.7, cores=2, cpu_wall=0.98, noisy=False, noisy_reasons=[],
             accuracy_run_s_per_draw=9e-4)
NOISY = dict(CLEAN, s_per_draw=1e-4, iqr_s_per_draw=5e-5, load_after=9.5, noisy=True,
             noisy_reasons=["IQR/median 0.50 > 0.1", "load 9.5 > 2 cores"])


def _with_costs(synthetic_run):
    run = synthetic_run()
    facts = []
    for est, status in zip(run.tasks["estimator"], run.tasks["status"]):
        facts.append({} if status != "done" else {"cost": NOISY} if est == "st" else
                     {} if est == "tanh" else {"cost": CLEAN})  # tanh: stored before costs were measured
    run.tasks["facts"] = facts
    return run


def test_rows_show_the_stored_record(synthetic_run):
    run = _with_costs(synthetic_run)
    tab = cost_table(run, "toy-a").set_index("estimator")
    psa = tab.loc["psa"]
    assert psa["s/draw (median)"] == 2e-4 and psa["IQR (s)"] == 1e-5 and psa["IQR/median"] == 0.05
    assert psa["repeats"] == 12 and psa["batch"] == 500 and psa["clock"] == "cpu" and psa["threads"] == 1
    assert psa["load (1 min)"] == 0.7 and psa["cores"] == 2 and psa["accuracy run s/draw"] == 9e-4
    assert psa["noisy"] == "no"
    assert tab.loc["st", "noisy"] == "yes: IQR/median 0.50 > 0.1; load 9.5 > 2 cores"
    tanh = tab.loc["tanh"]  # no record: the stored seconds per draw, said to be unmeasured
    assert tanh["noisy"] == "not measured" and tanh["s/draw (median)"] == 3e-5 and math.isnan(tanh["IQR (s)"])
    assert pd.isna(tanh["repeats"]) and tanh["clock"] == ""


def test_failed_task_is_shown_failed(synthetic_run):
    tab = cost_table(_with_costs(synthetic_run), "toy-b").set_index("estimator")
    assert tab.loc["reinforce", "noisy"] == "failed" and math.isnan(tab.loc["reinforce", "s/draw (median)"])


def test_runs_without_a_facts_column_still_render(synthetic_run):
    tab = cost_table(synthetic_run(), "toy-a")
    assert len(tab) == 4 and set(tab["noisy"]) == {"not measured"}
    assert list(tab["s/draw (median)"]) == [2e-4, 1e-4, 5e-5, 3e-5]


def test_caption_states_the_clock_and_that_the_figure_is_warm(synthetic_run):
    run = _with_costs(synthetic_run)
    cap = cost_caption("toy-a", cost_table(run, "toy-a"))
    assert "warm" in cap and "process CPU time, one thread" in cap and "median and IQR" in cap
    run.tasks["facts"] = [{"cost": dict(CLEAN, clock="wall")} for _ in range(len(run.tasks))]
    assert "wall clock (synchronised)" in cost_caption("toy-a", cost_table(run, "toy-a"))
    run.tasks["facts"] = [{"cost": dict(CLEAN, clock=c)} for c in ["wall", "cpu"] * (len(run.tasks) // 2)]
    assert "clock of each row" in cost_caption("toy-a", cost_table(run, "toy-a"))
    assert "no task measured it" in cost_caption("toy-a", cost_table(synthetic_run(), "toy-a"))


def test_the_problem_section_holds_the_table_and_the_report_shows_it(synthetic_run, tmp_path):
    run = _with_costs(synthetic_run)
    tables = [b for s in problem_section(run, {"rid": "r", "styles": {}}) for b in s.blocks
              if getattr(b, "name", "").endswith("_cost")]
    assert [t.name for t in tables] == ["r_toy-a_cost", "r_toy-b_cost"]
    html = build_report([run], tmp_path, formats=("html",))["html"].read_text(encoding="utf-8")
    assert "toy-a: cost per draw, warm" in html and "load 9.5 &gt; 2 cores" in html
