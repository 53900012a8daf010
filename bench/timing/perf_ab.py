"""Timing A/B gate: the pytest-benchmark suite of a base commit against the candidate, in one job.

Absolute timings stored from another job are noise on shared runners (``docs/timing.md#perf-ab``), so
this never reads stored timings.  It exports ``BASE_REF`` (default ``origin/main``, else
``HEAD~1``) with ``git archive`` into a temporary directory, then runs the perf suite
``rounds`` times per tree, **alternating** base and candidate (base first in even rounds,
candidate first in odd ones) so both see the same machine state.  Each run imports its own tree
(``PYTHONPATH`` = that tree, checked before timing) and writes ``--benchmark-json``.

Per benchmark (matched by its test node id) the statistic is the median over rounds of the paired
ratio ``candidate median / base median`` of the same round.  A benchmark **fails when the candidate
is more than ``--max-slowdown`` percent slower (default 10%)**; improvements never fail.
Benchmarks present on one side only are listed, not judged.  Exit codes: 0 no regression, 1 a
regression, 2 bad input (unknown ref, no candidate benchmarks, a failing perf run).

Usage: ``python -m bench.timing.perf_ab [--base-ref REF] [--rounds 3] [--max-slowdown 10] [-- PYTEST ARGS]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Sequence

__all__ = ["medians", "compare", "format_report", "main"]

#: The perf suite, timed in CPU time: with one thread (``OMP_NUM_THREADS=1``) that equals the wall time of
#: CPU-bound code and ignores other load on a shared runner.
DEFAULT_PYTEST = ["tests/perf", "--benchmark-only", "--benchmark-enable", "--benchmark-timer=time.process_time",
                  "-p", "no:cacheprovider", "-q"]


class _Bad(Exception):
    """Bad input: one line on stderr, exit code 2."""


def medians(report: dict) -> dict[str, float]:
    """Benchmark node id -> median seconds, from one ``--benchmark-json`` report."""
    out = {}
    for bench in report.get("benchmarks", []):
        stats = bench.get("stats") or {}
        if isinstance(stats.get("median"), (int, float)):
            out[bench.get("fullname") or bench["name"]] = float(stats["median"])
    return out


def compare(base_runs: list[dict[str, float]], cand_runs: list[dict[str, float]], max_slowdown: float) -> list[dict]:
    """One row per benchmark: median paired ratio over rounds and whether it is a regression."""
    if len(base_runs) != len(cand_runs):
        raise ValueError("base and candidate need the same number of rounds")
    names = sorted(set().union(*base_runs, *cand_runs))
    rows = []
    for name in names:
        pairs = [(b[name], c[name]) for b, c in zip(base_runs, cand_runs) if name in b and name in c]
        if not pairs:
            side = "candidate" if any(name in c for c in cand_runs) else "base"
            rows.append(dict(name=name, base=None, cand=None, ratio=None, regression=False, note=f"only in {side}"))
            continue
        ratio = statistics.median(c / b if b > 0 else float("inf") for b, c in pairs)
        rows.append(dict(name=name, base=statistics.median(b for b, _ in pairs),
                         cand=statistics.median(c for _, c in pairs), ratio=ratio,
                         regression=ratio > 1 + max_slowdown / 100, note=f"{len(pairs)} rounds"))
    return rows


def format_report(rows: list[dict], max_slowdown: float) -> str:
    lines = [f"timing A/B (median of paired ratios; fail above +{max_slowdown:g}%)",
             f"{'benchmark':<70} {'base s':>10} {'cand s':>10} {'ratio':>7}  verdict"]
    for r in rows:
        if r["ratio"] is None:
            lines.append(f"{r['name']:<70} {'-':>10} {'-':>10} {'-':>7}  {r['note']}")
            continue
        verdict = "SLOWER" if r["regression"] else "ok"
        lines.append(f"{r['name']:<70} {r['base']:>10.4g} {r['cand']:>10.4g} {r['ratio']:>7.3f}  {verdict}")
    return "\n".join(lines)


def _git(repo: Path, *args: str) -> bytes:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True)
    if out.returncode != 0:
        raise _Bad(f"git {' '.join(args)} failed: {out.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    return out.stdout


def resolve_base(repo: Path, ref: str | None) -> str:
    """The commit of ``ref``; without one ``origin/main``, falling back to ``HEAD~1``."""
    for candidate in ([ref] if ref else ["origin/main", "HEAD~1"]):
        try:
            return _git(repo, "rev-parse", "--verify", f"{candidate}^{{commit}}").decode().strip()
        except _Bad:
            continue
    raise _Bad(f"cannot resolve base ref {ref or 'origin/main / HEAD~1'} (shallow clone? fetch with depth 0)")


def export(repo: Path, commit: str, dest: Path) -> Path:
    """Write the tree of ``commit`` to ``dest`` (no worktree bookkeeping left behind)."""
    with tarfile.open(fileobj=io.BytesIO(_git(repo, "archive", "--format=tar", commit))) as tar:
        tar.extractall(dest, filter="data")
    return dest


def run_suite(tree: Path, pytest_args: Sequence[str], json_path: Path) -> dict[str, float]:
    """Run the perf suite of ``tree`` against its own sources; return its medians."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    probe = subprocess.run([sys.executable, "-c", "import estimators, bench; print(estimators.__file__)"],
                           cwd=tree, env=env, capture_output=True, text=True)
    if probe.returncode != 0 or not Path(probe.stdout.strip()).resolve().is_relative_to(tree.resolve()):
        raise _Bad(f"the perf run in {tree} would not import that tree's sources ({probe.stdout.strip() or probe.stderr})")
    cmd = [sys.executable, "-m", "pytest", *pytest_args, f"--benchmark-json={json_path}"]
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode == 5 or not json_path.exists():
        return {}
    if out.returncode != 0:
        raise _Bad(f"perf suite failed in {tree} (exit {out.returncode}): {out.stdout.strip().splitlines()[-1:]}")
    return medians(json.loads(json_path.read_text()))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.timing.perf_ab", description=__doc__.splitlines()[0])
    p.add_argument("--base-ref", default=os.environ.get("BASE_REF") or None)
    p.add_argument("--repo", default=".", help="candidate tree, a git checkout (default: .)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-slowdown", type=float, default=10.0, metavar="PCT")
    p.add_argument("--keep", metavar="DIR", help="keep the benchmark JSON files here")
    p.add_argument("pytest_args", nargs="*", help="pytest arguments (after --); default: the tests/perf suite")
    args = p.parse_args(argv)
    try:
        if args.rounds < 1 or args.max_slowdown < 0:
            raise _Bad("--rounds must be >= 1 and --max-slowdown >= 0")
        repo = Path(args.repo).resolve()
        commit = resolve_base(repo, args.base_ref)
        pytest_args = args.pytest_args or DEFAULT_PYTEST
        with tempfile.TemporaryDirectory(prefix="sbn-perf-ab-") as tmp:
            base_tree = export(repo, commit, Path(tmp) / "base")
            out_dir = Path(args.keep) if args.keep else Path(tmp)
            out_dir.mkdir(parents=True, exist_ok=True)
            base_runs, cand_runs = [], []
            for r in range(args.rounds):
                order = [("base", base_tree), ("cand", repo)]
                for side, tree in order if r % 2 == 0 else order[::-1]:
                    res = run_suite(tree, pytest_args, out_dir / f"{side}-{r}.json")
                    (base_runs if side == "base" else cand_runs).append(res)
        if not any(cand_runs):
            raise _Bad("the candidate's perf suite produced no benchmarks")
    except _Bad as exc:
        print(f"perf-ab: error: {exc}", file=sys.stderr)
        return 2
    rows = compare(base_runs, cand_runs, args.max_slowdown)
    print(f"base {commit[:12]} vs candidate {repo}, {args.rounds} alternating rounds")
    print(format_report(rows, args.max_slowdown))
    return 1 if any(r["regression"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
