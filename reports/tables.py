"""Report tables built from a run's tidy rows: manifest, tasks, ranking per problem, failures, timings.

Every table is a plain DataFrame of stored values (no statistics are recomputed). Columns may be a
two-level MultiIndex (e.g. ``("rel. RMSE, M=1", "layer0")``); the exporters flatten it for CSV and
Markdown. The ranking orders a problem's estimators by an equal-weight summary over parameter
groups, the geometric mean of the per-group relative RMSE of one draw (so the head, whose gradient
is the largest, does not decide alone), and ranks them within each group too; failed tasks stay in
the table, last, marked failed with their error. How to read it: ``docs/howto/read-report.md#ranking``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .export import NA, fmt_value
from .results import RunResults, group_order

__all__ = ["task_labels", "value_table", "manifest_table", "tasks_table", "ranking_table", "ranking_caption",
           "cost_noisy", "bias_text", "zero_if_numerical", "work_budget",
           "BUDGET_DRAWS",
           "failed_table",
           "timing_table", "problems", "MANIFEST_KEYS"]

MANIFEST_KEYS = ("run_id", "label", "preset", "created_utc", "command", "git_commit", "git_dirty", "package_version",
                 "config_hash", "root_seed", "python", "torch", "numpy", "device", "device_name", "cpu_model",
                 "threads", "config")
_RMSE = "rel. RMSE, M=1"
_BIAS = "rel. bias |b|/|g| [95% CI]"
_GROUP_RANK = "rank in group (rel. RMSE, M=1)"
SUMMARY = "equal-weight score (geo-mean over groups)"
SCORE_M1 = "rel. RMSE, M=1"
SCORE_BUDGET = "rel. RMSE at budget"
#: A relative sd of one draw below this is float64 round-off of an exactly deterministic estimator: shown as 0.
ZERO_SD = 1e-12
#: The work budget of the ranking's second score: this many draws of the problem's median-cost estimator.
BUDGET_DRAWS = 100


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


def _bound_table(run: RunResults, problem: str, metric: str, column: str) -> pd.DataFrame:
    """``task_key x group`` of a metric's stored CI bound (``lo`` or ``hi``)."""
    s = run.scores
    sel = s[(s["problem"] == problem) & (s["metric"] == metric)]
    if sel.empty:
        return pd.DataFrame()
    return sel.pivot_table(index="task_key", columns="group", values=column, aggfunc="first", sort=False,
                           dropna=False)


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
    """One row per task: problem, estimator, the code that made it (``estimator_origin``: version and
    source digest, distribution version or file hash), device, dtype, draws, seconds, status."""
    t = run.tasks
    out = t[["problem", "estimator", "device", "dtype", "draws", "seconds"]].copy()
    if "estimator_origin" in t.columns:
        out.insert(2, "code", t["estimator_origin"].fillna("").astype(str).map(_short_origin))
    out["status"] = np.where(t["status"] == "failed", "failed: " + t["error"].astype(str), t["status"])
    return out.reset_index(drop=True)


def _short_origin(identity: str) -> str:
    """``builtin:sbn-bench@0.1.0+src.9f2f...`` -> ``sbn-bench 0.1.0+src.9f2f...``; a file's path cut to its name."""
    kind, _, rest = identity.partition(":")
    where, _, version = rest.rpartition("@")
    if kind == "file":
        return f"{where.rsplit('/', 1)[-1]} sha256 {version[:12]}"
    return f"{where} {version}".strip() if identity else ""


def failed_table(run: RunResults) -> pd.DataFrame:
    """The failed tasks with their errors (empty when none failed)."""
    t = run.tasks[run.tasks["status"] == "failed"]
    return t[["problem", "estimator", "device", "dtype", "error"]].reset_index(drop=True)


def cost_noisy(tasks: pd.DataFrame) -> list[bool]:
    """Per task: its stored cost measurement says it is noisy (``facts["cost"]["noisy"]``); missing keys: no."""
    if "facts" not in tasks.columns:
        return [False] * len(tasks)
    out = []
    for f in tasks["facts"]:
        if isinstance(f, str):
            try:
                f = json.loads(f)
            except ValueError:
                f = {}
        cost = f.get("cost") if isinstance(f, dict) else None
        out.append(bool(cost.get("noisy")) if isinstance(cost, dict) else False)
    return out


def zero_if_numerical(trace_var: float, grad_norm: float) -> float:
    """``tr Var`` with float64 round-off shown as exactly 0 (a relative sd ``sqrt(tr Var)/|g|`` under 1e-12)."""
    if trace_var == trace_var and grad_norm == grad_norm and grad_norm > 0 and trace_var >= 0 \
            and np.sqrt(trace_var) / grad_norm < ZERO_SD:
        return 0.0
    return trace_var


def bias_text(value: float, lo: float, hi: float) -> str:
    """A relative bias with its 95% CI, ``0.052 [0.049, 0.055]``; one whose CI reaches 0 as ``≈0 (< hi)``."""
    if value != value:
        return NA
    if lo == lo and hi == hi:
        if not lo > 0:
            return f"≈0 (< {fmt_value(hi)})"
        return f"{fmt_value(value)} [{fmt_value(lo)}, {fmt_value(hi)}]"
    return fmt_value(value)


def _geo(rows: np.ndarray) -> np.ndarray:
    """Geometric mean along axis 1 (NaN where any group is missing; 0 where any group is exactly 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.exp(np.mean(np.log(rows), axis=1))


def work_budget(tasks: pd.DataFrame) -> float:
    """The ranking's work budget: ``BUDGET_DRAWS`` draws of the median-cost finished estimator (NaN if none timed)."""
    spd = tasks.loc[tasks["status"] == "done", "seconds_per_draw"].astype(float)
    spd = spd[spd > 0]
    return BUDGET_DRAWS * float(spd.median()) if len(spd) else np.nan


def _seconds(x: float) -> str:
    return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"


def ranking_table(run: RunResults, problem: str) -> pd.DataFrame:
    """Estimators of one problem ranked by an equal-weight summary over parameter groups (failed tasks last).

    The summary (``SCORE_M1``) is the geometric mean over the parameter groups (``all`` excluded) of
    the relative RMSE of one draw, so a group with a large gradient (the head) cannot dominate;
    ``SCORE_BUDGET`` is the same mean for the average of as many draws as fit in the work budget
    (:func:`work_budget`: ``BUDGET_DRAWS`` draws of the median-cost estimator; at least one draw
    each), from the analytic ``RMSE^2 = |b|^2 + tr Var / M``; the rank by that score is shown beside
    the rank. Then a rank per group, the relative RMSE at M = 1 per group (``all``: the whole
    gradient, for reference), the relative bias with its 95% CI per group, tr Var (round-off shown
    as 0) and the mean cosine of the whole gradient, cost per draw and
    work-normalised variance. An estimator whose stored cost measurement is noisy is marked ``†``;
    ``df.attrs["notes"]`` then holds the footnote and ``df.attrs["budget_s"]`` the budget.
    """
    tasks = run.tasks[run.tasks["problem"] == problem]
    labels = task_labels(tasks)
    rmse = value_table(run, problem, "rel_rmse", 1)
    if rmse.empty:
        rmse = value_table(run, problem, "rel_rmse_emp", 1)
    bias = value_table(run, problem, "rel_bias")
    bias_lo, bias_hi = (_bound_table(run, problem, "rel_bias", c) for c in ("lo", "hi"))
    tv_g, gn_g = value_table(run, problem, "trace_var"), value_table(run, problem, "grad_norm")
    groups = group_order(list(rmse.columns) + list(bias.columns))
    layers = [g for g in groups if g != "all"]
    parts = layers or (["all"] if "all" in groups else [])
    overall = {m: value_table(run, problem, m, 1 if m == "cos_mean" else None)
               for m in ("trace_var", "cos_mean", "var_x_seconds", "var_x_loss_evals", "grad_norm")}
    cols, data = [], {}

    def put(top, sub, values):
        cols.append((top, sub))
        data[(top, sub)] = values

    keys = list(tasks["task_key"])

    def pick(frame, group):
        if frame.empty or group not in frame.columns:
            return np.full(len(keys), np.nan)
        return np.array([frame[group].get(k, np.nan) for k in keys], dtype=float)

    noisy = cost_noisy(tasks)
    budget = work_budget(tasks)
    spd = tasks["seconds_per_draw"].astype(float).to_numpy()
    per_group = np.column_stack([pick(rmse, g) for g in parts]) if parts else np.full((len(keys), 1), np.nan)
    done = (tasks["status"] == "done").to_numpy()
    # as many whole draws as fit in the budget, and at least one (an estimator slower than the budget gets one)
    draws_in_budget = np.where(done & (spd > 0),
                               np.maximum(np.floor(budget / np.where(spd > 0, spd, 1.0) + 1e-9), 1.0), np.nan)
    at_budget = []
    for g in parts:
        b, tv, gn = pick(bias, g), pick(tv_g, g), pick(gn_g, g)
        with np.errstate(divide="ignore", invalid="ignore"):
            at_budget.append(np.sqrt(b**2 + tv / gn**2 / draws_in_budget))
    at_budget = np.column_stack(at_budget) if at_budget else np.full((len(keys), 1), np.nan)
    score = _geo(per_group)
    put("", "estimator", [labels[k] + (" †" if n else "") for k, n in zip(keys, noisy)])
    put("", "unbiased", ["yes" if bool(u) else "no" if u is not None and u == u else "" for u in tasks["unbiased"]])
    put("", "status", [s if s == "done" else f"failed: {e}" for s, e in zip(tasks["status"], tasks["error"])])
    put(SUMMARY, SCORE_M1, score)
    put(SUMMARY, SCORE_BUDGET, _geo(at_budget))
    put(SUMMARY, "draws in budget", pd.array([int(d) if d == d else None for d in draws_in_budget], dtype="Int64"))
    for j, g in enumerate(parts if len(parts) > 1 else []):
        v = np.where(done, per_group[:, j], np.nan)
        r = pd.Series(v).rank(method="min").to_numpy()
        put(_GROUP_RANK, g, pd.array([int(x) if x == x else None for x in r], dtype="Int64"))
    for g in groups:
        put(_RMSE, "whole" if g == "all" else g, pick(rmse, g))
    for g in layers + (["all"] if "all" in groups else []):
        put(_BIAS, "whole" if g == "all" else g,
            [bias_text(v, a, c) for v, a, c in zip(pick(bias, g), pick(bias_lo, g), pick(bias_hi, g))])
    tv_all = np.array([zero_if_numerical(v, n) for v, n in
                       zip(pick(overall["trace_var"], "all"), pick(overall["grad_norm"], "all"))])
    put("whole gradient", "tr Var", tv_all)
    put("whole gradient", "cosine, M=1", pick(overall["cos_mean"], "all"))
    put("cost per draw", "seconds", spd)
    put("cost per draw", "loss evals", tasks["loss_evals_per_draw"].astype(float).to_numpy())
    for sub, metric in (("x seconds", "var_x_seconds"), ("x loss evals", "var_x_loss_evals")):
        put("work-normalised tr Var", sub, np.where(tv_all == 0, 0.0, pick(overall[metric], "all")))
    df = pd.DataFrame(data, columns=pd.MultiIndex.from_tuples(cols))
    failed = ~done
    key = score
    order = np.lexsort((np.arange(len(df)), np.where(np.isnan(key), np.inf, key), failed))
    df = df.iloc[order].reset_index(drop=True)
    unranked = failed[order] | np.isnan(key[order])  # failed, or no score to rank by
    ranks = np.where(unranked, np.nan, np.cumsum(~unranked).astype(float))
    df.insert(0, ("", "rank"), pd.array(ranks, dtype="Int64"))
    at = np.where(failed[order], np.nan, df[(SUMMARY, SCORE_BUDGET)].to_numpy(dtype=float))
    df.insert(1, ("", "rank at budget"),
              pd.array([int(x) if x == x else None for x in pd.Series(at).rank(method="min")], dtype="Int64"))
    df.attrs["budget_s"] = budget
    df.attrs["groups"] = parts
    df.attrs["notes"] = ["† cost per draw measured as noisy: its seconds and work-normalised values are "
                         "uncertain."] if any(noisy) else []
    return df


def ranking_caption(problem: str, df: pd.DataFrame) -> str:
    """What the ranking table ranks by, in words (for the report caption)."""
    groups = df.attrs.get("groups") or []
    budget = df.attrs.get("budget_s", np.nan)
    what = (f"the geometric mean over the {len(groups)} parameter groups ({', '.join(groups)}) of the relative RMSE"
            if len(groups) > 1 else "the relative RMSE")
    text = (f"{problem}: estimators ranked by {what} of one draw (each group weighs the same; 'rank at budget' "
            "ranks by the same mean at the work budget); "
            f"'at budget' = the same mean for the average of as many draws as fit in "
            f"{_seconds(budget) if budget == budget else 'the budget'} ({BUDGET_DRAWS} draws of the median-cost "
            "estimator; at least one each); "
            "bias = relative bias |b|/|g| [95% CI], ≈0 (< upper bound) where the CI reaches 0")
    return text


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
