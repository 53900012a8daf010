"""The data contract between the results store and the reports: :class:`RunResults` and its checks.

A run is four tidy tables, nothing else: the ``manifest`` (a dict), one ``tasks`` row per
(problem, estimator) task, one ``scores`` row per value (``task_key, problem, estimator, group,
metric, M, value, lo, hi``) and optional ``timings`` rows. Reports compute nothing statistical
from draws: every number shown is a stored value or a ratio of stored values, so rendering is
cheap (no recomputation) and the reports package never imports torch, bench or estimators.

Bad input raises :class:`ReportError` (a ``ValueError``) with a one-line message; the CLI turns it
into one line on stderr and exit code 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["RunResults", "ReportError", "validate", "TASK_COLUMNS", "SCORE_COLUMNS", "TIMING_COLUMNS",
           "CURVE_COLUMNS", "group_order", "run_id", "slug"]

TASK_COLUMNS = ("task_key", "problem", "estimator", "estimator_name", "unbiased", "device", "dtype", "draws",
                "seed", "status", "error", "seconds", "seconds_per_draw", "layer_evals", "head_evals",
                "backward_passes", "loss_evals_per_draw")
SCORE_COLUMNS = ("task_key", "problem", "estimator", "group", "metric", "M", "value", "lo", "hi")
TIMING_COLUMNS = ("kernel", "variant", "device", "dtype", "shape", "unit", "items_per_s", "median_s", "iqr_s",
                  "ratio", "ratio_to", "pct_peak", "peak_kind")
_REQUIRED_TASK = ("task_key", "problem", "estimator", "status")
_REQUIRED_SCORE = ("task_key", "problem", "estimator", "group", "metric", "M", "value")
CURVE_COLUMNS = ("task_key", "problem", "estimator", "epoch", "metric", "value")
_STATUSES = {"done", "failed"}


class ReportError(ValueError):
    """Input the reports refuse (an empty run, missing columns, an unknown format): a one-line message."""


@dataclass
class RunResults:
    """One stored run: ``manifest`` (dict), ``tasks``, ``scores`` (tidy), ``timings`` (may be empty) and, for
    training runs, ``curves`` (tidy ``task_key, problem, estimator, epoch, metric, value`` rows; None or empty
    otherwise)."""

    manifest: dict
    tasks: pd.DataFrame
    scores: pd.DataFrame
    timings: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(TIMING_COLUMNS)))
    curves: pd.DataFrame | None = None


def run_id(run: RunResults) -> str:
    """The run's id from its manifest (``"run"`` when the manifest has none)."""
    return str(run.manifest.get("run_id") or "run")


def slug(text: str) -> str:
    """A file-name-safe version of ``text`` (``psa-2-5-5-5@chk-100`` -> ``psa-2-5-5-5_chk-100``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def group_order(groups) -> list[str]:
    """Parameter groups in network order: ``layer0, layer1, ..., layer10, head``, then others, ``all`` last."""

    def key(g: str):
        m = re.fullmatch(r"layer(\d+)", g)
        if m:
            return (0, int(m.group(1)), g)
        return (1 if g == "head" else 3 if g == "all" else 2, 0, g)

    return sorted({str(g) for g in groups}, key=key)


def _missing(df: pd.DataFrame, required, what: str, rid: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ReportError(f"run {rid}: {what} is a {type(df).__name__}, not a pandas DataFrame")
    lost = [c for c in required if c not in df.columns]
    if lost:
        raise ReportError(f"run {rid}: {what} table lacks column(s) {', '.join(lost)}")


def validate(run: RunResults) -> RunResults:
    """Check a run against the contract and return a normalised copy (missing optional columns added as NaN).

    Raises :class:`ReportError` for a run without tasks, missing required columns, unknown task
    statuses or score rows whose task is not in the tasks table (so nothing is silently dropped).
    """
    if not isinstance(run, RunResults):
        raise ReportError(f"expected RunResults, got {type(run).__name__}")
    if not isinstance(run.manifest, dict):
        raise ReportError("run manifest is not a dict")
    rid = run_id(run)
    _missing(run.tasks, _REQUIRED_TASK, "tasks", rid)
    _missing(run.scores, _REQUIRED_SCORE, "scores", rid)
    timings = run.timings if run.timings is not None else pd.DataFrame()
    _missing(timings, (), "timings", rid)
    if run.tasks.empty and timings.empty:
        raise ReportError(f"run {rid} is empty: it has no tasks and no timings")
    tasks = run.tasks.copy()
    for col in TASK_COLUMNS:
        if col not in tasks.columns:
            tasks[col] = "" if col in ("error", "estimator_name", "device", "dtype") else np.nan
    tasks["status"] = tasks["status"].astype(str)
    bad = sorted(set(tasks["status"]) - _STATUSES)
    if bad:
        raise ReportError(f"run {rid}: unknown task status {bad[0]!r} (expected done or failed)")
    tasks["error"] = tasks["error"].fillna("").astype(str)
    tasks["estimator_name"] = tasks["estimator_name"].fillna("").astype(str)
    tasks.loc[tasks["estimator_name"] == "", "estimator_name"] = tasks["estimator"].astype(str)
    if tasks["task_key"].duplicated().any():
        dup = tasks.loc[tasks["task_key"].duplicated(), "task_key"].iloc[0]
        raise ReportError(f"run {rid}: task key {dup!r} appears twice in the tasks table")
    scores = run.scores.copy()
    for col in ("lo", "hi"):
        if col not in scores.columns:
            scores[col] = np.nan
    orphans = sorted(set(scores["task_key"]) - set(tasks["task_key"]))
    if orphans:
        raise ReportError(f"run {rid}: score rows for task {orphans[0]!r}, which is not in the tasks table")
    try:
        scores["M"] = scores["M"].astype("int64")
        scores[["value", "lo", "hi"]] = scores[["value", "lo", "hi"]].astype("float64")
    except (TypeError, ValueError) as exc:
        raise ReportError(f"run {rid}: non-numeric score column ({exc})") from None
    scores["group"] = scores["group"].astype(str)
    timings = timings.copy()
    for col in TIMING_COLUMNS:
        if col not in timings.columns:
            timings[col] = np.nan if col in ("items_per_s", "median_s", "iqr_s", "ratio", "pct_peak") else ""
    curves = getattr(run, "curves", None)
    if curves is not None:
        _missing(curves, CURVE_COLUMNS, "curves", rid)
        curves = curves.reset_index(drop=True)
    return RunResults(dict(run.manifest), tasks.reset_index(drop=True), scores.reset_index(drop=True),
                      timings.reset_index(drop=True), curves)
