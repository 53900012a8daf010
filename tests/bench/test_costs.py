"""Cost per draw measured like a benchmark (bench/costs.py): warm-up excluded, clocks, the noisy rule, the sweep.

Timing assertions use only deterministic bounds: a ``time.sleep(s)`` lasts at least ``s`` of wall
time and uses almost no CPU time, so "the figure holds the sleep" / "it does not" hold however
busy the machine is.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.config import SweepConfig
from bench.costs import (MAX_REL_IQR, MIN_CPU_WALL, MIN_RUNS, CostSettings, measure_cost, noisy_reasons,
                         task_cost, with_cost)
from bench.store import Store
from estimators.base import Estimator
from estimators.errors import InputError
from reference.problems import random_problem

PROBLEM = random_problem(widths="2-2-2", points=3, seed=0)


@dataclass(frozen=True, eq=False)
class Sleepy(Estimator):
    """Test double: zeros; the first call sleeps ``first_s`` (a compilation), every call ``each_s``."""

    name: ClassVar[str] = "sleepy"
    summary: ClassVar[str] = "test double"
    first_s: float = 0.0
    each_s: float = 0.0
    calls: list = field(default_factory=lambda: [0])

    def _estimate(self, problem, draws, generator):
        self.calls[0] += 1
        if self.calls[0] == 1:
            time.sleep(self.first_s)
        if self.each_s:
            time.sleep(self.each_s)
        return [torch.zeros(draws, s, dtype=torch.float64) for s in problem.group_sizes]


def _gen():
    return torch.Generator().manual_seed(0)


def test_a_slow_first_call_is_not_in_the_cost():
    """A first call that sleeps 0.6 s (as torch.compile would) is kept as first_call_s, never in the figure."""
    est = Sleepy(first_s=0.6)
    task = dict(cost=dict(time_s=0.1), seed=3, draws=50, chunk=None)
    rec = task_cost(est, PROBLEM, task, 0.6 / 50)  # the accuracy run's one call of 50 draws held that sleep
    assert rec["measured"] and rec["first_call_s"] >= 0.6
    assert rec["s_per_draw"] * rec["batch"] < 0.06  # a tenth of the sleep: no timed call slept
    assert rec["s_per_draw"] < rec["accuracy_run_s_per_draw"] / 10
    assert rec["runs"] >= MIN_RUNS and est.calls[0] > rec["runs"]


def test_the_wall_clock_counts_a_sleeping_call_and_the_cpu_clock_does_not():
    """A call that sleeps 1 ms: at least 1 ms on the wall clock, under half of it in CPU time (about 0.03 ms).

    The budget is CPU time on the CPU clock, so a sleeping call is timed in large blocks: keep it small."""
    each = 0.001
    wall = measure_cost(Sleepy(each_s=each), PROBLEM, CostSettings(time_s=0.01), batch=10, generator=_gen())
    assert wall["clock"] == "wall" and wall["s_per_draw"] * wall["batch"] >= each
    cpu = measure_cost(Sleepy(each_s=each), PROBLEM, CostSettings(time_s=0.01, clock="cpu", threads=1), batch=10,
                       generator=_gen())
    assert cpu["clock"] == "cpu" and cpu["threads"] == 1 and cpu["s_per_draw"] * cpu["batch"] < each / 2


def test_record_fields_and_threads_restored():
    before = torch.get_num_threads()
    rec = measure_cost(Sleepy(), PROBLEM, CostSettings(time_s=0.05, threads=1), batch=20, generator=_gen())
    assert torch.get_num_threads() == before
    assert rec["threads"] == 1 and rec["measured"] and rec["device"] == "cpu"
    assert rec["iqr_s_per_draw"] >= 0 and rec["s_per_draw"] > 0 and rec["cores"] >= 1
    assert 1 <= rec["batch"] <= 20 and rec["runs"] >= MIN_RUNS and rec["cpu_wall"] > 0
    assert rec["noisy"] == bool(rec["noisy_reasons"])
    assert rec["spent_s"] < 30  # bounded: the 0.05 s budget plus a handful of untimed calls


def test_the_noisy_rule_clause_by_clause():
    clean = dict(median=1e-3, iqr=1e-5, runs=20, load=0.5, cores=2, cpu_wall=0.99, threads=1, clock="wall",
                 device="cpu")
    assert noisy_reasons(**clean) == []
    cases = {
        "repeat": dict(runs=MIN_RUNS - 1),
        "IQR/median": dict(iqr=1e-3 * MAX_REL_IQR * 1.01),
        "load": dict(load=2.5),
        "CPU/wall": dict(cpu_wall=MIN_CPU_WALL - 0.01),
    }
    for word, change in cases.items():
        reasons = noisy_reasons(**dict(clean, **change))
        assert len(reasons) == 1 and word in reasons[0], (word, reasons)
    assert noisy_reasons(**dict(clean, iqr=1e-3 * MAX_REL_IQR)) == []  # the bound itself is clean
    # the CPU/wall clause is for one CPU thread on the wall clock only
    for change in (dict(clock="cpu"), dict(threads=2), dict(device="cuda")):
        assert noisy_reasons(**dict(clean, cpu_wall=0.1, **change)) == []
    assert noisy_reasons(**dict(clean, load=None)) == []  # no load average on this platform: not a reason
    assert noisy_reasons(**dict(clean, iqr=math.nan)) != []  # an IQR that could not be measured


@pytest.mark.parametrize("kwargs, words", [
    (dict(time_s=-1), "cost time"), (dict(time_s=math.inf), "cost time"), (dict(clock="tsc"), "unknown clock"),
    (dict(threads=0), "threads"), (dict(clock="cpu"), "--threads 1"), (dict(clock="cpu", threads=2), "--threads 1"),
    (dict(warmup=-1), "warm-up"),
])
def test_bad_settings_are_one_input_error(kwargs, words):
    with pytest.raises(InputError, match=words):
        CostSettings(**kwargs)


def test_cpu_clock_refused_for_cuda_sweeps():
    with pytest.raises(InputError, match="CPU work"):
        SweepConfig(problems=("toy-liu3",), estimators=("st",), device="cuda", cost_clock="cpu", cost_threads=1)


@pytest.mark.parametrize("flags, words", [(["--clock", "cpu"], "--threads 1"), (["--cost-time", "-1"], "cost time"),
                                          (["--threads", "0"], "threads")])
def test_cli_bad_cost_flags_exit_2_and_write_nothing(tmp_path, capsys, flags, words):
    db = tmp_path / "r.sqlite"
    assert main(["run", "--problem", "toy-liu3", "--estimators", "st", "--no-report", "--db", str(db), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not db.exists()


def test_with_cost_recomputes_var_x_seconds_per_group():
    rows = [dict(group=g, metric=m, value=v, M=0) for g, m, v in
            (("all", "trace_var", 4.0), ("all", "var_x_seconds", 99.0), ("head", "trace_var", 2.0),
             ("head", "var_x_seconds", 99.0), ("all", "rel_rmse", 0.5))]
    out = {(r["group"], r["metric"]): r["value"] for r in with_cost(rows, 0.25)}
    assert out[("all", "var_x_seconds")] == 1.0 and out[("head", "var_x_seconds")] == 0.5
    assert out[("all", "rel_rmse")] == 0.5 and rows[1]["value"] == 99.0  # other rows kept; input not changed


def test_measurement_off_keeps_the_accuracy_figure_marked_noisy():
    task = dict(cost=dict(time_s=0), seed=1, draws=10, chunk=None)
    rec = task_cost(Sleepy(), PROBLEM, task, 1.5e-3)
    assert not rec["measured"] and rec["s_per_draw"] == rec["accuracy_run_s_per_draw"] == 1.5e-3
    assert rec["noisy"] and "not measured" in rec["noisy_reasons"][0]


SWEEP = ["--problem", "random:widths=2-3-3,points=6,seed=1", "--estimators", "st,reinforce", "--draws", "300",
         "--grid", "1,10", "--no-report"]


def _load(db):
    with Store(db) as s:
        run = s.load_run("latest")
        return s.tasks(run.manifest["run_id"]), run.scores


def test_a_sweep_stores_the_measured_cost_and_uses_it(tmp_path):
    on, off = str(tmp_path / "on.sqlite"), str(tmp_path / "off.sqlite")
    assert main(["run", *SWEEP, "--db", on, "--cost-time", "0.05", "--clock", "cpu", "--threads", "1"]) == 0
    assert main(["run", *SWEEP, "--db", off, "--cost-time", "0"]) == 0
    tasks, scores = _load(on)
    for _, t in tasks.iterrows():
        c = t["facts"]["cost"]
        assert c["measured"] and c["clock"] == "cpu" and c["threads"] == 1 and c["time_s"] == 0.05
        assert t["seconds_per_draw"] == c["s_per_draw"] and c["accuracy_run_s_per_draw"] > 0
        assert isinstance(c["noisy"], bool) and c["runs"] >= MIN_RUNS
        s = scores[(scores.task_key == t["task_key"]) & (scores.group == "all")].set_index("metric")["value"]
        assert s["var_x_seconds"] == pytest.approx(s["trace_var"] * c["s_per_draw"], rel=1e-12)
    off_tasks, off_scores = _load(off)
    assert all(not t["cost"]["measured"] for t in off_tasks["facts"])
    # the measurement has its own generator: every score but the timed one is identical
    key = ["problem", "estimator", "group", "metric", "M"]
    a = scores[scores.metric != "var_x_seconds"].sort_values(key)[key + ["value"]].reset_index(drop=True)
    b = off_scores[off_scores.metric != "var_x_seconds"].sort_values(key)[key + ["value"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_toml_keys_reach_the_settings(tmp_path):
    from bench.config import load_toml

    good = tmp_path / "good.toml"
    good.write_text('problems = ["toy-liu3"]\nestimators = ["st"]\ncost_time = 0.2\ncost_clock = "cpu"\n'
                    'cost_threads = 1\n')
    cfg = SweepConfig(**load_toml(str(good)))
    assert cfg.cost_settings() == CostSettings(time_s=0.2, clock="cpu", threads=1)
    bad = tmp_path / "bad.toml"
    bad.write_text('problems = ["toy-liu3"]\nestimators = ["st"]\ncost_threads = 1.5\n')
    with pytest.raises(InputError, match="cost_threads"):
        load_toml(str(bad))


def test_the_report_caption_states_the_rule_the_code_applies():
    """reports/ may not import bench: its caption repeats the noisy rule, so the numbers are checked here."""
    from reports.costs import cost_caption

    cap = cost_caption("p", pd.DataFrame({"clock": ["wall"]}))
    assert f"IQR/median > {MAX_REL_IQR}" in cap and f"under {MIN_RUNS} repeats" in cap
    assert f"CPU/wall < {MIN_CPU_WALL}" in cap
