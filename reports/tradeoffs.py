"""Trade-off figures per problem, a panel per parameter group, from stored scores (matplotlib, no pyplot state).

The head's gradient is far larger than the hidden layers', so a figure of the whole gradient shows
the head's errors only; these figures are drawn per group (``docs/howto/read-report.md#bias-variance``).

- :func:`bias_variance_figure` — relative bias ``|b|/|g|`` with its 95% CI (bars) against the
  relative standard deviation of one draw ``sqrt(tr Var)/|g|``. The RMSE of an M-draw average is
  ``sqrt(bias^2 + sd^2/M)``: points below the dashed diagonal are variance-dominated. A bias whose
  CI reaches 0 cannot be told from zero: it is drawn hollow at its upper bound (or the noise floor),
  with a bar down to the axis floor. Values under ``_DECADES`` decades below the largest sit on the
  axis floor and are labelled; a variance that is float64 round-off is exactly 0 (``Var = 0``).
- :func:`pareto_figure` — accuracy vs wall time: relative RMSE of an M-draw average (analytic) per
  group, and their geometric mean over the groups (the ranking's equal-weight score), against
  ``M x seconds per draw``; the lower envelope over all estimators and M is the Pareto front.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .plots import (empty_panel, fig_title, freeze_layout, legend, min_width, plain_log, series, short_title,
                    task_split)
from .results import RunResults, group_order
from .tables import ZERO_SD, cost_noisy

__all__ = ["bias_variance_figure", "pareto_figure", "figure_groups"]

_DECADES = 6  # dynamic range of the bias-variance axes; smaller values sit on the floor, marked
_SUMMARY = "geo-mean over groups"


def figure_groups(run: RunResults, problem: str) -> list[str]:
    """The parameter groups drawn for ``problem``: its layers and head in network order (``all`` only if alone)."""
    s = run.scores
    groups = group_order(s.loc[(s["problem"] == problem) & (s["metric"] == "rel_bias"), "group"].unique())
    return [g for g in groups if g != "all"] or (["all"] if "all" in groups else [])


def _panels(n: int, height: float) -> tuple[Figure, list]:
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = Figure(figsize=(min_width(cols, 3.2), height * rows + 1.0), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _stored(run: RunResults, problem: str, metric: str, group: str, column: str = "value") -> pd.Series:
    s = run.scores
    sel = s[(s["problem"] == problem) & (s["metric"] == metric) & (s["group"] == group) & (s["M"] == 0)]
    return sel.drop_duplicates("task_key").set_index("task_key")[column]


def bias_variance_figure(run: RunResults, problem: str, sty: dict) -> Figure:
    """Relative bias (95% CI bars) vs relative sd of one draw, a panel per parameter group of ``problem``."""
    groups = figure_groups(run, problem) or ["all"]
    fig, axes = _panels(len(groups), 3.2)
    t, done, failed = task_split(run, problem)
    draws = t.set_index("task_key")["draws"]
    handles = {}
    for ax, group in zip(axes, groups):
        gn, bias = _stored(run, problem, "grad_norm", group), _stored(run, problem, "rel_bias", group)
        lo, hi = _stored(run, problem, "rel_bias", group, "lo"), _stored(run, problem, "rel_bias", group, "hi")
        var, floor = _stored(run, problem, "trace_var", group), _stored(run, problem, "noise_floor", group)
        pts = []
        for k, lab in done:
            if k not in gn or k not in bias or k not in var or not gn[k] > 0:
                continue
            sd = np.sqrt(max(var[k], 0.0)) / gn[k]
            sd = 0.0 if sd < ZERO_SD else sd
            fl = floor[k] if k in floor else sd / np.sqrt(max(draws.get(k, 1), 1))
            b_lo, b_hi = lo.get(k, np.nan), hi.get(k, np.nan)
            zero = (b_lo == b_lo and not b_lo > 0) or not bias[k] > 0
            up = b_hi if zero and b_hi == b_hi and b_hi > 0 else fl
            pts.append((lab, sd, bias[k], b_lo, b_hi, zero, up))
        title = short_title(group) + (f"  (|g| = {np.median(gn.to_numpy()):.3g})" if len(gn) else "")
        if not pts:
            empty_panel(ax, "no data" + (" (all tasks failed)" if failed else ""))
            ax.set_title(title, fontsize="medium")
            continue
        pos = [p for _, sd, b, a, c, _, up in pts for p in (sd, b, a, c, up) if np.isfinite(p) and p > 0]
        top = max(pos) if pos else 1.0
        floor_y = max(min(pos) / 3 if pos else 1e-6, top * 10.0**-_DECADES)  # at most _DECADES decades shown
        for lab, sd, b, b_lo, b_hi, zero, up in pts:
            color, marker = sty[lab]
            x = max(sd, floor_y)
            if zero:  # indistinguishable from 0: hollow at the upper bound, bar down to the floor
                y = max(up, floor_y) if up == up else floor_y
                ax.plot([x, x], [floor_y, y], color=color, lw=1.0, alpha=0.7)
                ax.scatter([x], [y], marker=marker, s=46, zorder=3, facecolors="none", edgecolors=[color])
            else:
                y = max(b, floor_y)
                if b_lo == b_lo and b_hi == b_hi:
                    ax.plot([x, x], [max(b_lo, floor_y), max(b_hi, floor_y)], color=color, lw=1.4)
                ax.scatter([x], [y], color=color, marker=marker, s=46, zorder=3)
            if not sd > floor_y:
                ax.annotate("Var = 0" if sd == 0 else "Var ≈ 0", (x, y), xytext=(5, 3), textcoords="offset points",
                            fontsize="x-small", color=color, annotation_clip=False)
            handles[lab] = Line2D([], [], color=color, marker=marker, linestyle="none", markersize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        lim = (floor_y / 1.5, top * 2)
        ax.plot(lim, lim, color="0.6", ls="--", lw=1)
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        plain_log(ax, "xy")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("relative sd of one draw  √trVar / |g|")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("relative bias  |b| / |g|  (95% CI)")
    fig_title(fig, f"{problem}: bias vs variance per parameter group\nbars: 95% CI of the bias; hollow: bias "
              "indistinguishable from 0, drawn at its upper bound; dashed: bias = sd; on the left edge: Var = 0")
    legend(fig, list(handles.values()), list(handles), {lab: [] for lab in failed})
    return freeze_layout(fig)


def pareto_figure(run: RunResults, problem: str, sty: dict) -> Figure:
    """Relative RMSE of an M-draw average vs its wall time M x seconds per draw: a panel per group of ``problem``
    and one for the geometric mean over the groups."""
    t, done, failed = task_split(run, problem)
    spd = t.set_index("task_key")["seconds_per_draw"].astype(float)
    noisy = {k for k, n in zip(t["task_key"], cost_noisy(t)) if n}
    metric = "rel_rmse" if ((run.scores["problem"] == problem) & (run.scores["metric"] == "rel_rmse")).any() \
        else "rel_rmse_emp"
    data = series(run, problem, (metric,))
    groups = figure_groups(run, problem) or ["all"]
    panels = groups + ([_SUMMARY] if len(groups) > 1 else [])
    fig, axes = _panels(len(panels), 3.2)
    handles = {}
    for ax, group in zip(axes, panels):
        xs, ys = [], []
        for k, lab in done:
            if not spd.get(k, np.nan) > 0:
                continue
            if group == _SUMMARY:
                parts = [data.get((k, g, metric)) for g in groups]
                if any(p is None for p in parts) or len({len(p[0]) for p in parts}) != 1:
                    continue
                m = parts[0][0]
                with np.errstate(divide="ignore"):
                    v = np.exp(np.mean(np.log(np.vstack([p[1] for p in parts])), axis=0))
            elif (k, group, metric) in data:
                m, v = data[(k, group, metric)]
            else:
                continue
            color, marker = sty[lab]
            (handles[lab + (" †" if k in noisy else "")],) = ax.loglog(m * spd[k], v, color=color, lw=1.4,
                                                                       marker=marker, markevery=[0], ms=5)
            xs += list(m * spd[k])
            ys += list(v)
        ax.set_title(group if group == _SUMMARY else short_title(group), fontsize="medium")
        if not xs:
            empty_panel(ax, "no timed results")
            continue
        order = np.argsort(xs, kind="stable")
        front = np.minimum.accumulate(np.asarray(ys)[order])
        (handles["Pareto front"],) = ax.step(np.asarray(xs)[order], front, where="post", color="k", lw=3,
                                             alpha=0.25, zorder=0)
        plain_log(ax, "xy")
        ax.set_xlabel("wall time for M draws (s)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("relative RMSE")
    fig_title(fig, f"{problem}: accuracy vs wall time per parameter group (marker: one draw; curve: averages of M "
              "draws; grey: Pareto front)" + ("\n† cost per draw measured as noisy" if noisy else ""))
    legend(fig, list(handles.values()), list(handles), {lab: [] for lab in failed})
    return freeze_layout(fig)
