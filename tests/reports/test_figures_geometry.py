"""Figure geometry: no title, label, tick label or legend entry outside the canvas, at any estimator count;
one colour and marker per estimator in gradient and training figures alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports import plots, tradeoffs, training_curves

LONG = "concrete:tau=0.1,hard=true,straight_through=false"  # a long legend entry


def _names(n: int) -> tuple[str, ...]:
    base = ("psa", "st", "reinforce", "arm", "tanh", LONG)
    return tuple(base[i] if i < len(base) else f"estimator-{i}" for i in range(n))


@pytest.mark.parametrize("n", [1, 4, 9, 18])
def test_tradeoff_and_layer_figures_keep_every_text_on_the_canvas(synthetic_run, n):
    run = synthetic_run(problems=("psa-2-5-5-5@chk-100,a-long-problem-spec",), estimators=_names(n), failed=(),
                        timings=False)
    problem = run.tasks["problem"].iloc[0]
    sty = plots.styles(run)
    figs = [tradeoffs.bias_variance_figure(run, problem, sty), tradeoffs.pareto_figure(run, problem, sty)]
    for title, labels in plots.estimator_groups(run, problem):
        figs += [plots.layer_figure(run, problem, chunk, sty, only=labels, title=title)
                 for chunk in plots.layer_chunks(run, problem)]
    for fig in figs:
        assert plots.outside_canvas(fig) == [], fig.get_suptitle()
        entries = [t.get_text() for t in fig.legends[0].get_texts()]
        assert sum(lab.replace("\n", "") in _names(n) for lab in entries) >= 1


def test_the_geometry_check_catches_a_clipped_title(synthetic_run):
    run = synthetic_run(problems=("toy-a",), estimators=("psa", "st"), failed=(), timings=False)
    fig = tradeoffs.pareto_figure(run, "toy-a", plots.styles(run))
    assert plots.outside_canvas(fig) == []
    fig.suptitle("x" * 400)  # far wider than the figure, not wrapped
    fig.legend([], [])
    assert fig.get_suptitle() in plots.outside_canvas(fig)


def _curves(tasks: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for k, p, e in zip(tasks["task_key"], tasks["problem"], tasks["estimator"]):
        for ep in range(4):
            for metric in ("train_loss", "val_loss", "val_acc_k", "val_acc_1", "test_acc_k", "test_acc_1",
                           "train_entropy"):
                rows.append((k, p, e, ep, metric, 0.5 + 0.1 * np.sin(ep + len(metric))))
        for m in (1, 2, 4):
            rows.append((k, p, e, 3, f"test_acc_m{m}", 0.8 + 0.01 * m))
        for trial, lr in enumerate((-3.0, -2.5, -2.0)):
            rows.append((k, p, e, trial, "search_log10_lr", lr))
            rows.append((k, p, e, trial, "search_loss", 1.0 + trial))
        rows.append((k, p, e, 0, "lr", 10**-2.5))
    return pd.DataFrame(rows, columns=["task_key", "problem", "estimator", "epoch", "metric", "value"])


@pytest.mark.parametrize("n", [3, 12])
def test_training_figures_fit_and_share_the_gradient_figures_colours(synthetic_run, n):
    run = synthetic_run(problems=("cifar-s1",), estimators=_names(n), failed=(), timings=False)
    curves = _curves(run.tasks)
    sty = plots.styles(run)
    figs = [training_curves.curve_figure(curves, run.tasks, "cifar-s1", sty),
            training_curves.samples_figure(curves, run.tasks, "cifar-s1", sty),
            training_curves.search_figure(curves, run.tasks, "cifar-s1", sty)]
    grad = tradeoffs.pareto_figure(run, "cifar-s1", sty)
    want = {lab: sty[lab][0] for lab in _names(n)}
    for fig in figs:
        assert plots.outside_canvas(fig) == [], fig.get_suptitle()
        seen = {}
        for ax in fig.axes:
            for line in ax.get_lines():
                if line.get_label() in want:
                    seen[line.get_label()] = line.get_color()
        for lab, colour in seen.items():
            assert np.allclose(plots_rgba(colour), plots_rgba(want[lab])), lab
    # the same estimator, the same colour and marker, in the gradient figure
    for line in grad.axes[0].get_lines():
        lab = next((k for k, (c, m) in sty.items() if np.allclose(plots_rgba(line.get_color()), plots_rgba(c))
                    and line.get_marker() == m), None)
        assert lab is not None or line.get_color() == "k"
    # and without the report's styles, the training figures derive the same ones from the tasks
    alone = training_curves.curve_figure(curves, run.tasks, "cifar-s1")
    first = [ln for ln in alone.axes[0].get_lines()][0]
    assert np.allclose(plots_rgba(first.get_color()), plots_rgba(want[_names(n)[0]]))


def plots_rgba(c):
    from matplotlib.colors import to_rgba

    return np.array(to_rgba(c))


def test_noisy_cost_is_marked_in_the_wall_time_figure(synthetic_run):
    run = synthetic_run(problems=("toy-a",), estimators=("psa", "st"), failed=(), timings=False)
    run.tasks["facts"] = [{"cost": {"noisy": True, "median_s": 2e-4}}, {"cost": {}}]
    fig = tradeoffs.pareto_figure(run, "toy-a", plots.styles(run))
    entries = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "psa †" in entries and "st" in entries and "noisy" in fig.get_suptitle()
    assert plots.outside_canvas(fig) == []


def test_throughput_figure_keeps_its_text_on_the_canvas(synthetic_run):
    from reports.results import validate
    from reports.throughput import throughput_figure

    assert plots.outside_canvas(throughput_figure(validate(synthetic_run()).timings)) == []
