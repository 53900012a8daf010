"""Throughput chart from stored timing rows: items/s = items / median time, one panel per item unit.

Bars are horizontal on a log axis (kernels differ by orders of magnitude), labelled with kernel,
variant, device, dtype and shape; the IQR of the time becomes an error bar on items/s, and the
bar's text gives items/s and, where known, the percentage of the device peak.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .export import fmt_value
from .plots import freeze_layout, plain_log

__all__ = ["throughput_figure"]


def _label(row) -> str:
    bits = [str(row.kernel)]
    if str(row.variant) not in ("", "nan"):
        bits.append(str(row.variant))
    where = ", ".join(str(x) for x in (row.device, row.dtype, row.shape) if str(x) not in ("", "nan"))
    return " · ".join(bits) + (f"\n({where})" if where else "")


def throughput_figure(timings: pd.DataFrame) -> Figure | None:
    """One horizontal bar chart per unit (draws/s, terms/s, states/s, ...); ``None`` without timings."""
    t = timings[pd.to_numeric(timings["items_per_s"], errors="coerce") > 0]
    if t.empty:
        return None
    units = list(dict.fromkeys(t["unit"].astype(str)))
    counts = [int((t["unit"].astype(str) == u).sum()) for u in units]
    fig = Figure(figsize=(8.5, 1.2 + sum(0.5 * c + 0.6 for c in counts)), layout="constrained")
    axes = fig.subplots(len(units), 1, squeeze=False, height_ratios=[c + 1.2 for c in counts]).ravel()
    for ax, unit in zip(axes, units):
        part = t[t["unit"].astype(str) == unit].reset_index(drop=True)
        rate = part["items_per_s"].astype(float).to_numpy()
        med = part["median_s"].astype(float).to_numpy()
        iqr = part["iqr_s"].astype(float).to_numpy()
        y = np.arange(len(part))[::-1]
        ax.barh(y, rate, color="tab:blue", alpha=0.75)
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = np.isfinite(iqr) & np.isfinite(med) & (med > iqr / 2)
            low = np.where(ok, rate - rate * med / (med + iqr / 2), 0)
            high = np.where(ok, rate * med / np.maximum(med - iqr / 2, 1e-300) - rate, 0)
        ax.errorbar(rate, y, xerr=[low, high], fmt="none", ecolor="0.25", capsize=2, lw=1)
        for yi, r, pct in zip(y, rate, part["pct_peak"].astype(float)):
            note = f"{fmt_value(r)}/s" + (f", {pct:.0f}% of peak" if np.isfinite(pct) else "")
            ax.annotate(note, (r, yi), xytext=(8, 0), textcoords="offset points", va="center", ha="left",
                        fontsize="small")
        ax.set_yticks(y, [_label(r) for r in part.itertuples()], fontsize="small")
        ax.set_xscale("log")
        ax.set_xlim(rate.min() / 3, rate.max() * 30)
        plain_log(ax, "x")
        ax.set_xlabel(f"{unit} per second")
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle("Throughput (median over repeats; bars: IQR)", fontsize="medium")
    return freeze_layout(fig)
