"""Report tables built from a run's tidy rows: manifest, tasks, ranking per problem, failures, timings.

Every table is a plain DataFrame of stored values (no statistics are recomputed). Columns may be a
two-level MultiIndex (e.g. ``("rel. RMSE, M=1", "layer0")``); the exporters flatten it for CSV and
Markdown. The ranking orders a problem's estimators by the relative RMSE of one draw,
``sqrt(|b|^2 + tr Var)/|g|`` for the whole gradient (group ``all``); failed tasks stay in the table,
last, marked failed with their error.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .results import RunResults, group_order

__all__ = ["task_labels", "value_table", "manifest_table", "tasks_table", "ranking_table", "failed_table",
           "timing_table", "problems", "MANIFEST_KEYS"]

MANIFEST_KEYS = ("run_id", "label", "preset", "created_utc", "command", "git_commit", "git_dirty", "package_version",
                 "config_hash", "root_seed", "python", "torch", "numpy", "device", "device_name", "cpu_model",
                 "threads", "config")
_RMSE = "rel. RMSE, M=1"
_BIAS = "bias plateau |b|/|g|"


def problems(run: RunResults) -> list[str]:
    """The run's problems in first-appearance order of its tasks (a problem whose tasks all failed included)."""
    return list(dict.fromkeys(run.tasks["problem"].astype(str)))


def task_labels(tasks: pd.DataFrame) -> dict[str, str]:
    """A display label per task key: the estimator spec, plus device/dtype where a problem has several."""
    labels = {}
    for _, grp in tasks.groupby("problem", sort=False):
        several = grp.groupby("estimator")["task_key"].transform("size") > 1
        for (_, row), many in zip(grp.iterrows(), several, strict=True):
            extra = f" [{row['device']} {row['dtype']}]".replace("  ", " ") if many else ""
            labels[row["task_key"]] = f"{row['estimator']}{extra}"
    return labels


def value_table(run: RunResults, problem: str, metric: str, m: int | None = None) -> pd.DataFrame:
    """``task_key x group`` values of one metric (at one M for M-dependent metrics)."""
    s = run.scores
    sel = s[(s["problem"] == problem) & (s["metric"] == metric)]
    if m is not None:
        sel = sel[sel["M"] == m]
    if sel.empty:
        return pd.DataFrame()
    return sel.pivot_table(index="task_key", columns="group", values="value", aggfunc="first", sort=False)


def manifest_table(run: RunResults) -> pd.DataFrame:
    """The manifest as ``field, value`` rows: known keys first in a fixed order, then any others sorted."""
    man = run.manifest
    keys = [k for k in MANIFEST_KEYS if k in man] + sorted(k for k in man if k not in MANIFEST_KEYS)
    rows = []
    for k in keys:
        v = man[k]
        if isinstance(v, (dict, list, tuple)):
            v = json.dumps(v, sort_keys=True, default=str)
        rows.append((k, "" if v is None else str(v)))
    return pd.DataFrame(rows, columns=["field", "value"])


def tasks_table(run: RunResults) -> pd.DataFrame:
    """One row per task: problem, estimator, device, dtype, draws, seconds, status (and its error)."""
    t = run.tasks
    out = t[["problem", "estimator", "device", "dtype", "draws", "seconds"]].copy()
    out["status"] = np.where(t["status"] == "failed", "failed: " + t["error"].astype(str), t["status"])
    return out.reset_index(drop=True)


def failed_table(run: RunResults) -> pd.DataFrame:
    """The failed tasks with their errors (empty when none failed)."""
    t = run.tasks[run.tasks["status"] == "failed"]
    return t[["problem", "estimator", "device", "dtype", "error"]].reset_index(drop=True)


def ranking_table(run: RunResults, problem: str) -> pd.DataFrame:
    """Estimators of one problem ranked by the overall relative RMSE at M = 1 (failed tasks last, unranked).

    Columns: rank, estimator, unbiased, status; relative RMSE at M = 1 and the relative bias (the
    RMSE plateau as M grows) per group; tr Var and mean cosine at M = 1 of the whole gradient;
    seconds and loss evaluations per draw; work-normalised variance (tr Var x seconds per draw,
    tr Var x loss evaluations per draw).
    """
    tasks = run.tasks[run.tasks["problem"] == problem]
    labels = task_labels(tasks)
    rmse = value_table(run, problem, "rel_rmse", 1)
    if rmse.empty:
        rmse = value_table(run, problem, "rel_rmse_emp", 1)
    bias = value_table(run, problem, "rel_bias")
    groups = group_order(list(rmse.columns) + list(bias.columns))
    layers = [g for g in groups if g != "all"]
    overall = {m: value_table(run, problem, m, 1 if m == "cos_mean" else None)
               for m in ("trace_var", "cos_mean", "var_x_seconds", "var_x_loss_evals")}
    cols, data = [], {}

    def put(top, sub, values):
        cols.append((top, sub))
        data[(top, sub)] = values

    keys = list(tasks["task_key"])

    def pick(frame, group):
        if frame.empty or group not in frame.columns:
            return [np.nan] * len(keys)
        return [frame[group].get(k, np.nan) for k in keys]

    put("", "estimator", [labels[k] for k in keys])
    put("", "unbiased", ["yes" if bool(u) else "no" if u is not None and u == u else "" for u in tasks["unbiased"]])
    put("", "status", [s if s == "done" else f"failed: {e}" for s, e in zip(tasks["status"], tasks["error"])])
    for g in groups:
        put(_RMSE, g, pick(rmse, g))
    for g in layers + (["all"] if "all" in groups else []):
        put(_BIAS, g, pick(bias, g))
    put("whole gradient", "tr Var", pick(overall["trace_var"], "all"))
    put("whole gradient", "cosine, M=1", pick(overall["cos_mean"], "all"))
    put("cost per draw", "seconds", list(tasks["seconds_per_draw"].astype(float)))
    put("cost per draw", "loss evals", list(tasks["loss_evals_per_draw"].astype(float)))
    put("work-normalised tr Var", "x seconds", pick(overall["var_x_seconds"], "all"))
    put("work-normalised tr Var", "x loss evals", pick(overall["var_x_loss_evals"], "all"))
    df = pd.DataFrame(data, columns=pd.MultiIndex.from_tuples(cols))
    sort_col = (_RMSE, "all") if (_RMSE, "all") in df.columns else (_RMSE, layers[0]) if layers else None
    failed = (tasks["status"] != "done").to_numpy()
    key = df[sort_col].to_numpy(dtype=float) if sort_col else np.zeros(len(df))
    order = np.lexsort((np.arange(len(df)), np.where(np.isnan(key), np.inf, key), failed))
    df = df.iloc[order].reset_index(drop=True)
    unranked = failed[order] | np.isnan(key[order])  # failed, or no score to rank by
    ranks = np.where(unranked, np.nan, np.cumsum(~unranked).astype(float))
    df.insert(0, ("", "rank"), pd.array(ranks, dtype="Int64"))
    return df


def timing_table(run: RunResults) -> pd.DataFrame:
    """Timing rows (items/s = items / median time, IQR, ratio to a reference, % of peak); empty columns dropped."""
    t = run.timings
    if t.empty:
        return pd.DataFrame()
    cols = ["kernel", "variant", "device", "dtype", "shape", "unit", "items_per_s", "median_s", "iqr_s", "ratio",
            "ratio_to", "pct_peak", "peak_kind"]
    out = t[cols].copy()
    keep = [c for c in cols if not (out[c].isna() | (out[c].astype(str) == "")).all() or c in cols[:2]]
    names = {"items_per_s": "items/s", "median_s": "median (s)", "iqr_s": "IQR (s)", "ratio_to": "ratio to",
             "pct_peak": "% of peak", "peak_kind": "peak"}
    return out[keep].rename(columns=names).reset_index(drop=True)
