"""What a report holds, section by section (the blocks are those of :mod:`reports.document`).

One function per section (``manifest_section``, ``problem_section``, ``bias_variance_section``,
``pareto_section``, ``psa2020_section``, ``training_section``, ``timing_section``), each
``(run, ctx) -> list[Section]`` and empty when the run has nothing for it; ``RUN_SECTIONS`` lists
them in page order, so a new kind of result is one more function there. The
HTML and PDF writers only walk these blocks.
"""

from __future__ import annotations

import pandas as pd

from . import costs, plots, psa2020, tables, tradeoffs
from .document import Plot, Section, Table, Text
from .paper_values import CHECKPOINTS, CITATION
from .results import RunResults, run_id, slug
from .throughput import throughput_figure
from .training_curves import training_sections

__all__ = ["RUN_SECTIONS", "run_sections"]


def manifest_section(run: RunResults, ctx: dict) -> list[Section]:
    rid = ctx["rid"]
    t = run.tasks
    n_failed = int((t["status"] == "failed").sum())
    blocks = [Table(f"{rid}_manifest", f"Run {run_id(run)}: manifest", tables.manifest_table(run)),
              Text(f"{len(t)} tasks on {t['problem'].nunique()} problem(s): {len(t) - n_failed} done, "
                   f"{n_failed} failed.", "warn" if n_failed else "p")]
    if n_failed:
        blocks.append(Table(f"{rid}_failed", "Failed tasks (no scores; shown, not dropped)", tables.failed_table(run)))
    blocks.append(Table(f"{rid}_tasks", "Tasks", tables.tasks_table(run), sep="problem"))
    return [Section(f"Run {run_id(run)}", f"{rid}", blocks)]


def _accuracy_run(run: RunResults) -> bool:
    """A gradient-accuracy run: it has scores, or none of its tasks finished (so failures are shown per problem).

    A training run has finished tasks but no score rows; its results are curves (see training_section).
    A timing run has no tasks at all; its results are the timings.
    """
    if run.tasks.empty:
        return False
    return not run.scores.empty or not (run.tasks["status"] == "done").any()


def problem_section(run: RunResults, ctx: dict) -> list[Section]:
    if not _accuracy_run(run):
        return []
    out = []
    for problem in tables.problems(run):
        ps = f"{ctx['rid']}_{slug(problem)}"
        blocks = [Table(f"{ps}_ranking", f"{problem}: estimators ranked by the relative RMSE of one draw "
                        "(whole gradient); bias plateau = relative bias |b|/|g|", tables.ranking_table(run, problem))]
        cost = costs.cost_table(run, problem)
        blocks.append(Table(f"{ps}_cost", costs.cost_caption(problem, cost), cost))
        groups = plots.estimator_groups(run, problem)
        for e, (title, labels) in enumerate(groups):
            for i, chunk in enumerate(plots.layer_chunks(run, problem)):
                pid = f"{ps}_layers{i}" + (f"_est{e}" if len(groups) > 1 else "")
                blocks.append(Plot(pid, f"{problem}{': ' + title if title else ''}: relative RMSE vs M (log-log; "
                                   "dotted: ∝ 1/√M) and mean cosine vs M (band: 15–85% quantiles over groups of M draws)",
                                   lambda c=chunk, p=problem, o=labels, t=title:
                                   plots.layer_figure(run, p, c, ctx["styles"], only=o, title=t)))
        out.append(Section(f"Problem {problem}", ps, blocks, level=3))
    return out


def _all_problems_figure(run: RunResults, ctx: dict, title: str, key: str, caption: str, figure) -> list[Section]:
    """One section holding ``figure(run, problems, styles)`` over all problems of an accuracy run."""
    if not _accuracy_run(run):
        return []
    probs = tables.problems(run)
    name = f"{ctx['rid']}_{key}"
    return [Section(title, name, [Plot(name, caption, lambda: figure(run, probs, ctx["styles"]))], level=3)]


def bias_variance_section(run: RunResults, ctx: dict) -> list[Section]:
    return _all_problems_figure(run, ctx, "Bias vs variance", "biasvar",
                                "Relative bias against the relative standard deviation of one draw; "
                                "RMSE of an M-draw average = √(bias² + sd²/M)", tradeoffs.bias_variance_figure)


def pareto_section(run: RunResults, ctx: dict) -> list[Section]:
    return _all_problems_figure(run, ctx, "Accuracy vs wall time", "pareto",
                                "Relative RMSE of an M-draw average against M × seconds per draw; "
                                "the grey step is the Pareto front over all estimators", tradeoffs.pareto_figure)


def psa2020_section(run: RunResults, ctx: dict) -> list[Section]:
    if not psa2020.is_psa2020(run):
        return []
    comp = psa2020.comparison(run)
    rid = ctx["rid"]
    blocks = [Text(f"Published values: {CITATION}. Ratio = this run / paper; difference = this run − paper. "
                   "A re-trained network differs from the published one: expect agreement in kind, not digits.")]
    if comp.empty:
        blocks.append(Text("This run has none of the paper's checkpoint problems (chk-100, chk-2000).", "warn"))
    else:
        blocks.append(Table(f"{rid}_psa2020_long", "This run vs the PSA paper (all values, tidy)", comp, show=False))
        blocks.append(Text(f"All values in one tidy table: tables/{rid}_psa2020_long.csv (.md, .tex)."))
    for chk in CHECKPOINTS:
        for metric, what in (("rel_rmse", "relative RMSE (ratio = run / paper)"),
                             ("cos_mean", "mean cosine (difference = run − paper)")):
            wide = psa2020.comparison_wide(comp, chk, metric) if not comp.empty else pd.DataFrame()
            if not wide.empty:
                blocks.append(Table(f"{rid}_psa2020_{chk}_{metric}", f"{chk}: {what}", wide, sep="layer"))
    return [Section("Comparison with the PSA paper", f"{rid}_psa2020", blocks, level=3)]


def training_section(run: RunResults, ctx: dict) -> list[Section]:
    """Training runs (``run.curves``): the tables and figures of :mod:`reports.training_curves`."""
    if run.curves is None or run.curves.empty:
        return []
    return training_sections(run.curves, run.tasks, ctx["rid"])


def timing_section(run: RunResults, ctx: dict) -> list[Section]:
    tab = tables.timing_table(run)
    rid = ctx["rid"]
    if tab.empty and not _accuracy_run(run):
        return []
    if tab.empty:
        return [Section("Timings", f"{rid}_timings", [Text("No timings were recorded in this run.")], level=3)]
    return [Section("Timings", f"{rid}_timings", [
        Table(f"{rid}_timings", "Timings: items/s = items / median time (IQR over repeats)", tab),
        Plot(f"{rid}_throughput", "Throughput per kernel (log scale)", lambda: throughput_figure(run.timings))],
        level=3)]


RUN_SECTIONS = [manifest_section, problem_section, bias_variance_section, pareto_section, psa2020_section,
                training_section, timing_section]


def run_sections(runs: list[RunResults]) -> list[Section]:
    """All sections of a report over ``runs`` (validated), run by run, in ``RUN_SECTIONS`` order."""
    out, seen = [], {}
    for run in runs:
        rid = slug(run_id(run))
        seen[rid] = seen.get(rid, 0) + 1
        if seen[rid] > 1:
            rid = f"{rid}-{seen[rid]}"
        ctx = {"rid": rid, "styles": plots.styles(run)}
        for fn in RUN_SECTIONS:
            out.extend(fn(run, ctx))
    return out
