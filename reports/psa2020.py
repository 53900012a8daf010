"""This run against the PSA paper's published figure values (``psa2020`` runs;
``docs/protocols.md#published-values``).

For each checkpoint (chk-100, chk-2000), method, layer group and M of the published grid, the
comparison holds this run's value, the paper's value, their difference (run - paper) and ratio
(run / paper). The run's relative RMSE is the empirical one over non-overlapping groups of M draws
(``rel_rmse_emp``, the paper's protocol) when stored, else the analytic ``rel_rmse``; the cosine is
the mean over groups (``cos_mean``). Relative RMSE spans orders of magnitude, so its tables show the
ratio; cosines are bounded, so theirs show the difference. A method not run, or whose task failed,
keeps its row with the run value empty and the task's status.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .paper_values import CHECKPOINTS, GROUPS, METHODS, PROBLEM_PREFIX, paper_table
from .results import RunResults

__all__ = ["is_psa2020", "method_of", "comparison", "comparison_wide"]

def is_psa2020(run: RunResults) -> bool:
    """A run made with the ``psa2020`` preset (or one holding the paper's checkpoint problems)."""
    if run.manifest.get("preset") == "psa2020":
        return True
    return any(str(p).startswith(PROBLEM_PREFIX) for p in run.tasks["problem"])


def method_of(name: str, options: str | dict | None) -> str | None:
    """The paper's method a task is (:data:`~reports.paper_values.METHODS`), from its stored estimator
    name and options (canonical JSON or a mapping), or ``None``."""
    opts = json.loads(options) if isinstance(options, str) else (options or {})
    for method, (want, required) in METHODS.items():
        if name == want and all(opts.get(k) == v for k, v in required.items()):
            return method
    return None


def task_methods(tasks: pd.DataFrame) -> list[str | None]:
    """:func:`method_of` for every task row."""
    opts = tasks["estimator_options"] if "estimator_options" in tasks else [None] * len(tasks)
    return [method_of(n, o) for n, o in zip(tasks["estimator_name"], opts)]

def _run_values(run: RunResults, problem: str, metric: str) -> tuple[pd.DataFrame, str]:
    s = run.scores[run.scores["problem"] == problem]
    used = metric
    if metric == "rel_rmse" and (s["metric"] == "rel_rmse_emp").any():
        used = "rel_rmse_emp"
    return s[s["metric"] == used], used


def comparison(run: RunResults) -> pd.DataFrame:
    """Tidy side-by-side table: checkpoint, method, estimator, group, metric, M, paper, run, run_metric, status,
    difference, ratio (one row per published cell)."""
    paper = paper_table()
    tasks = run.tasks
    out = []
    for chk in CHECKPOINTS:
        problem = PROBLEM_PREFIX + chk
        here = tasks[tasks["problem"] == problem]
        if here.empty:
            continue
        by_method = {}
        ordered = here.sort_values("status", kind="stable")  # "done" before "failed"
        for (_, row), method in zip(ordered.iterrows(), task_methods(ordered)):
            if method is not None:
                by_method.setdefault(method, row)
        for metric in ("rel_rmse", "cos_mean"):
            values, used = _run_values(run, problem, metric)
            lookup = {(k, g, int(m)): v for k, g, m, v in
                      values[["task_key", "group", "M", "value"]].itertuples(index=False)}
            part = paper[(paper["checkpoint"] == chk) & (paper["metric"] == metric)].copy()
            runs, status = [], []
            for method, group, m in part[["method", "group", "M"]].itertuples(index=False):
                row = by_method.get(method)
                if row is None:
                    runs.append(np.nan)
                    status.append("not run")
                    continue
                runs.append(lookup.get((row["task_key"], group, int(m)), np.nan))
                status.append("done" if row["status"] == "done" else f"failed: {row['error']}")
            part["run"] = runs
            part["run_metric"] = used
            part["status"] = status
            out.append(part)
    if not out:
        return pd.DataFrame(columns=["checkpoint", "method", "estimator", "group", "metric", "M", "paper", "run",
                                     "run_metric", "status", "difference", "ratio"])
    df = pd.concat(out, ignore_index=True)
    df["difference"] = df["run"] - df["paper"]
    with np.errstate(divide="ignore", invalid="ignore"):
        df["ratio"] = np.where(df["paper"] != 0, df["run"] / df["paper"], np.nan)
    return df


def comparison_wide(comp: pd.DataFrame, checkpoint: str, metric: str) -> pd.DataFrame:
    """One checkpoint and metric as a display table: rows (layer, method), columns M x (run, paper, ratio|diff)."""
    part = comp[(comp["checkpoint"] == checkpoint) & (comp["metric"] == metric)]
    if part.empty:
        return pd.DataFrame()
    third = "ratio" if metric == "rel_rmse" else "diff"
    cols = [("", "layer"), ("", "method"), ("", "status")]
    data = {c: [] for c in cols}
    ms = sorted(part["M"].unique())
    for m in ms:
        for what in ("run", "paper", third):
            cols.append((f"M={m}", what))
            data[(f"M={m}", what)] = []
    for (method, group), grp in part.groupby(["method", "group"], sort=False):
        data[("", "layer")].append(group)
        data[("", "method")].append(method)
        data[("", "status")].append(grp["status"].iloc[0])
        by_m = grp.set_index("M")
        for m in ms:
            for what in ("run", "paper", third):
                data[(f"M={m}", what)].append(float(by_m["difference" if what == "diff" else what].get(m, np.nan)))
    df = pd.DataFrame(data, columns=pd.MultiIndex.from_tuples(cols))
    order = {g: i for i, g in enumerate(GROUPS)}
    meth = {m: i for i, m in enumerate(METHODS)}
    key = [(order.get(g, 99), meth.get(m, 99)) for m, g in zip(df[("", "method")], df[("", "layer")])]
    return df.iloc[sorted(range(len(df)), key=key.__getitem__)].reset_index(drop=True)
