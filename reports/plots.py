"""Per-layer accuracy figures in the style of the PSA paper, plus the plotting helpers the report shares.

:func:`layer_figure` — for one problem, a column per parameter group: relative RMSE vs M on
log-log axes with a ``1/sqrt(M)`` guide (``RMSE^2 = |b|^2 + tr Var / M``, so unbiased estimators
run parallel to the guide and biased ones level off at their relative bias ``|b|/|g|``), and
below it the mean cosine ``cos(g_M, g)`` vs M with the band from the 15% to the 85% quantile over
groups of M draws. The empirical RMSE (the paper's protocol) is drawn when stored, else the
analytic one.

Figures are ``matplotlib.figure.Figure`` objects (no pyplot state; constrained layout, run once by
:func:`freeze_layout`) that the caller saves and drops. Colours and markers are fixed per estimator
for the whole run, training figures included (:func:`styles`); failed estimators appear in each
legend marked FAILED. Legends and titles are sized to their figure (:func:`legend`,
:func:`fig_title`), and :func:`outside_canvas` lists any text that is not on the canvas (the
geometry the tests check).
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from . import psa2020
from .paper_values import METHODS
from .results import RunResults, group_order
from .tables import task_labels

__all__ = ["styles", "styles_for", "layer_chunks", "estimator_groups", "balanced_chunks", "layer_figure", "plain_log",
           "freeze_layout", "legend", "fig_title", "min_width", "outside_canvas", "empty_panel", "task_split", "series",
           "PANELS_PER_FIGURE"]

PANELS_PER_FIGURE = 4
#: At most this many estimators share one figure (a legend of 18 is unreadable); more go to further figures.
ESTIMATORS_PER_FIGURE = 8
_MARKERS = "osD^vP*Xph<>"
_LEGEND_PT = 8.0
_LEGEND_CHAR = 0.62 * _LEGEND_PT / 72  # inches per character of a legend entry (DejaVu Sans, generous)
_FAILED = Line2D([], [], color="0.5", marker="x", linestyle="none")


def _tick(x: float, _pos=None) -> str:
    """Plain tick text: ``0.02``, ``500``, ``1e5``, ``2e-4``."""
    if x <= 0:
        return ""
    if 1e-3 <= x < 1e5:
        return f"{x:g}"
    e = int(np.floor(np.log10(x) + 1e-9))
    m = round(x / 10**e, 6)
    return f"1e{e}" if m == 1 else f"{m:g}e{e}"


def plain_log(ax, axes: str = "xy") -> None:
    """Log-axis ticks labelled as plain text (``0.01``, ``100``, ``1e-5``), never mathtext.

    Call after plotting (it reads the autoscaled limits). Over two decades or more only the
    decades are ticked; over fewer, the 2x and 5x (under one decade: every 1..9x) ticks are
    labelled too, and a range under half a decade is widened so it always has labelled ticks.
    matplotlib's default log labels are mathtext, whose parsing and minor ticks dominated rendering.
    """
    for name in axes:
        axis, get, put = ((ax.xaxis, ax.get_xlim, ax.set_xlim) if name == "x" else
                          (ax.yaxis, ax.get_ylim, ax.set_ylim))
        lo, hi = get()
        if not (lo > 0 and hi > 0):
            continue
        span = np.log10(hi / lo)
        if span < 0.5:
            mid = np.sqrt(lo * hi)
            lo, hi = mid / 10**0.25, mid * 10**0.25
            put(lo, hi)
            span = 0.5
        axis.set_major_locator(LogLocator(10.0))
        axis.set_major_formatter(FuncFormatter(_tick))
        if span >= 2:
            axis.set_minor_locator(NullLocator())
        else:
            axis.set_minor_locator(LogLocator(10.0, subs=(2.0, 5.0) if span >= 1 else tuple(range(2, 10))))
            axis.set_minor_formatter(FuncFormatter(_tick))


def freeze_layout(fig: Figure) -> Figure:
    """Run the constrained layout once, then fix the axes in place, so saving to SVG and PDF lays out nothing."""
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    return fig


def styles(run: RunResults) -> dict[str, tuple]:
    """A fixed (colour, marker) per estimator label of the run, in task order, shared by all figures."""
    return styles_for(run.tasks)


def styles_for(tasks) -> dict[str, tuple]:
    """:func:`styles` from a tasks table (gradient and training figures alike)."""
    labels = list(dict.fromkeys(task_labels(tasks).values()))
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {lab: (cmap(i % cmap.N), _MARKERS[i % len(_MARKERS)]) for i, lab in enumerate(labels)}


def series(run: RunResults, problem: str, metrics) -> dict:
    s = run.scores
    sel = s[(s["problem"] == problem) & s["metric"].isin(list(metrics))].sort_values("M", kind="stable")
    return {key: (g["M"].to_numpy(float), g["value"].to_numpy(float))
            for key, g in sel.groupby(["task_key", "group", "metric"], sort=False)}


def legend(fig: Figure, handles: list, labels: list, failed: dict[str, list]) -> None:
    """A legend below the panels; ``failed`` maps an estimator to the problems it failed on (empty: this one).

    As many columns as the figure's width holds for its longest entry (entries wider than the
    figure wrap), and the figure grows by the legend's height, so no entry is cut off and the
    panels keep their size at any estimator count.
    """
    for lab, where in failed.items():
        handles.append(_FAILED)
        labels.append(f"{lab} — FAILED" + (f" on {', '.join(where)}" if where else ""))
    if not handles:
        return
    width = fig.get_figwidth() - 0.3
    chars = max(12, int((width - 0.5) / _LEGEND_CHAR))
    labels = [textwrap.fill(str(lab), chars) for lab in labels]
    longest = max(len(line) for lab in labels for line in lab.split("\n"))
    ncols = max(1, min(len(labels), int(width // (0.5 + _LEGEND_CHAR * longest))))
    lines = sum(max(lab.count("\n") + 1 for lab in labels[i:i + ncols]) for i in range(0, len(labels), ncols))
    fig.set_figheight(fig.get_figheight() + lines * _LEGEND_PT * 1.5 / 72)  # the legend's room, not the axes'
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, frameon=False, fontsize=_LEGEND_PT)


def fig_title(fig: Figure, text: str, size: float = 11.0) -> None:
    """A figure title wrapped to the figure's width (each line of ``text`` wrapped on its own)."""
    chars = max(20, int((fig.get_figwidth() - 0.3) / (0.55 * size / 72)))
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in text.split("\n")), fontsize=size)


def min_width(n_panels: int, per_panel: float = 3.1, floor: float = 7.5) -> float:
    """A figure width for ``n_panels`` side by side, never narrower than ``floor`` inches (room for a legend)."""
    return max(per_panel * n_panels + 0.6, floor)


def outside_canvas(fig: Figure, tol: float = 1.0) -> list[str]:
    """The texts and legends of a figure that reach outside its canvas (empty: nothing is clipped).

    Checked: the figure's texts (titles), legends, and per visible axes its titles, axis labels,
    texts and the tick labels it draws.
    """
    renderer = fig._get_renderer()
    box = fig.bbox
    items = [(t.get_text(), t) for t in fig.texts] + [("legend", lg) for lg in fig.legends]
    if fig._suptitle is not None:
        items.append((fig._suptitle.get_text(), fig._suptitle))
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis in (ax.xaxis, ax.yaxis):
            texts += [tick.label1 for tick in axis._update_ticks() if tick.label1.get_visible()]
        items += [(t.get_text(), t) for t in texts] + [("legend", ax.legend_)] * (ax.legend_ is not None)
    out = []
    for name, artist in items:
        if not artist.get_visible() or (isinstance(artist, Text) and not artist.get_text().strip()):
            continue
        ext = artist.get_window_extent(renderer)
        if ext.x0 < box.x0 - tol or ext.y0 < box.y0 - tol or ext.x1 > box.x1 + tol or ext.y1 > box.y1 + tol:
            out.append(name)
    return out


def empty_panel(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4", fontsize="large")
    ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)


def short_title(name: str, width: int = 34) -> str:
    """A panel title: long problem specs wrapped at commas."""
    parts, line, out = str(name).replace(",", ", ").split(" "), "", []
    for p in parts:
        if line and len(line) + len(p) > width:
            out.append(line.rstrip())
            line = ""
        line += p
    return "\n".join(out + [line]).replace(", ", ",")


def task_split(run: RunResults, problem: str):
    t = run.tasks[run.tasks["problem"] == problem]
    labels = task_labels(t)
    done = [(k, labels[k]) for k, st in zip(t["task_key"], t["status"]) if st == "done"]
    failed = {labels[k]: e for k, st, e in zip(t["task_key"], t["status"], t["error"]) if st != "done"}
    return t, done, failed


def _marks(m: np.ndarray) -> list[int]:
    """Marker positions: at powers of ten when the grid has them (the paper's 1, 10, 100, 1000), else ~5 spread."""
    dec = [i for i, x in enumerate(m) if x > 0 and abs(np.log10(x) - round(np.log10(x))) < 1e-9]
    return dec if len(dec) >= 2 else list(range(0, len(m), max(1, len(m) // 5)))


def _rmse_metric(run: RunResults, problem: str) -> str:
    here = run.scores[run.scores["problem"] == problem]
    return "rel_rmse_emp" if (here["metric"] == "rel_rmse_emp").any() else "rel_rmse"


def _cos_metric(run: RunResults, problem: str) -> str:
    """``cos_mean`` (exact reference), or ``cos_ms`` where a Monte Carlo reference scored the problem (the mean
    cosine has no unbiased estimate without the exact gradient: ``docs/monte-carlo.md``)."""
    here = run.scores[run.scores["problem"] == problem]
    return "cos_ms" if (here["metric"] == "cos_ms").any() and not (here["metric"] == "cos_mean").any() else "cos_mean"


def layer_chunks(run: RunResults, problem: str) -> list[list[str]]:
    """The problem's parameter groups in network order, ``PANELS_PER_FIGURE`` per figure (``all`` only if alone)."""
    s = run.scores
    sel = s[(s["problem"] == problem) & s["metric"].isin([_rmse_metric(run, problem), "cos_mean"])]
    groups = [g for g in group_order(sel["group"].unique()) if g != "all"] or ["all"]
    return [groups[i:i + PANELS_PER_FIGURE] for i in range(0, len(groups), PANELS_PER_FIGURE)]


def estimator_groups(run: RunResults, problem: str) -> list[tuple[str, list[str]]]:
    """The problem's estimator labels split into figures: ``(title, labels)`` each.

    In a ``psa2020`` run the first figure holds the PSA paper's methods in its legend order
    (``docs/protocols.md#psa2020``), the others follow; any run with more than ``ESTIMATORS_PER_FIGURE``
    estimators is split into figures of at most that many, in run order.  Failed tasks stay with
    their estimator's figure (as legend entries marked failed).
    """
    t = run.tasks[run.tasks["problem"] == problem]
    labels = task_labels(t)
    order = list(dict.fromkeys(labels[k] for k in t["task_key"]))
    featured: list[str] = []
    if psa2020.is_psa2020(run):
        method_at = {labels[k]: m for k, m in zip(t["task_key"], psa2020.task_methods(t))}
        for want in METHODS:
            featured += [lab for lab in order if method_at[lab] == want and lab not in featured]
    rest = [lab for lab in order if lab not in featured]
    if len(order) <= ESTIMATORS_PER_FIGURE:
        return [("", order)]
    groups = [("the PSA paper's methods", featured)] if featured else []
    chunks = balanced_chunks(rest, ESTIMATORS_PER_FIGURE)
    if featured and len(chunks) == 1 and len(chunks[0]) == 1:  # never a figure for one estimator alone
        groups[0][1].extend(chunks.pop())
    for i, c in enumerate(chunks):
        what = "other estimators" if featured else "estimators"
        groups.append((what + (f" ({i + 1} of {len(chunks)})" if len(chunks) > 1 else ""), c))
    return groups


def balanced_chunks(items: list, most: int) -> list[list]:
    """``items`` in order, in the fewest chunks of at most ``most``, sizes differing by at most one (no lone item
    unless there is only one)."""
    n = -(-len(items) // most) if items else 0
    if n == 0:
        return []
    size, extra = divmod(len(items), n)
    out, i = [], 0
    for k in range(n):
        step = size + (1 if k < extra else 0)
        out.append(items[i:i + step])
        i += step
    return out


def layer_figure(run: RunResults, problem: str, chunk: list[str], sty: dict, only: list[str] | None = None,
                 title: str = "") -> Figure:
    """Relative RMSE (top) and cosine (bottom) vs M, one column per group in ``chunk``; the estimators
    labelled ``only`` in that order (default: all, in run order), ``title`` added to the figure's title."""
    _, done, failed = task_split(run, problem)
    if only is not None:  # those estimators, in the order given (the legend's order)
        done = sorted(((k, lab) for k, lab in done if lab in only), key=lambda kl: only.index(kl[1]))
        failed = {lab: failed[lab] for lab in only if lab in failed}
    rmse, cos = _rmse_metric(run, problem), _cos_metric(run, problem)
    data = series(run, problem, (rmse, cos, "cos_q15", "cos_q85", "grad_norm"))
    fig = Figure(figsize=(min_width(len(chunk), 3.0), 6.4), layout="constrained")
    axes = fig.subplots(2, len(chunk), squeeze=False, sharex="col")
    handles = {}
    for j, g in enumerate(chunk):
        top, bot = axes[0, j], axes[1, j]
        norms = [data[(k, g, "grad_norm")][1][0] for k, _ in done if (k, g, "grad_norm") in data]
        top.set_title(g + (f"  (|g| = {np.median(norms):.3g})" if norms else ""), fontsize="medium")
        starts, grid = [], set()
        for k, lab in done:
            color, marker = sty[lab]
            if (k, g, rmse) in data:
                m, v = data[(k, g, rmse)]
                ok = v > 0
                (handles[lab],) = top.loglog(m[ok], v[ok], color=color, lw=1.4, marker=marker,
                                             markevery=_marks(m[ok]), ms=4)
                starts += list(v[ok & (m == m.min())])
                grid.update(m[ok])
            if (k, g, cos) in data:
                m, v = data[(k, g, cos)]
                bot.semilogx(m, v, color=color, lw=1.4, marker=marker, markevery=_marks(m), ms=4)
                if (k, g, "cos_q15") in data and (k, g, "cos_q85") in data:
                    bot.fill_between(m, data[(k, g, "cos_q15")][1], data[(k, g, "cos_q85")][1], color=color,
                                     alpha=0.15, lw=0)
        if starts:
            mm = np.array(sorted(grid))
            c = float(np.exp(np.mean(np.log(starts))))
            (handles["∝ 1/√M guide"],) = top.loglog(mm, c / np.sqrt(mm / mm[0]), color="k", ls=":", lw=1.2)
            top.grid(True, which="major", alpha=0.3)
            plain_log(top, "xy")
        else:
            empty_panel(top)
        if bot.lines:
            bot.set_ylim(top=1.02)
            bot.grid(True, which="major", alpha=0.3)
            bot.set_xlabel("M (draws averaged)")
            plain_log(bot, "x")
        else:
            empty_panel(bot)
    axes[0, 0].set_ylabel("relative RMSE" + (" (empirical)" if rmse == "rel_rmse_emp" else ""))
    axes[1, 0].set_ylabel("cosine to true gradient" if cos == "cos_mean" else "mean-square cosine (Monte Carlo)")
    fig_title(fig, f"{problem}: accuracy per parameter group" + (f" — {title}" if title else ""), 12)
    legend(fig, list(handles.values()), list(handles), {lab: [] for lab in failed})
    return freeze_layout(fig)
