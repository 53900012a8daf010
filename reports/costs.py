"""The "Cost per draw" table of a problem: each task's warm, repeated cost measurement as stored.

A task's ``facts["cost"]`` (written by the sweep, ``docs/timing.md#cost-per-draw``) holds the
median and IQR of the seconds per draw, the clock, the threads, the batch, the repeats, the
machine's load around the measurement and a ``noisy`` flag with its reasons.  Tasks stored before
costs were measured (no ``facts`` column, or no ``cost`` in it) show their stored seconds per draw
with "not measured"; failed tasks show "failed".  Nothing is recomputed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .results import RunResults

__all__ = ["cost_table", "cost_caption", "CLOCK_NAMES"]

#: how the report names each clock of ``sbn-bench run --clock`` / ``sbn-bench time --clock``
CLOCK_NAMES = {"wall": "wall clock (synchronised)", "cpu": "process CPU time, one thread"}

_COLUMNS = ["estimator", "s/draw (median)", "IQR (s)", "IQR/median", "repeats", "batch", "clock", "threads",
            "load (1 min)", "cores", "CPU/wall", "accuracy run s/draw", "noisy"]


def _cost(facts) -> dict:
    return facts.get("cost") or {} if isinstance(facts, dict) else {}


def _num(v) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


def _load(c: dict) -> float:
    loads = [_num(c.get(k)) for k in ("load_before", "load_after")]
    loads = [x for x in loads if not math.isnan(x)]
    return max(loads) if loads else math.nan


def _noisy(status: str, c: dict) -> str:
    if status != "done":
        return "failed"
    if not c:
        return "not measured"
    if not c.get("noisy"):
        return "no"
    reasons = c.get("noisy_reasons") or []
    return "yes: " + "; ".join(str(r) for r in reasons) if reasons else "yes"


def cost_table(run: RunResults, problem: str) -> pd.DataFrame:
    """One row per task of ``problem``: median and IQR of the seconds per draw, clock, load, noisy flag.

    Empty when the run has no task of ``problem``.
    """
    t = run.tasks[run.tasks["problem"].astype(str) == problem]
    if t.empty:
        return pd.DataFrame(columns=_COLUMNS)
    facts = t["facts"] if "facts" in t.columns else pd.Series([{}] * len(t), index=t.index)
    rows = []
    for (_, task), f in zip(t.iterrows(), facts, strict=True):
        c = _cost(f)
        done = task["status"] == "done"
        median = _num(c.get("s_per_draw", task.get("seconds_per_draw") if done else None))
        iqr = _num(c.get("iqr_s_per_draw"))
        rows.append({
            "estimator": str(task["estimator"]), "s/draw (median)": median, "IQR (s)": iqr,
            "IQR/median": iqr / median if median > 0 else math.nan,
            "repeats": _num(c.get("runs")), "batch": _num(c.get("batch")),
            "clock": str(c.get("clock", "")) if c.get("measured") else "",
            "threads": _num(c.get("threads")), "load (1 min)": _load(c), "cores": _num(c.get("cores")),
            "CPU/wall": _num(c.get("cpu_wall")), "accuracy run s/draw": _num(c.get("accuracy_run_s_per_draw")),
            "noisy": _noisy(task["status"], c),
        })
    df = pd.DataFrame(rows, columns=_COLUMNS)
    for col in ("repeats", "batch", "threads", "cores"):
        df[col] = pd.array([None if np.isnan(v) else int(v) for v in df[col]], dtype="Int64")
    return df


def cost_caption(problem: str, table: pd.DataFrame) -> str:
    """The table's caption: what the figure is (warm, repeated) and which clock it was read on."""
    clocks = sorted({c for c in table.get("clock", []) if c})
    if len(clocks) == 1:
        clock = f"on the {CLOCK_NAMES.get(clocks[0], clocks[0])}"
    elif clocks:
        clock = "on the clock of each row (" + ", ".join(f"{c}: {CLOCK_NAMES.get(c, c)}" for c in clocks) + ")"
    else:
        clock = "(no task measured it)"
    return (f"{problem}: cost per draw, warm (first call and warm-up excluded): median and IQR over repeats "
            f"{clock}; load = 1-minute load average around the timing; noisy: IQR/median > 0.1, under 5 repeats, "
            f"load above the cores, or (wall clock, one thread) CPU/wall < 0.9")
