"""What a report holds, section by section (the blocks are those of :mod:`reports.document`).

One function per section (``run_section``, ``problem_section``, ``bias_variance_section``,
``pareto_section``, ``psa2020_section``, ``training_section``, ``timing_section``,
``bookkeeping_section``), each ``(run, ctx) -> list[Section]`` and empty when the run has nothing
for it; ``RUN_SECTIONS`` lists them in page order: results first (``RESULT_SECTIONS``, so a new
kind of result is one more function there), the manifest and task list last. The
HTML and PDF writers only walk these blocks.
"""

from __future__ import annotations

import pandas as pd

from . import checkpoints, claims, costs, plots, psa2020, tables, tradeoffs
from .document import Plot, Section, Table, Text
from .paper_values import CHECKPOINTS, CITATION, PROBLEM_PREFIX
from .results import RunResults, run_id, slug
from .throughput import throughput_figure
from .training_curves import training_sections
from .trends import reference_kinds, trends_section

__all__ = ["RUN_SECTIONS", "RESULT_SECTIONS", "run_sections"]


def run_section(run: RunResults, ctx: dict) -> list[Section]:
    """The run's heading and one line on its tasks; the manifest and task list come last
    (:func:`bookkeeping_section`)."""
    t = run.tasks
    n_failed = int((t["status"] == "failed").sum())
    text = (f"{len(t)} tasks on {t['problem'].nunique()} problem(s): {len(t) - n_failed} done, {n_failed} failed"
            + (" (listed with their errors under Bookkeeping)." if n_failed else ".") if len(t) else
            "A timing run: no tasks.")
    return [Section(f"Run {run_id(run)}", ctx["rid"], [Text(text, "warn" if n_failed else "p")])]


def bookkeeping_section(run: RunResults, ctx: dict) -> list[Section]:
    """How the numbers were made: the manifest, the failed tasks with their errors, and every task."""
    rid = ctx["rid"]
    t = run.tasks
    blocks = [Table(f"{rid}_manifest", f"Run {run_id(run)}: manifest", tables.manifest_table(run))]
    if (t["status"] == "failed").any():
        blocks.append(Table(f"{rid}_failed", "Failed tasks (no scores; shown, not dropped)", tables.failed_table(run)))
    if len(t):
        blocks.append(Table(f"{rid}_tasks", "Tasks", tables.tasks_table(run), sep="problem"))
    return [Section(f"Run {run_id(run)}: bookkeeping", f"{rid}_bookkeeping", blocks, level=3)]


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
    kinds = reference_kinds(run)
    for problem in tables.problems(run):
        ps = f"{ctx['rid']}_{slug(problem)}"
        rank = tables.ranking_table(run, problem)
        blocks = []
        keys = run.tasks.loc[run.tasks["problem"] == problem, "task_key"]
        if any(kinds.get(k) == "mc" for k in keys):
            blocks.append(Text("Monte Carlo reference: this problem is too large to enumerate (or the run asked for "
                               "it), so its scores are measured against an unbiased reference estimator, not the exact "
                               "gradient. Biases and relative errors are estimates; read them with their intervals "
                               "(docs: Monte Carlo reference).", "warn"))
        blocks.append(Table(f"{ps}_ranking", tables.ranking_caption(problem, rank), rank))
        blocks += [Text(note) for note in rank.attrs.get("notes", [])]
        groups = plots.estimator_groups(run, problem)
        for e, (title, labels) in enumerate(groups):
            for i, chunk in enumerate(plots.layer_chunks(run, problem)):
                pid = f"{ps}_layers{i}" + (f"_est{e}" if len(groups) > 1 else "")
                blocks.append(Plot(pid, f"{problem}{': ' + title if title else ''}: relative RMSE vs M (log-log; "
                                   "dotted: ∝ 1/√M) and mean cosine vs M (band: 15–85% quantiles over groups of M draws)",
                                   lambda c=chunk, p=problem, o=labels, t=title:
                                   plots.layer_figure(run, p, c, ctx["styles"], only=o, title=t)))
        cost = costs.cost_table(run, problem)  # how the ranking's cost columns were measured
        blocks.append(Table(f"{ps}_cost", costs.cost_caption(problem, cost), cost))
        out.append(Section(f"Problem {problem}", ps, blocks, level=3))
    return out


def _per_problem_figures(run: RunResults, ctx: dict, title: str, key: str, caption: str, figure) -> list[Section]:
    """One section holding ``figure(run, problem, styles)`` for each problem of an accuracy run."""
    if not _accuracy_run(run):
        return []
    name = f"{ctx['rid']}_{key}"
    blocks = [Plot(f"{name}_{slug(p)}", f"{p}: {caption}", lambda p=p: figure(run, p, ctx["styles"]))
              for p in tables.problems(run)]
    return [Section(title, name, blocks, level=3)]


def bias_variance_section(run: RunResults, ctx: dict) -> list[Section]:
    return _per_problem_figures(run, ctx, "Bias vs variance", "biasvar",
                                "relative bias (95% CI) against the relative standard deviation of one draw, per "
                                "parameter group; RMSE of an M-draw average = √(bias² + sd²/M)",
                                tradeoffs.bias_variance_figure)


def pareto_section(run: RunResults, ctx: dict) -> list[Section]:
    return _per_problem_figures(run, ctx, "Accuracy vs wall time", "pareto",
                                "relative RMSE of an M-draw average against M × seconds per draw, per parameter "
                                "group and their geometric mean; the grey step is the Pareto front",
                                tradeoffs.pareto_figure)


def claims_section(run: RunResults, ctx: dict) -> list[Section]:
    """The paper's checkable claims evaluated on the run (:mod:`reports.claims`); empty without its checkpoints."""
    if not psa2020.is_psa2020(run) or not any(PROBLEM_PREFIX + c in set(run.tasks["problem"])
                                              for c in CHECKPOINTS):
        return []
    rid = ctx["rid"]
    table = claims.claims_table(run)
    counts = table["verdict"].value_counts()
    summary = ", ".join(f"{counts[v]} {v}" for v in claims.VERDICTS if v in counts)
    return [Section("The paper's claims on this run", f"{rid}_psa2020_claims", [
        Table(f"{rid}_psa2020_claims", f"The PSA paper's checkable claims on this run: {summary}", table),
        Text("Verdicts: holds / fails = every / some comparison resolved for / against the claim (95% intervals "
             "that do not overlap); not resolved = intervals overlap; not run = the run lacks what the claim "
             "needs. Claim numbers are those of the paper's claims list in the docs (protocols).")], level=3)]


def psa2020_section(run: RunResults, ctx: dict) -> list[Section]:
    if not psa2020.is_psa2020(run):
        return []
    comp = psa2020.comparison(run)
    rid = ctx["rid"]
    blocks = [Text(f"Published values: {CITATION}. Ratio = this run / paper; difference = this run − paper. "
                   "A re-trained network differs from the published one: expect agreement in kind, not digits.")]
    if claims_section(run, ctx):
        blocks.append(Text("The paper's checkable claims, evaluated on this run, lead the report (first section of "
                           "this run); the ratios below compare numbers only, which is meaningful where the networks "
                           "are alike."))
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
    if checkpoints.has_checkpoint_facts(run):
        blocks.append(Text("The checkpoints' training (REINFORCE without baseline, SGD lr 0.03, momentum 0.9, batches "
                           "of 10): exact expected loss of the network after each epoch, float64, all 200 points."))
        blocks.append(Plot(f"{rid}_psa2020_training", "Checkpoint training: exact expected loss against epoch "
                           "(dots: the checkpoints; dotted: log 2, a network that ignores its input)",
                           lambda: checkpoints.curve_figure(run)))
        blocks.append(Table(f"{rid}_psa2020_checkpoints", "Checkpoints: exact expected loss, Frobenius norm |W| "
                            "and largest |w| of each group's weights", checkpoints.checkpoint_table(run)))
    else:
        blocks.append(Text("This run stored no training facts for its checkpoints (made before they were recorded).",
                           "warn"))
    return [Section("Comparison with the PSA paper", f"{rid}_psa2020", blocks, level=3)]


def training_section(run: RunResults, ctx: dict) -> list[Section]:
    """Training runs (``run.curves``): the tables and figures of :mod:`reports.training_curves`."""
    if run.curves is None or run.curves.empty:
        return []
    return training_sections(run.curves, run.tasks, ctx["rid"], ctx["styles"])


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


#: The results of a run, in page order: a new kind of result is one more function here (the claims
#: table goes first, then trends across problems, then each problem).
RESULT_SECTIONS = [claims_section, trends_section, problem_section, bias_variance_section, pareto_section,
                   psa2020_section, training_section, timing_section]
#: Per run: its heading, its results, then the bookkeeping (manifest, tasks) last.
RUN_SECTIONS = [run_section, *RESULT_SECTIONS, bookkeeping_section]


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
