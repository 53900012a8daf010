"""Training results in reports: the final table and the curve figures, from hand-made tidy rows."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from reports.training_curves import curve_figure, final_table, samples_figure, search_figure, training_sections

VAL_K = [0.10, 0.50, 0.70, 0.60]
TEST_K = [0.12, 0.40, 0.65, 0.62]


def _curves() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []

    def add(key, est, metric, values, start=0):
        rows.extend(dict(task_key=key, problem="shapes", estimator=est, epoch=start + i, metric=metric, value=v)
                    for i, v in enumerate(values))

    add("a", "psa", "val_acc_k", VAL_K)
    add("a", "psa", "test_acc_k", TEST_K)
    add("a", "psa", "val_acc_1", [0.1, 0.3, 0.4, 0.45])
    add("a", "psa", "test_acc_1", [0.1, 0.2, 0.35, 0.4])
    add("a", "psa", "train_loss", [2.3, 2.0, 1.5, 1.2])
    add("a", "psa", "val_loss", [2.3, 2.1, 1.7, 1.6])
    add("a", "psa", "train_entropy", [0.69, 0.6, 0.5, 0.4])
    add("a", "psa", "seconds", [0.0, 1.0, 2.0, 3.0])
    add("a", "psa", "lr", [0.01])
    add("a", "psa", "search_log10_lr", [-3.7, -2.3, -1.4], start=1)
    add("a", "psa", "search_loss", [2.2, 2.0, 2.1], start=1)
    rows.extend(dict(task_key="a", problem="shapes", estimator="psa", epoch=3, metric=f"test_acc_m{m}", value=v)
                for m, v in ((16, 0.7), (1, 0.4), (4, 0.6)))
    add("b", "st", "val_acc_k", [0.1, 0.2])
    add("b", "st", "train_loss", [2.3, 2.2])
    add("b", "st", "lr", [0.1])
    tasks = pd.DataFrame([
        dict(task_key="a", problem="shapes", estimator="psa", status="done", error=""),
        dict(task_key="b", problem="shapes", estimator="st", status="failed", error="RuntimeError: boom"),
        dict(task_key="c", problem="shapes", estimator="tanh", status="failed", error="InputError: no curves"),
    ])
    return pd.DataFrame(rows), tasks


def test_final_table_selects_the_best_validation_epoch():
    curves, tasks = _curves()
    t = final_table(curves, tasks)
    assert list(t["estimator"]) == ["psa", "st", "tanh"]  # failed tasks are shown, not dropped
    a = t.iloc[0]
    best = int(np.argmax(VAL_K[1:])) + 1  # epoch 0 is the initial network, never "best"
    assert a["best epoch"] == best == 2 and a["epochs"] == 3
    assert a["best val acc k %"] == pytest.approx(100 * VAL_K[best])
    assert a["test acc k % @best"] == pytest.approx(100 * TEST_K[best])
    assert a["test acc k % final"] == pytest.approx(100 * TEST_K[-1])
    assert a["train loss"] == pytest.approx(1.2) and a["lr"] == pytest.approx(0.01) and a["train s"] == 3.0
    assert a["test acc %, max m"] == pytest.approx(70.0)  # m = 16, the largest stored
    b, c = t.iloc[1], t.iloc[2]
    assert b["status"] == "failed" and "boom" in b["note"] and b["epochs"] == 1 and np.isnan(b["test acc k % @best"])
    assert c["epochs"] == 0 and np.isnan(c["lr"])


def test_figures_have_a_line_per_estimator_and_metric():
    curves, tasks = _curves()
    fig = curve_figure(curves, tasks, "shapes")
    axes = fig.get_axes()
    assert len(axes) == 4
    assert [len(ax.get_lines()) for ax in axes] == [2 + 1, 2 + 1, 2, 1]  # psa: all; st: train loss and val acc k
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["psa", "st"]
    buf = io.BytesIO()
    fig.savefig(buf, format="svg")
    assert b"<svg" in buf.getvalue()
    sfig = search_figure(curves, tasks, "shapes")
    assert sfig is not None and len(sfig.get_axes()[0].get_lines()) == 2  # the trials and the chosen-rate line
    mfig = samples_figure(curves, tasks, "shapes")
    (line,) = mfig.get_axes()[0].get_lines()
    assert list(line.get_xdata()) == [1, 4, 16] and list(line.get_ydata()) == pytest.approx([40, 60, 70])
    no_search = curves[~curves["metric"].str.startswith("search")]
    assert search_figure(no_search, tasks, "shapes") is None


def test_sections_wrap_the_table_and_figures():
    curves, tasks = _curves()
    (sec,) = training_sections(curves, tasks, "run1")
    kinds = [type(b).__name__ for b in sec.blocks]
    assert kinds == ["Table", "Plot", "Plot", "Plot"]
    assert sec.blocks[1].figure is not None
    assert training_sections(curves.iloc[0:0], tasks, "run1") == []
