"""Training results (``sbn-bench train``): a final table and training-curve figures, from stored rows only.

Inputs are the store's tidy ``curves`` rows (``task_key, problem, estimator, epoch, metric, value``;
metrics ``train_*`` running estimates over each epoch's batches, ``val_*`` / ``test_*`` full passes,
each ``*_loss, *_acc_1, *_acc_k, *_entropy``; ``seconds``, ``wall_seconds``; ``lr`` and
``search_seconds`` at epoch 0; ``search_log10_lr`` / ``search_loss`` indexed by trial number;
``test_acc_m{m}`` at the last epoch; ``diverged_epoch``) and the ``tasks`` table.  No torch, no recomputation.

- :func:`final_table` — one row per task (failed ones included): learning rate, epochs run, final
  running training loss, final validation accuracy (1 sample and the k-sample ensemble), the best
  validation ensemble accuracy and its epoch, test accuracies at that epoch (model selection on
  validation) and at the last epoch, training time.
Each estimator has the colour and marker it has in the gradient figures (:func:`reports.plots.styles`).

- :func:`curve_figure` — per problem, four panels against epoch, one colour per estimator:
  expected loss (training running estimate solid, validation dashed), validation accuracy
  (k-sample ensemble solid, 1 sample dotted), test accuracy (same styles), mean unit entropy.
- :func:`samples_figure` — per problem, the final test accuracy of the m-path ensemble against m
  (``test_acc_m{m}`` rows; ``docs/protocols.md#cifar``'s "test accuracy against the number of samples").
- :func:`search_figure` — per problem, the learning-rate trials: objective against log10 lr.
- :func:`training_sections` — the above as report sections (see the module's hook-up note).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .document import Plot, Section, Table
from .plots import fig_title, freeze_layout, legend, styles_for
from .results import slug
from .tables import task_labels

__all__ = ["final_table", "curve_figure", "samples_figure", "search_figure", "training_sections", "has_training"]



def _style(tasks: pd.DataFrame, sty: dict | None) -> dict:
    """(colour, marker) per estimator label: the report's styles (one per estimator in every figure) or the run's."""
    return sty if sty is not None else styles_for(tasks)


def has_training(curves: pd.DataFrame | None) -> bool:
    return curves is not None and not curves.empty


def _series(curves: pd.DataFrame, key: str, metric: str) -> pd.Series:
    rows = curves[(curves["task_key"] == key) & (curves["metric"] == metric)]
    return rows.set_index("epoch")["value"].sort_index()


def _at(s: pd.Series, epoch) -> float:
    return float(s.get(epoch, np.nan)) if epoch is not None and not s.empty else np.nan


def final_table(curves: pd.DataFrame, tasks: pd.DataFrame) -> pd.DataFrame:
    """One row per training task, in the tasks table's order; accuracies in percent."""
    rows = []
    for _, t in tasks.iterrows():
        key = t["task_key"]
        val_k = _series(curves, key, "val_acc_k")
        trained = val_k[val_k.index > 0]
        best = int(trained.idxmax()) if not trained.empty else None
        last = int(trained.index.max()) if not trained.empty else None
        lr = _series(curves, key, "lr")
        ens = _ensemble(curves, key)
        row = {
            "problem": t["problem"], "estimator": t["estimator"], "status": t["status"],
            "lr": float(lr.iloc[0]) if not lr.empty else np.nan,
            "epochs": last if last is not None else 0,
            "train loss": _at(_series(curves, key, "train_loss"), last),
            "val acc 1 %": 100 * _at(_series(curves, key, "val_acc_1"), last),
            "val acc k %": 100 * _at(val_k, last),
            "best val acc k %": 100 * _at(val_k, best),
            "best epoch": best if best is not None else np.nan,
            "test acc 1 % @best": 100 * _at(_series(curves, key, "test_acc_1"), best),
            "test acc k % @best": 100 * _at(_series(curves, key, "test_acc_k"), best),
            "test acc k % final": 100 * _at(_series(curves, key, "test_acc_k"), last),
            "train s": _at(_series(curves, key, "seconds"), last),
            "test acc %, max m": 100 * float(ens.iloc[-1]) if not ens.empty else np.nan,
            "note": str(t.get("error", "") or ""),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _tasks_of(tasks: pd.DataFrame, problem: str) -> list[tuple[str, str]]:
    """(task key, estimator label) of ``problem``'s tasks; the labels are the gradient figures' (same styles)."""
    labels = task_labels(tasks)
    sel = tasks[tasks["problem"] == problem]
    return [(k, labels.get(k, est)) for k, est in zip(sel["task_key"], sel["estimator"])]


def curve_figure(curves: pd.DataFrame, tasks: pd.DataFrame, problem: str, sty: dict | None = None) -> Figure:
    """Loss, validation accuracy, test accuracy and unit entropy against epoch for every estimator on ``problem``."""
    fig = Figure(figsize=(10.0, 7.0), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    panels = [("expected loss", [("train_loss", "-"), ("val_loss", "--")]),
              ("validation accuracy", [("val_acc_k", "-"), ("val_acc_1", ":")]),
              ("test accuracy", [("test_acc_k", "-"), ("test_acc_1", ":")]),
              ("mean unit entropy (nats)", [("train_entropy", "-")])]
    handles, labels = [], []
    sty = _style(tasks, sty)
    for key, est in _tasks_of(tasks, problem):
        color = sty[est][0] if est in sty else "0.4"
        for ax, (_title, metrics) in zip(axes, panels):
            for metric, style in metrics:
                s = _series(curves, key, metric)
                if s.empty:
                    continue
                line, = ax.plot(s.index, s.values, linestyle=style, color=color, linewidth=1.2)
                if metric == "train_loss":
                    handles.append(line)
                    labels.append(est)
    for ax, (title, metrics) in zip(axes, panels):
        ax.set_title(title + ("\nsolid: " + metrics[0][0] + ", " + ", ".join(
            f"{'dashed' if st == '--' else 'dotted'}: {m}" for m, st in metrics[1:]) if len(metrics) > 1 else ""),
            fontsize=8)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    legend(fig, handles, labels, {})
    fig_title(fig, f"{problem}: training curves (true binary SBN; k-sample ensemble vs 1 sample)", 10)
    return freeze_layout(fig)


def _ensemble(curves: pd.DataFrame, key: str) -> pd.Series:
    """Final test accuracy by ensemble size m, from the ``test_acc_m{m}`` rows."""
    rows = curves[(curves["task_key"] == key) & curves["metric"].str.fullmatch(r"test_acc_m\d+")]
    return pd.Series(rows["value"].to_numpy(), index=rows["metric"].str[len("test_acc_m"):].astype(int)).sort_index()


def samples_figure(curves: pd.DataFrame, tasks: pd.DataFrame, problem: str,
                   sty: dict | None = None) -> Figure | None:
    """Final test accuracy against the number of sample paths averaged; None when no task stored it."""
    fig = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = fig.subplots()
    drawn = False
    sty = _style(tasks, sty)
    for key, est in _tasks_of(tasks, problem):
        s = _ensemble(curves, key)
        if s.empty:
            continue
        color, marker = sty.get(est, ("0.4", "o"))
        ax.plot(s.index, 100 * s.values, "-", marker=marker, color=color, label=est, markersize=4)
        drawn = True
    if not drawn:
        return None
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sample paths averaged in the prediction (m)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    legend(fig, *ax.get_legend_handles_labels(), {})
    fig_title(fig, f"{problem}: test accuracy of the m-sample ensemble after training", 9)
    return freeze_layout(fig)


def search_figure(curves: pd.DataFrame, tasks: pd.DataFrame, problem: str,
                  sty: dict | None = None) -> Figure | None:
    """Learning-rate search trials (objective vs log10 lr); None when no task of ``problem`` searched."""
    fig = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = fig.subplots()
    drawn = False
    sty = _style(tasks, sty)
    for key, est in _tasks_of(tasks, problem):
        t, v = _series(curves, key, "search_log10_lr"), _series(curves, key, "search_loss")
        if t.empty:
            continue
        order = np.argsort(t.values)
        color, marker = sty.get(est, ("0.4", "o"))
        ax.plot(t.values[order], v.reindex(t.index).values[order], "-", marker=marker, color=color, label=est,
                markersize=4)
        lr = _series(curves, key, "lr")
        if not lr.empty:
            ax.axvline(np.log10(lr.iloc[0]), color=color, alpha=0.4, linewidth=0.8)
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel("log10 learning rate")
    ax.set_ylabel("running training loss of the trial")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    legend(fig, *ax.get_legend_handles_labels(), {})
    fig_title(fig, f"{problem}: learning-rate search (vertical lines: the chosen rates)", 9)
    return freeze_layout(fig)


def training_sections(curves: pd.DataFrame, tasks: pd.DataFrame, rid: str, sty: dict | None = None) -> list[Section]:
    """Report sections for a training run (empty when there are no curves); ``sty``: the report's estimator styles."""
    if not has_training(curves):
        return []
    blocks = [Table(f"{rid}_training", "Training: final results per estimator (accuracy of the true binary SBN; "
                    "k = the run's ensemble size; test accuracy at the best validation epoch)",
                    final_table(curves, tasks))]
    for problem in dict.fromkeys(tasks["problem"]):
        ps = f"{rid}_{slug(problem)}"
        blocks.append(Plot(f"{ps}_curves", f"{problem}: training curves",
                           lambda p=problem: curve_figure(curves, tasks, p, sty)))
        if curves["metric"].str.startswith("test_acc_m").any():
            blocks.append(Plot(f"{ps}_samples", f"{problem}: test accuracy against the ensemble size",
                               lambda p=problem: samples_figure(curves, tasks, p, sty)))
        if (curves["metric"] == "search_loss").any():
            blocks.append(Plot(f"{ps}_lr_search", f"{problem}: learning-rate search",
                               lambda p=problem: search_figure(curves, tasks, p, sty)))
    return [Section("Training", f"{rid}_training", blocks)]
