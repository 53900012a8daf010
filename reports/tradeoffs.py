"""Trade-off figures over all problems of a run, from stored scores (matplotlib, no pyplot state).

- :func:`bias_variance_figure` — relative bias ``|b|/|g|`` against the relative standard deviation
  of one draw ``sqrt(tr Var)/|g|`` (whole gradient), a panel per problem. The RMSE of an M-draw
  average is ``sqrt(bias^2 + sd^2/M)``: points below the dashed diagonal are variance-dominated.
  A bias below its noise floor is drawn hollow at the floor; values under ``_DECADES`` decades
  below the largest sit on the axis floor and are labelled (``Var = 0`` for deterministic methods).
- :func:`pareto_figure` — accuracy vs wall time: relative RMSE of an M-draw average (analytic,
  whole gradient) against ``M x seconds per draw``; the lower envelope over all estimators and M
  is the Pareto front.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .plots import empty_panel, freeze_layout, legend, plain_log, series, short_title, task_split
from .results import RunResults

__all__ = ["bias_variance_figure", "pareto_figure"]

_DECADES = 6  # dynamic range of the bias-variance axes; smaller values sit on the floor, marked


def _per_problem_axes(n: int, height: float) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.6 * cols + 0.6, height * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _overall(run: RunResults, problem: str, metric: str) -> pd.Series:
    s = run.scores
    sel = s[(s["problem"] == problem) & (s["metric"] == metric) & (s["group"] == "all") & (s["M"] == 0)]
    return sel.drop_duplicates("task_key").set_index("task_key")["value"]


def bias_variance_figure(run: RunResults, problems: list[str], sty: dict) -> Figure:
    """Relative bias vs relative sd of one draw (group ``all``); ``noise_floor`` is stored relative to the gradient
    norm, like ``rel_bias``; zero bias or variance is drawn at the axis floor."""
    fig, axes = _per_problem_axes(len(problems), 3.3)
    handles, all_failed = {}, {}
    for ax, problem in zip(axes, problems):
        t, done, failed = task_split(run, problem)
        for lab in failed:
            all_failed.setdefault(lab, []).append(problem)
        gn, bias = _overall(run, problem, "grad_norm"), _overall(run, problem, "rel_bias")
        var, floor = _overall(run, problem, "trace_var"), _overall(run, problem, "noise_floor")
        draws = t.set_index("task_key")["draws"]
        pts = []
        for k, lab in done:
            if k not in gn or k not in bias or k not in var or not gn[k] > 0:
                continue
            sd = np.sqrt(max(var[k], 0.0)) / gn[k]
            fl = floor[k] if k in floor else np.sqrt(max(var[k], 0.0) / max(draws.get(k, 1), 1)) / gn[k]
            pts.append((lab, sd, bias[k], fl))
        if not pts:
            empty_panel(ax, "no data" + (" (all tasks failed)" if failed else ""))
            ax.set_title(short_title(problem), fontsize="medium")
            continue
        pos = [p for _, sd, b, fl in pts for p in (sd, b, fl) if np.isfinite(p) and p > 0]
        top = max(pos) if pos else 1.0
        lo = max(min(pos) / 3 if pos else 1e-6, top * 10.0**-_DECADES)  # at most _DECADES decades shown
        for lab, sd, b, fl in pts:
            color, marker = sty[lab]
            below = not (b > max(fl, lo))
            y = max(fl, lo) if below else b
            x = max(sd, lo)
            ax.scatter([x], [y], color=color, marker=marker, s=46, zorder=3, facecolors="none" if below else color)
            if not sd > lo:
                ax.annotate("Var ≈ 0" if sd > 0 else "Var = 0", (x, y), xytext=(6, -3), textcoords="offset points",
                            fontsize="x-small", color=color)
            handles[lab] = Line2D([], [], color=color, marker=marker, linestyle="none", markersize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        lim = (lo / 1.5, top * 2)
        ax.plot(lim, lim, color="0.6", ls="--", lw=1)
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        plain_log(ax, "xy")
        ax.set_title(short_title(problem), fontsize="medium")
        ax.set_xlabel("relative sd of one draw  √trVar / |g|")
        ax.set_ylabel("relative bias  |b| / |g|")
        ax.grid(True, alpha=0.3)
    fig.suptitle("Bias vs variance (whole gradient)\nhollow: bias below the noise floor (drawn at the floor); "
                 "dashed: bias = sd", fontsize="medium")
    legend(fig, list(handles.values()), list(handles), all_failed)
    return freeze_layout(fig)


def pareto_figure(run: RunResults, problems: list[str], sty: dict) -> Figure:
    """Relative RMSE (whole gradient) of an M-draw average vs its wall time M x seconds per draw."""
    fig, axes = _per_problem_axes(len(problems), 3.3)
    handles, all_failed = {}, {}
    for ax, problem in zip(axes, problems):
        t, done, failed = task_split(run, problem)
        for lab in failed:
            all_failed.setdefault(lab, []).append(problem)
        spd = t.set_index("task_key")["seconds_per_draw"].astype(float)
        metric = "rel_rmse" if ((run.scores["problem"] == problem) & (run.scores["metric"] == "rel_rmse")).any() \
            else "rel_rmse_emp"
        data = series(run, problem, (metric,))
        xs, ys = [], []
        for k, lab in done:
            if (k, "all", metric) not in data or not spd.get(k, np.nan) > 0:
                continue
            m, v = data[(k, "all", metric)]
            color, marker = sty[lab]
            (handles[lab],) = ax.loglog(m * spd[k], v, color=color, lw=1.4, marker=marker, markevery=[0], ms=5)
            xs += list(m * spd[k])
            ys += list(v)
        if not xs:
            empty_panel(ax, "no timed results")
            ax.set_title(short_title(problem), fontsize="medium")
            continue
        order = np.argsort(xs, kind="stable")
        front = np.minimum.accumulate(np.asarray(ys)[order])
        (handles["Pareto front"],) = ax.step(np.asarray(xs)[order], front, where="post", color="k", lw=3,
                                             alpha=0.25, zorder=0)
        ax.set_title(short_title(problem), fontsize="medium")
        plain_log(ax, "xy")
        ax.set_xlabel("wall time for M draws (s)")
        ax.set_ylabel("relative RMSE (whole gradient)")
        ax.grid(True, alpha=0.3)
    fig.suptitle("Accuracy vs wall time (marker: one draw; curve: averages of M draws)", fontsize="medium")
    legend(fig, list(handles.values()), list(handles), all_failed)
    return freeze_layout(fig)
