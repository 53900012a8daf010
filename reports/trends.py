"""Trends across problems: relative bias and one-draw relative RMSE against width, depth and weight scale.

A run whose problems are random networks (``random:widths=...,scale=...``, the ``scaling`` and
``scaling-large`` presets) gets one figure per axis that varies: for each axis (width = widest hidden
layer, depth = number of stochastic layers, scale) the family of problems that share the other two
axes and has the most values of this one; one panel per layer role (first hidden layer, last hidden
layer, head, whole gradient), one line per estimator, the band its confidence interval.  Scores come
from the store as they are; those against the Monte Carlo reference (task ``facts.reference.kind ==
"mc"``) are drawn hollow and named so in the captions (``docs/monte-carlo.md#reading``).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .document import Plot, Section, Table, Text
from .plots import empty_panel, freeze_layout, legend
from .results import RunResults, group_order
from .tables import task_labels

__all__ = ["problem_axes", "reference_kinds", "trend_frame", "trend_families", "trend_figure", "reference_table",
           "trends_section", "AXES", "ROLES"]

AXES = ("width", "depth", "scale")
ROLES = ("first hidden", "last hidden", "head", "all")
_METRICS = {"rel_bias": ("rel_bias", 0), "rel_rmse": ("rel_rmse", 1)}


def problem_axes(spec: str) -> dict | None:
    """``{width, depth, scale}`` of a ``random:`` problem spec (defaults of the problem builder), else None."""
    spec = str(spec).strip()
    if not spec.startswith("random"):
        return None
    opts = dict(kv.split("=", 1) for kv in spec.partition(":")[2].split(",") if "=" in kv)
    try:
        widths = [int(w) for w in opts.get("widths", "2-5-5-5").split("-")]
        scale = float(opts.get("scale", 1.0))
    except ValueError:
        return None
    if len(widths) < 2:
        return None
    return dict(width=max(widths[1:]), depth=len(widths) - 1, scale=scale)


def reference_kinds(run: RunResults) -> dict[str, str]:
    """``task_key -> "mc" | "exact"`` from the tasks' facts (tasks stored before the facts existed: exact)."""
    facts = run.tasks["facts"] if "facts" in run.tasks else [None] * len(run.tasks)
    out = {}
    for key, f in zip(run.tasks["task_key"], facts):
        ref = (f or {}).get("reference") if isinstance(f, dict) else None
        out[key] = (ref or {}).get("kind", "exact")
    return out


def _role(group: str, depth: int) -> str | None:
    if group in ("head", "all"):
        return group
    m = re.fullmatch(r"layer(\d+)", group)
    if not m:
        return None
    k = int(m.group(1))
    return "first hidden" if k == 0 else "last hidden" if k == depth - 1 else None


def trend_frame(run: RunResults) -> pd.DataFrame:
    """Tidy rows ``problem, width, depth, scale, label, reference, role, group, metric, value, lo, hi`` for
    ``rel_bias`` and ``rel_rmse`` at M = 1 of every finished task on a ``random:`` problem."""
    cols = ["problem", "width", "depth", "scale", "label", "reference", "role", "group", "metric", "value", "lo", "hi"]
    t = run.tasks[run.tasks["status"] == "done"]
    axes = {p: problem_axes(p) for p in t["problem"].unique()}
    keep = {k: p for k, p in zip(t["task_key"], t["problem"]) if axes[p] is not None}
    if not keep or run.scores.empty:
        return pd.DataFrame(columns=cols)
    labels, kinds = task_labels(run.tasks), reference_kinds(run)
    s = run.scores[run.scores["task_key"].isin(list(keep))]
    rows = []
    for name, (metric, M) in _METRICS.items():
        sel = s[(s["metric"] == metric) & (s["M"] == M)]
        for r in sel.itertuples(index=False):
            ax = axes[keep[r.task_key]]
            role = _role(r.group, ax["depth"])
            if role is None:
                continue
            rows.append(dict(problem=keep[r.task_key], **ax, label=labels[r.task_key], reference=kinds[r.task_key],
                             role=role, group=r.group, metric=name, value=r.value, lo=r.lo, hi=r.hi))
    return pd.DataFrame(rows, columns=cols)


def trend_families(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per axis, the rows of the family of problems that fix the other two axes and has the most (>= 3)
    values of this one (a depth family also needs the same width, and so on); axes without one are left out."""
    out = {}
    probs = frame.drop_duplicates("problem")
    for axis in AXES:
        others = [a for a in AXES if a != axis]
        best, n_best = None, 2
        for key, grp in probs.groupby(others):
            n = grp[axis].nunique()
            if n > n_best:
                best, n_best = key, n
        if best is not None:
            mask = np.logical_and.reduce([frame[a] == v for a, v in zip(others, best)])
            out[axis] = frame[mask]
    return out


#: a panel whose largest value exceeds this many times its median gets a symmetric-log y axis ...
SYMLOG_SPAN = 30.0
#: ... linear below this value (relative bias and RMSE of 0 stay on the axis)
SYMLOG_FLOOR = 0.01


def trend_figure(family: pd.DataFrame, axis: str, metric: str, sty: dict) -> Figure:
    """One panel per layer role: ``metric`` against ``axis``, a line per estimator with its CI band;
    Monte Carlo points hollow."""
    fam = family[family["metric"] == metric]
    fig = Figure(figsize=(3.3 * len(ROLES) + 0.6, 3.4), layout="constrained")
    axs = fig.subplots(1, len(ROLES), squeeze=False).ravel()
    handles = {}
    for ax, role in zip(axs, ROLES):
        sub = fam[fam["role"] == role]
        if sub.empty or not np.isfinite(sub["value"]).any():
            empty_panel(ax)
            ax.set_title(role)
            continue
        for lab, g in sub.groupby("label", sort=False):
            g = g.sort_values(axis)
            x, v = g[axis].to_numpy(float), g["value"].to_numpy(float)
            lo, hi = g["lo"].to_numpy(float), g["hi"].to_numpy(float)
            colour, marker = sty.get(lab, ("0.3", "o"))
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.fill_between(x[ok], lo[ok], hi[ok], color=colour, alpha=0.15, linewidth=0)
            mc = (g["reference"] == "mc").to_numpy()
            ax.plot(x, v, color=colour, linewidth=1.2)
            ax.plot(x[~mc], v[~mc], linestyle="none", marker=marker, color=colour, markersize=5)
            ax.plot(x[mc], v[mc], linestyle="none", marker=marker, markerfacecolor="none", color=colour, markersize=5)
            handles[lab] = Line2D([], [], color=colour, marker=marker, linewidth=1.2)
        if axis == "width" or (axis == "scale" and sub[axis].max() / max(sub[axis].min(), 1e-300) > 4):
            ax.set_xscale("log", base=2)
        pos = sub["value"][np.isfinite(sub["value"]) & (sub["value"] > 0)]
        if len(pos) and pos.max() > SYMLOG_SPAN * max(pos.median(), SYMLOG_FLOOR):  # one outlier would flatten the rest
            ax.set_yscale("symlog", linthresh=SYMLOG_FLOOR)  # linear below the floor (0 included), log above
            ax.set_ylim(bottom=0)  # relative bias and RMSE are never negative
        ax.set_title(role)
        ax.set_xlabel(axis)
        ax.grid(True, alpha=0.3)
    axs[0].set_ylabel({"rel_bias": "relative bias", "rel_rmse": "relative RMSE, one draw"}[metric])
    legend(fig, list(handles.values()), list(handles), {})
    return freeze_layout(fig)


def reference_table(run: RunResults) -> pd.DataFrame:
    """Which reference scored each problem: exact (method) or Monte Carlo (estimator and draws per group, the
    most draws of a group, the budget and what ended the stream, level)."""
    rows = {}
    facts = run.tasks["facts"] if "facts" in run.tasks else [None] * len(run.tasks)
    for p, st, f in zip(run.tasks["problem"], run.tasks["status"], facts):
        ref = (f or {}).get("reference") if isinstance(f, dict) else None
        if st != "done" or p in rows:
            continue
        if not ref or ref.get("kind") != "mc":
            rows[p] = dict(problem=p, reference="exact" + (f" ({ref['method']})" if ref and "method" in ref else ""),
                           estimators="", draws="", budget="", level="")
        else:
            by, n = ref.get("by_group", {}), ref.get("draws_by_group", {})
            rows[p] = dict(problem=p, reference="Monte Carlo",
                           estimators=", ".join(f"{g}: {by[g]}" + (f" ({n[g]:,} draws)" if g in n else "")
                                                for g in group_order(by)),
                           draws=str(ref.get("draws", "")), budget=budget_text(ref),
                           level=f"{ref.get('level', float('nan')):.0%}")
    return pd.DataFrame(list(rows.values()), columns=["problem", "reference", "estimators", "draws", "budget", "level"])


def budget_text(ref: dict) -> str:
    """A Monte Carlo reference's budget as set, and what ended its stream: "240 s; ended at precision 2%"."""
    budget = ref.get("budget") if isinstance(ref.get("budget"), dict) else {}
    if budget.get("draws") is not None:
        return f"{budget['draws']:,} draws"
    if budget.get("seconds") is None:
        return ""
    text = f"{budget['seconds']:g} s"
    if budget.get("precision") is not None:
        text += (f"; ended at precision {budget['precision']:.0%}" if ref.get("stopped_by") == "precision"
                 else f"; precision {budget['precision']:.0%} not reached")
    return text


def trends_section(run: RunResults, ctx: dict) -> list[Section]:
    """The report section (``reports.sections.RUN_SECTIONS``): which reference scored each problem, and the
    trend figures of every axis that has a family; empty for runs without one."""
    if run.tasks.empty or run.scores.empty:
        return []
    rid = ctx["rid"]
    frame = trend_frame(run)
    fams = trend_families(frame) if not frame.empty else {}
    kinds = set(reference_kinds(run).values())
    blocks: list = []
    if "mc" in kinds:
        blocks.append(Text("Some scores of this run are against the Monte Carlo reference (hollow markers): an "
                           "unbiased estimate of the gradient, not the exact one. Each such value comes with a "
                           "confidence interval (delete-one-batch jackknife) that includes the reference's own "
                           "noise; an interval reaching 0 cannot tell the estimator from an unbiased one."))
        blocks.append(Table(f"{rid}_references", "Reference of each problem", reference_table(run)))
    for axis, fam in fams.items():
        fixed = ", ".join(f"{a} {fam[a].iloc[0]:g}" for a in AXES if a != axis)
        for metric, what in (("rel_bias", "relative bias ‖E ĝ − g‖/‖g‖"), ("rel_rmse", "relative RMSE of one draw")):
            mc = " (hollow: Monte Carlo reference)" if (fam["reference"] == "mc").any() else ""
            blocks.append(Plot(f"{rid}_trend_{axis}_{metric}", f"{what} against {axis} ({fixed}); band: "
                               f"confidence interval{mc}",
                               lambda f=fam, a=axis, m=metric: trend_figure(f, a, m, ctx["styles"])))
        blocks.append(Table(f"{rid}_trend_{axis}", f"Trend against {axis} (tidy)", fam, show=False))
    if not blocks:
        return []
    return [Section("Trends across problems", f"{rid}_trends", blocks, level=3)]
