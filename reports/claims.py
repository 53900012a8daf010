"""The PSA paper's checkable claims, evaluated on a ``psa2020`` run (``docs/protocols.md#claims-table``).

:func:`claims_table` returns one row per (claim, checkpoint): the claim, where it was evaluated
(checkpoint, parameter groups, the M range), the verdict, this run's numbers with their 95%
intervals, the paper's numbers for the same cells and the rule that gave the verdict.

Verdicts (:data:`VERDICTS`):

- ``holds``: every comparison the claim needs is resolved in the claim's favour;
- ``fails``: at least one comparison is resolved against it (a universal claim is refuted by one
  counter-example, even when other parts were not run);
- ``not resolved``: nothing resolved against it, but some comparison is not resolved (the
  intervals overlap, or a score has no interval);
- ``not run``: what the claim needs is not in the run (a checkpoint, a method, a failed task).

"A below B" is resolved when A's 95% upper end is below B's 95% lower end, and the reverse is
resolved when A's lower end is above B's upper end; overlapping intervals are not resolved. When
the two true values are equal (independent intervals, tasks have independent seeds) a resolved
order in a given direction happens at most 2.5% of the time, about 0.3% for equally wide
intervals, so a ``fails`` is rarely noise. The tasks are found through
:func:`reports.psa2020.method_of`, so "PSA" is whatever estimator the paper's mapping calls PSA.
Like every report module this one only reads stored scores (no torch, no recomputation).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .export import fmt_value
from .paper_values import CHECKPOINTS, GROUPS, M_GRID, PROBLEM_PREFIX, VALUES
from .psa2020 import task_methods
from .results import RunResults, group_order

__all__ = ["VERDICTS", "CLAIM_COLUMNS", "MANY_DRAWS", "claims_table"]

VERDICTS = ("holds", "fails", "not resolved", "not run")
CLAIM_COLUMNS = ["claim", "where", "verdict", "this run (95% CI)", "paper", "rule"]
#: "ARM needs many draws to overtake PSA": a resolved crossing below this M refutes it. The paper's
#: earliest crossing is near M = 600 (chk-2000, first hidden layer), so 100 leaves a decade of margin.
MANY_DRAWS = 100
PSA, ST, ARM, REINFORCE = "PSA", "ST", "ARM", "REINFORCE"
CONCRETE_LOW, CONCRETE_HIGH = "Concrete-t=0.1", "Concrete-t=1"  # the paper's two temperatures
#: the methods PSA's one-draw error is compared with (tanh is deterministic and not in the claim)
ONE_DRAW_RIVALS = (ST, ARM, REINFORCE, CONCRETE_LOW, CONCRETE_HIGH)

TITLES = {
    1: "1. PSA has the lowest one-draw error in every hidden layer",
    2: "2. PSA's bias plateau is below ST's in every hidden layer",
    3: "3. PSA is unbiased in the last hidden layer and the head",
    7: "7. ARM overtakes PSA only after many draws, and not in the last hidden layer",
    8: "8. Concrete: τ = 0.1 has lower bias and higher variance than τ = 1",
    9: "9. The biases of PSA and ST grow with training (chk-100 to chk-2000)",
}
RULES = {
    1: "relative RMSE at M = 1 (rel_rmse_emp, else rel_rmse); holds when PSA is resolved below each of "
       "ST, ARM, REINFORCE, Concrete τ = 0.1 and τ = 1 in every hidden layer; fails when any is resolved below PSA",
    2: "relative bias (rel_bias, the RMSE plateau); holds when PSA is resolved below ST in every hidden layer; "
       "fails when ST is resolved below PSA in one",
    3: "relative bias (rel_bias); a group is consistent with zero bias when its 95% CI reaches 0 (without a CI: "
       "when the bias is at most its noise floor); holds when both groups are, fails when one CI excludes 0 "
       "(an unbiased estimator fails a group about 2.5% of the time or less)",
    7: f"relative RMSE (analytic rel_rmse, else rel_rmse_emp) on the run's M grid; ARM overtakes at the first M "
       f"where it is resolved below PSA; holds when PSA is resolved below ARM at every M in the last hidden layer "
       f"and at every M < {MANY_DRAWS} in the others; fails when ARM is resolved below PSA in the last hidden layer "
       f"or at some M < {MANY_DRAWS}",
    8: "relative bias (rel_bias) and relative sd of one draw (sqrt(trace_var) / |g|) in every hidden layer; holds "
       "when τ = 0.1 is resolved below τ = 1 in bias and above it in sd everywhere; fails when one is resolved "
       "the other way",
    9: "relative bias (rel_bias) at chk-100 and chk-2000, ST in every hidden layer, PSA in every hidden layer "
       "but the last (where it is unbiased); holds when every one is resolved larger at chk-2000; fails when one "
       "is resolved smaller",
}


@dataclass(frozen=True)
class Cell:
    """A stored score and its 95% interval (NaN where none was stored)."""

    value: float
    lo: float = math.nan
    hi: float = math.nan

    def text(self) -> str:
        if math.isnan(self.lo) and math.isnan(self.hi):
            return fmt_value(self.value)
        return f"{fmt_value(self.value)} [{fmt_value(self.lo)}, {fmt_value(self.hi)}]"


def below(a: Cell, b: Cell) -> bool | None:
    """True when ``a < b`` is resolved (a.hi < b.lo), False when ``a > b`` is (a.lo > b.hi), else None."""
    if a.hi < b.lo:
        return True
    if a.lo > b.hi:
        return False
    return None


def verdict(results, missing=()) -> str:
    """The verdict of a claim from its comparisons (True / False / None each) and what it lacks."""
    results = list(results)
    if any(r is False for r in results):
        return "fails"
    if missing or not results:
        return "not run"
    return "holds" if all(r is True for r in results) else "not resolved"


class _Lookup:
    """The run's scores indexed by (task_key, group, metric, M), and its tasks by checkpoint and method."""

    def __init__(self, run: RunResults):
        s = run.scores
        lo = s["lo"] if "lo" in s else pd.Series(np.nan, index=s.index)
        hi = s["hi"] if "hi" in s else pd.Series(np.nan, index=s.index)
        self.cells = {(k, str(g), m, int(M)): Cell(float(v), float(a), float(c)) for k, g, m, M, v, a, c in
                      zip(s["task_key"], s["group"], s["metric"], s["M"], s["value"], lo, hi)}
        self.metrics = {(k, m) for k, _, m, _ in self.cells}
        self.by_key: dict[str, set] = {}  # task_key -> its groups
        self.ms: dict[tuple, set] = {}  # (task_key, group, metric) -> its M values
        for k, g, m, M in self.cells:
            self.by_key.setdefault(k, set()).add(g)
            self.ms.setdefault((k, g, m), set()).add(M)
        self.tasks = run.tasks
        self.problems = set(run.tasks["problem"])

    def methods(self, chk: str) -> tuple[dict[str, str], dict[str, str]]:
        """({method: task_key} of the done tasks, {method: error} of the failed ones) on checkpoint ``chk``."""
        here = self.tasks[self.tasks["problem"] == PROBLEM_PREFIX + chk]
        done, failed = {}, {}
        for (_, row), method in zip(here.iterrows(), task_methods(here)):
            if method is None:
                continue
            if row["status"] == "done":
                done.setdefault(method, row["task_key"])
            else:
                failed.setdefault(method, str(row.get("error", "")) or "failed")
        return done, failed

    def groups(self, keys) -> tuple[list[str], str | None]:
        """(hidden layer groups in network order, "head" or None) scored for all of ``keys``."""
        sets = [self.by_key.get(key, set()) for key in keys]
        common = set.intersection(*sets) if sets else set()
        hidden = [g for g in group_order(common) if re.fullmatch(r"layer\d+", g)]
        return hidden, ("head" if "head" in common else None)

    def metric(self, key: str, prefer: tuple[str, ...]) -> str | None:
        return next((m for m in prefer if (key, m) in self.metrics), None)

    def get(self, key: str, group: str, metric: str, M: int = 0) -> Cell:
        return self.cells.get((key, group, metric, int(M)), Cell(math.nan))

    def grid(self, keys, group: str, metric: str) -> list[int]:
        sets = [self.ms.get((key, group, metric), set()) for key in keys]
        return sorted(set.intersection(*sets)) if sets else []


def _paper(chk: str, metric: str, method: str, group: str, M: int) -> float:
    """The published value of a cell, or NaN when the paper has none."""
    table = VALUES.get((chk, metric), {})
    if method not in table or group not in GROUPS or M not in M_GRID[metric]:
        return math.nan
    return float(table[method][GROUPS.index(group)][M_GRID[metric].index(M)])


def _need(done: dict, failed: dict, methods) -> list[str]:
    """What a claim lacks among ``methods``: 'X not run' or 'X failed (error)'."""
    out = []
    for m in methods:
        if m not in done:
            out.append(f"{m} failed ({failed[m]})" if m in failed else f"{m} not run")
    return out


def _row(n: int, where: str, results, missing, run_text: str, paper_text: str) -> dict:
    v = verdict(results, missing)
    if missing:
        run_text = "; ".join(t for t in (run_text, "missing: " + ", ".join(missing)) if t)
    return dict(zip(CLAIM_COLUMNS, (TITLES[n], where, v, run_text or "–", paper_text or "–", RULES[n])))


def _one_draw(look: _Lookup, chk: str, done: dict, failed: dict) -> dict:
    missing = _need(done, failed, (PSA,))
    rivals = [m for m in ONE_DRAW_RIVALS if m in done]
    missing += _need(done, failed, ONE_DRAW_RIVALS)
    if PSA not in done or not rivals:
        return _row(1, chk, [], missing, "", "")
    hidden, _ = look.groups([done[PSA]] + [done[m] for m in rivals])
    results, parts, paper = [], [], []
    for g in hidden:
        cells = {}
        for m in [PSA] + rivals:
            metric = look.metric(done[m], ("rel_rmse_emp", "rel_rmse"))
            cells[m] = look.get(done[m], g, metric, 1) if metric else Cell(math.nan)
        results += [below(cells[PSA], cells[m]) for m in rivals]
        parts.append(f"{g}: " + ", ".join(f"{m} {cells[m].text()}" for m in [PSA] + rivals))
        pv = [(m, _paper(chk, "rel_rmse", m, g, 1)) for m in (PSA,) + ONE_DRAW_RIVALS]
        if not any(math.isnan(v) for _, v in pv):
            paper.append(f"{g}: " + ", ".join(f"{m} {fmt_value(v)}" for m, v in pv))
    return _row(1, f"{chk}; {', '.join(hidden)}; M = 1", results, missing, "; ".join(parts), "; ".join(paper))


def _bias_pairs(look: _Lookup, groups, a: tuple, b: tuple, fmt) -> tuple[list, list[str], list[str]]:
    """Per group: whether ``a``'s relative bias is below ``b``'s (:func:`below`), the run's values and the
    paper's plateau relative RMSE (M = 9000) where it has both, each written by ``fmt(group, a, b)``.
    ``a`` and ``b`` are ``(task key, checkpoint, method)``."""
    results, parts, paper = [], [], []
    for g in groups:
        x, y = look.get(a[0], g, "rel_bias"), look.get(b[0], g, "rel_bias")
        results.append(below(x, y))
        parts.append(fmt(g, x.text(), y.text()))
        px, py = _paper(a[1], "rel_rmse", a[2], g, 9000), _paper(b[1], "rel_rmse", b[2], g, 9000)
        if not (math.isnan(px) or math.isnan(py)):
            paper.append(fmt(g, fmt_value(px), fmt_value(py)))
    return results, parts, paper


def _plateau(look: _Lookup, chk: str, done: dict, failed: dict) -> dict:
    missing = _need(done, failed, (PSA, ST))
    if missing:
        return _row(2, chk, [], missing, "", "")
    hidden, _ = look.groups([done[PSA], done[ST]])
    results, parts, paper = _bias_pairs(look, hidden, (done[PSA], chk, PSA), (done[ST], chk, ST),
                                        lambda g, a, b: f"{g}: PSA {a}, ST {b}")
    text = "plateau at M = 9000: " + "; ".join(paper) if paper else ""
    return _row(2, f"{chk}; {', '.join(hidden)}", results, [], "; ".join(parts), text)


def _unbiased(look: _Lookup, chk: str, done: dict, failed: dict) -> dict:
    missing = _need(done, failed, (PSA,))
    if missing:
        return _row(3, chk, [], missing, "", "")
    key = done[PSA]
    hidden, head = look.groups([key])
    groups = ([hidden[-1]] if hidden else []) + ([head] if head else [])
    results, parts, paper = [], [], []
    for g in groups:
        b, floor = look.get(key, g, "rel_bias"), look.get(key, g, "noise_floor").value
        if not math.isnan(b.lo):
            ok = b.lo <= 0
        elif not (math.isnan(b.value) or math.isnan(floor)):
            ok = b.value <= floor
        else:
            ok = None
        results.append(ok)
        parts.append(f"{g}: bias {b.text()}, noise floor {fmt_value(floor)}")
        pv = _paper(chk, "rel_rmse", PSA, g, 9000)
        if not math.isnan(pv):
            paper.append(f"{g}: {fmt_value(pv)}")
    text = "PSA plateau at M = 9000: " + "; ".join(paper) if paper else ""
    lack = [] if head and hidden else ["a hidden layer and the head"]
    return _row(3, f"{chk}; {', '.join(groups)}", results, lack, "; ".join(parts), text)


def _paper_crossing(chk: str, group: str) -> str:
    """Between which M of the published grid ARM's RMSE first falls below PSA's, from the published values."""
    prev = None
    for M in M_GRID["rel_rmse"]:
        a, p = _paper(chk, "rel_rmse", ARM, group, M), _paper(chk, "rel_rmse", PSA, group, M)
        if math.isnan(a) or math.isnan(p):
            return ""
        if a < p:
            return f"{group}: at M = {M}" if prev is None else f"{group}: between M = {prev} and {M}"
        prev = M
    return f"{group}: not within {M_GRID['rel_rmse'][-1]}"


def _overtake(look: _Lookup, chk: str, done: dict, failed: dict) -> dict:
    missing = _need(done, failed, (PSA, ARM))
    if missing:
        return _row(7, chk, [], missing, "", "")
    kp, ka = done[PSA], done[ARM]
    hidden, _ = look.groups([kp, ka])
    results, parts, paper, top = [], [], [], 0
    for i, g in enumerate(hidden):
        last = i == len(hidden) - 1
        mp = look.metric(kp, ("rel_rmse", "rel_rmse_emp"))
        ma = look.metric(ka, ("rel_rmse", "rel_rmse_emp"))
        grid = look.grid([kp, ka], g, mp) if mp == ma and mp else []
        cross = None
        for M in grid:
            p, a = look.get(kp, g, mp, M), look.get(ka, g, ma, M)
            order = below(p, a)  # True: PSA below ARM
            if order is False and cross is None:
                cross = (M, a, p)
            if last or M < MANY_DRAWS:
                results.append(order)
        top = max([top] + grid)
        if not grid:
            results.append(None)
            parts.append(f"{g}: no common M")
        elif cross:
            M, a, p = cross
            parts.append(f"{g}: ARM below PSA from M = {M} (ARM {a.text()}, PSA {p.text()})")
        else:
            M = grid[-1]
            parts.append(f"{g}: not within M ≤ {M} (at M = {M}: ARM {look.get(ka, g, ma, M).text()}, "
                         f"PSA {look.get(kp, g, mp, M).text()})")
        crossing = _paper_crossing(chk, g)
        if crossing:
            paper.append(crossing)
    where = f"{chk}; {', '.join(hidden)}; M = 1..{top}"
    return _row(7, where, results, [], "; ".join(parts), "; ".join(paper))


def _sd(look: _Lookup, key: str, g: str) -> Cell:
    """Relative sd of one draw, sqrt(trace_var) / |g|, with the trace's interval mapped through."""
    tv, gn = look.get(key, g, "trace_var"), look.get(key, g, "grad_norm").value
    if not gn > 0:
        return Cell(math.nan)
    f = lambda x: math.sqrt(x) / gn if x >= 0 else math.nan  # noqa: E731
    return Cell(f(tv.value), f(tv.lo), f(tv.hi))


def _concrete(look: _Lookup, chk: str, done: dict, failed: dict) -> dict:
    missing = _need(done, failed, (CONCRETE_LOW, CONCRETE_HIGH))
    if missing:
        return _row(8, chk, [], ["two temperatures"] + missing, "", "")
    kl, kh = done[CONCRETE_LOW], done[CONCRETE_HIGH]
    hidden, _ = look.groups([kl, kh])
    results, parts, paper = [], [], []
    for g in hidden:
        bl, bh = look.get(kl, g, "rel_bias"), look.get(kh, g, "rel_bias")
        sl, sh = _sd(look, kl, g), _sd(look, kh, g)
        results += [below(bl, bh), below(sh, sl)]
        parts.append(f"{g}: bias τ=0.1 {bl.text()}, τ=1 {bh.text()}; sd τ=0.1 {sl.text()}, τ=1 {sh.text()}")
        one = [_paper(chk, "rel_rmse", m, g, M) for m in (CONCRETE_LOW, CONCRETE_HIGH) for M in (1, 9000)]
        if not any(math.isnan(v) for v in one):
            paper.append(f"{g}: τ=0.1 {fmt_value(one[0])} → {fmt_value(one[1])}, "
                         f"τ=1 {fmt_value(one[2])} → {fmt_value(one[3])}")
    text = "RMSE at M = 1 → 9000: " + "; ".join(paper) if paper else ""
    return _row(8, f"{chk}; {', '.join(hidden)}", results, [], "; ".join(parts), text)


def _training(look: _Lookup, by_chk: dict) -> dict:
    early, late = CHECKPOINTS[0], CHECKPOINTS[-1]
    missing = [f"{PROBLEM_PREFIX}{c} not run" for c in (early, late) if c not in by_chk]
    results, parts, paper, where = [], [], [], []
    for method in (PSA, ST):
        have = [by_chk[c][0].get(method) for c in (early, late) if c in by_chk]
        for c in (early, late):
            if c in by_chk:
                missing += [f"{x} at {c}" for x in _need(*by_chk[c], (method,))]
        if len(have) < 2 or None in have:
            continue
        hidden, _ = look.groups(have)
        layers = hidden[:-1] if method == PSA else hidden
        where.append(f"{method} {', '.join(layers)}")
        got = _bias_pairs(look, layers, (have[0], early, method), (have[1], late, method),
                          lambda g, a, b, m=method: f"{m} {g}: {a} → {b}")
        for into, more in zip((results, parts, paper), got):
            into.extend(more)
    text = "plateau at M = 9000: " + "; ".join(paper) if paper else ""
    return _row(9, f"{early} → {late}; " + "; ".join(where), results, missing, "; ".join(parts), text)


def claims_table(run: RunResults) -> pd.DataFrame:
    """The paper's claims 1, 2, 3, 7, 8 and 9 evaluated on ``run`` (a validated :class:`RunResults`).

    One row per claim and checkpoint (claim 9 spans both), columns :data:`CLAIM_COLUMNS`; the
    verdict is one of :data:`VERDICTS`.
    """
    look = _Lookup(run)
    rows, by_chk = [], {}
    for chk in CHECKPOINTS:
        if PROBLEM_PREFIX + chk in look.problems:
            by_chk[chk] = look.methods(chk)
    for n, claim in ((1, _one_draw), (2, _plateau), (3, _unbiased), (7, _overtake), (8, _concrete)):
        for chk in CHECKPOINTS:
            if chk in by_chk:
                rows.append(claim(look, chk, *by_chk[chk]))
            else:
                rows.append(_row(n, chk, [], [f"{PROBLEM_PREFIX}{chk} not run"], "", ""))
    rows.append(_training(look, by_chk))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)
