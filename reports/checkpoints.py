"""The training behind a ``psa2020`` run's checkpoint problems, from stored task facts only
(``docs/protocols.md#checkpoints``; no torch).

Every task on a checkpoint problem ``BASE@chk-E`` stores, in its ``facts`` (``run.tasks["facts"]``),
``checkpoint`` (base, epoch, seed, exact expected loss, weight norms per group) and ``training``
(recipe, curve kind, and the exact expected loss of the initial network and after every epoch up
to ``E``).

- :func:`checkpoint_table` — one row per checkpoint problem: epoch, training seed, exact expected
  loss, and per group the Frobenius norm of the weights and the largest |weight|.
- :func:`training_curve` — the longest stored curve per base network: ``{base: (epochs, losses)}``.
- :func:`curve_figure` — those curves against epoch, with log 2 (a network that ignores its
  input) and the checkpoints marked.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .results import RunResults

__all__ = ["checkpoint_facts", "checkpoint_table", "training_curve", "curve_figure", "has_checkpoint_facts"]


def checkpoint_facts(run: RunResults) -> dict[str, dict]:
    """``{problem: facts}`` for every checkpoint problem of the run whose tasks stored training facts."""
    if "facts" not in run.tasks:
        return {}
    out: dict[str, dict] = {}
    for problem, facts in zip(run.tasks["problem"], run.tasks["facts"]):
        if isinstance(facts, dict) and "checkpoint" in facts and problem not in out:
            out[problem] = facts
    return out


def has_checkpoint_facts(run: RunResults) -> bool:
    return bool(checkpoint_facts(run))


def checkpoint_table(run: RunResults) -> pd.DataFrame:
    """Checkpoint problem, epoch, seed, exact expected loss, then ``|W| <group>`` and ``max|w| <group>`` columns."""
    rows = []
    for problem, facts in checkpoint_facts(run).items():
        chk = facts["checkpoint"]
        row = {"problem": problem, "epoch": int(chk["epoch"]), "seed": chk.get("seed"),
               "exact loss": float(chk["exact_loss"])}
        for group, norms in chk.get("weight_norms", {}).items():
            row[f"|W| {group}"] = float(norms["weight"])
        for group, norms in chk.get("weight_norms", {}).items():
            row[f"max|w| {group}"] = float(norms["max_abs_weight"])
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["problem", "epoch", "seed", "exact loss"])
    return pd.DataFrame(rows).sort_values("epoch", kind="stable").reset_index(drop=True)


def training_curve(run: RunResults) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{base: (epochs, exact losses)}``, the longest curve stored for each base network (epoch 0 = initial)."""
    best: dict[str, list] = {}
    for facts in checkpoint_facts(run).values():
        base = facts["checkpoint"]["base"]
        curve = facts.get("training", {}).get("curve") or []
        if len(curve) > len(best.get(base, [])):
            best[base] = curve
    return {b: (np.arange(len(c)), np.array([np.nan if v is None else v for v in c], dtype=float))
            for b, c in best.items()}


def curve_figure(run: RunResults) -> Figure:
    """Exact expected loss against epoch for each trained base network; checkpoints marked."""
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    curves = training_curve(run)
    table = checkpoint_table(run)
    for i, (base, (ep, loss)) in enumerate(sorted(curves.items())):
        ax.plot(ep, loss, color=f"C{i}", lw=1.2, label=f"{base}: exact expected loss")
        marks = table[table["problem"].str.startswith(base + "@")]
        ax.plot(marks["epoch"], marks["exact loss"], "o", color=f"C{i}", ms=4, label=f"{base}: checkpoints")
    ax.axhline(math.log(2), color="0.5", ls=":", lw=1, label="log 2 (input ignored)")
    if not curves:
        ax.text(0.5, 0.5, "no training facts stored", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel("exact expected loss")
    ax.set_xscale("symlog", linthresh=1)  # epoch 0 (the initial network) and a log scale beyond 1
    ax.set_xlim(0, max([len(loss) - 1 for _, loss in curves.values()] + [1]))
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
