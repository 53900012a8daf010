"""The psa2020 report's checkpoint-training part, from stored task facts (``reports/checkpoints.py``)."""

from __future__ import annotations

import math

import pytest

from reports import checkpoints
from reports.results import validate
from reports.sections import psa2020_section

from .conftest import synthetic_curve


def test_checkpoint_table_reads_the_task_facts(psa2020_run):
    run = validate(psa2020_run())
    t = checkpoints.checkpoint_table(run)
    assert list(t["epoch"]) == [1, 100, 2000]
    assert list(t["problem"]) == [f"psa-2-5-5-5@chk-{e}" for e in (1, 100, 2000)]
    assert t["exact loss"].tolist() == pytest.approx([synthetic_curve(e)[-1] for e in (1, 100, 2000)])
    assert t["|W| layer0"].tolist() == pytest.approx([1.01, 2.0, 21.0])  # 1 + i + epoch / 100
    assert t["|W| head"].tolist() == pytest.approx([4.01, 5.0, 24.0])
    assert t["max|w| layer1"].tolist() == pytest.approx([0.901, 1.0, 2.9])


def test_training_curve_is_the_longest_stored(psa2020_run):
    run = validate(psa2020_run())
    curves = checkpoints.training_curve(run)
    assert set(curves) == {"psa-2-5-5-5"}
    epochs, loss = curves["psa-2-5-5-5"]
    assert len(epochs) == 2001 and epochs[0] == 0 and epochs[-1] == 2000
    assert loss.tolist() == pytest.approx(synthetic_curve(2000))


def test_curve_figure_draws_curve_checkpoints_and_log2(psa2020_run):
    fig = checkpoints.curve_figure(validate(psa2020_run()))
    ax = fig.axes[0]
    ys = [line.get_ydata() for line in ax.get_lines()]
    assert len(ys[0]) == 2001  # the curve
    assert len(ys[1]) == 3  # the three checkpoints
    assert ys[2][0] == pytest.approx(math.log(2))


def test_psa2020_section_shows_training_curve_and_checkpoint_table(psa2020_run):
    run = validate(psa2020_run())
    blocks = psa2020_section(run, {"rid": "r"})[0].blocks
    names = [getattr(b, "name", None) for b in blocks]
    assert "r_psa2020_training" in names and "r_psa2020_checkpoints" in names
    table = blocks[names.index("r_psa2020_checkpoints")].frame
    assert len(table) == 3


def test_psa2020_section_says_when_no_facts_were_stored(psa2020_run):
    run = psa2020_run()
    run.tasks["facts"] = [{} for _ in range(len(run.tasks))]
    blocks = psa2020_section(validate(run), {"rid": "r"})[0].blocks
    names = [getattr(b, "name", None) for b in blocks]
    assert "r_psa2020_training" not in names
    assert any(getattr(b, "kind", "") == "warn" and "no training facts" in b.text for b in blocks)
