"""``sbn-bench show RUN``: a score table (problem x estimator rows, parameter groups as columns)."""

from __future__ import annotations

import argparse

import pandas as pd

from bench.store import DEFAULT_DB, Store
from estimators.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("show", help="print a score table of a run")
    p.add_argument("run_ref", metavar="RUN", help="run id, unique prefix, or 'latest'")
    p.add_argument("--metric", help="metric to show (default: rel_rmse_emp, or rel_rmse where the run has no "
                                    "empirical one: Monte Carlo scores)")
    p.add_argument("--M", type=int, default=1, help="sample size for M-dependent metrics (default 1)")
    p.add_argument("--db", default=DEFAULT_DB, help="results database")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with Store(args.db) as store:
        run_id = store.resolve(args.run_ref, ("accuracy", "training"))  # latest: a run with scores or curves
        scores, tasks, curves = store.scores(run_id), store.tasks(run_id), store.curves(run_id)
        config = store.load_run(run_id).manifest.get("config", {})
    if scores.empty and not curves.empty:
        return _show_training(run_id, curves, tasks, args.metric)
    if scores.empty and tasks.empty:
        raise InputError(f"run {run_id} has no scored tasks (a timing run? see 'sbn-bench runs')")
    if scores.empty:  # every task failed: say so, with the reasons
        print(f"run {run_id}: no scores; {len(tasks)} task(s), none done")
        _print_failed(tasks)
        return 0
    if args.metric is None:
        args.metric = "rel_rmse_emp" if (scores.metric == "rel_rmse_emp").any() else "rel_rmse"
    sel = scores[scores.metric == args.metric]
    if sel.empty:
        raise InputError(f"run {run_id} has no metric {args.metric!r} (metrics: {', '.join(sorted(scores.metric.unique()))})")
    if (sel.M > 0).any():
        sel = sel[sel.M == args.M]
        if sel.empty:
            raise InputError(f"metric {args.metric!r} was not scored at M = {args.M}")
    ci = sel["lo"].notna() & sel["hi"].notna()
    if ci.any():  # scores with intervals (Monte Carlo, bias): each cell is "value [lo, hi]"
        sel = sel.assign(value=[f"{v:.4g} [{lo:.4g}, {hi:.4g}]" if ok else f"{v:.4g}"
                                for v, lo, hi, ok in zip(sel["value"], sel["lo"], sel["hi"], ci)])
    table = sel.pivot_table(index=["problem", "estimator"], columns="group", values="value", sort=False,
                            aggfunc="first")
    table = table.loc[_planned_order(table.index, config)]
    cols = [c for c in table.columns if c != "all"] + (["all"] if "all" in table.columns else [])
    print(f"run {run_id}: {args.metric}" + (f" at M = {args.M}" if (sel.M > 0).any() else "")
          + (" (value [95% interval])" if ci.any() else ""))
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.float_format", "{:.4g}".format):
        print(table[cols].to_string())
    _print_failed(tasks)
    return 0


def _planned_order(index, config: dict) -> list:
    """The (problem, estimator) rows in the order the run's configuration lists them (the store keeps them in
    completion order, which differs between a resumed or parallel run and a plain one); others after, sorted."""
    def rank(items, value):
        items = list(items or ())
        return (items.index(value), "") if value in items else (len(items), str(value))
    return sorted(index, key=lambda pe: (rank(config.get("problems"), pe[0]), rank(config.get("estimators"), pe[1])))


def _print_failed(tasks: pd.DataFrame) -> None:
    for _, t in tasks[tasks.status != "done"].iterrows():
        print(f"FAILED {t.problem} / {t.estimator}: {t.error}")


def _show_training(run_id: str, curves: pd.DataFrame, tasks: pd.DataFrame, metric: str | None = None) -> int:
    """A training run: each task's per-epoch metrics at its last epoch (the curves: ``export``); ``metric``
    keeps that one (an unknown one is refused, as for an accuracy run)."""
    per_epoch = curves[curves.epoch > 0]
    if per_epoch.empty:
        raise InputError(f"training run {run_id} has no per-epoch records yet")
    if metric is not None:
        if not (per_epoch.metric == metric).any():
            raise InputError(f"run {run_id} has no metric {metric!r} (metrics: "
                             f"{', '.join(sorted(per_epoch.metric.unique()))})")
        per_epoch = per_epoch[per_epoch.metric == metric]
    last = per_epoch.sort_values("epoch").groupby(["problem", "estimator", "metric"], sort=False).tail(1)
    table = last.pivot_table(index=["problem", "estimator"], columns="metric", values="value", sort=False)
    table.insert(0, "epoch", last.groupby(["problem", "estimator"], sort=False).epoch.max())
    print(f"run {run_id}: training, each metric at the last epoch (per-epoch curves: sbn-bench export)")
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.float_format", "{:.4g}".format):
        print(table.to_string())
    _print_failed(tasks)
    return 0
