"""The Python API: what a notebook needs, in five functions.

Each runs the same code as the command line (the same parsing, sweeps, store and reports):

- :func:`problem` — a named problem (``"psa-2-5-5-5"``, ``"random:widths=2-4-4,seed=1"``, ...) or an
  ``.npz`` problem file;
- :func:`exact` — its exact expected loss and gradient (float64, by enumeration);
- :func:`score` — score estimators on problems against the exact gradient, as a tidy
  :class:`pandas.DataFrame` (optionally kept in a results store);
- :func:`report` — build the HTML/PDF report of a stored run;
- :func:`validate` — put an estimator through the contract checks.

Estimators are named as on the command line: ``"psa"``, ``"concrete:tau=0.1"``, or a plugin
``"package.module:Class"`` / ``"path/file.py:Class"``.  Bad input raises
:class:`estimators.errors.InputError` with a one-line message.

>>> from bench import api
>>> p = api.problem("psa-2-5-5-5")
>>> round(api.exact(p).loss, 4)
0.7707
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import pandas as pd

from bench.config import SweepConfig
from bench.rendering import render
from bench.store import DEFAULT_DB, Store
from bench.sweep import run_sweep
from bench.validate import Report, check_estimator
from estimators.errors import InputError
from estimators.model import Problem
from reference.exact import Exact
from reference.exact import exact as _exact
from reference.files import load_problem
from reference.problems import build_problem

__all__ = ["problem", "exact", "score", "report", "validate"]


def problem(spec: str) -> Problem:
    """The problem named by ``spec``, or loaded from an ``.npz`` problem file.

    >>> problem("random:widths=2-4-4,points=5,seed=1").widths
    (2, 4, 4)
    """
    spec = str(spec)
    return load_problem(spec) if spec.endswith(".npz") else build_problem(spec)


def exact(p: Problem | str, method: str = "transfer") -> Exact:
    """Exact expected loss and gradient per parameter group (float64): ``.loss`` and ``.grads``.

    >>> g = exact("random:widths=2-3-3,points=4,seed=2").grads
    >>> sorted(g)
    ['head', 'layer0', 'layer1']
    """
    return _exact(problem(p) if isinstance(p, str) else p, method)


def score(estimators: Sequence[str] | str, problems: Sequence[str] | str, draws: int = 2000,
          grid: Sequence[int] | None = None, seed: int = 0, dtype: str = "float64", device: str = "cpu",
          store: str | None = None, name: str = "api", executor: str = "inprocess",
          workers: int | None = None) -> pd.DataFrame:
    """Score ``estimators`` on ``problems``: one row per (problem, estimator, group, metric, M).

    Columns: ``problem, estimator, group, metric, M, value, lo, hi`` (``lo``/``hi``: the confidence
    interval where the metric has one; see ``docs/scores.md#metrics``).  With ``store`` (a database
    path) the run is kept there like a ``sbn-bench run`` (resumable; :func:`report` renders it);
    otherwise nothing is left on disk.

    >>> df = score(["psa", "st"], "random:widths=2-3-3,points=4,seed=2", draws=200)
    >>> sorted(df["estimator"].unique())
    ['psa', 'st']
    >>> bool((df.query("metric == 'rel_rmse' and M == 1")["value"] > 0).all())
    True
    """
    ests = [estimators] if isinstance(estimators, str) else list(estimators)
    probs = [problems] if isinstance(problems, str) else list(problems)
    cfg = SweepConfig(problems=tuple(probs), estimators=tuple(ests), draws=draws,
                      grid=tuple(grid) if grid is not None else None, seed=seed, dtype=dtype, device=device, name=name)
    with tempfile.TemporaryDirectory(prefix="sbn-bench-") as tmp:
        db = store or os.path.join(tmp, "results.sqlite")
        out = run_sweep(cfg, db, executor=executor, workers=workers)
        with Store(db) as st:
            tasks, scores = st.tasks(out.run_id), st.scores(out.run_id)
    failed = tasks[tasks["status"] != "done"]
    if not failed.empty:
        first = failed.iloc[0]
        raise InputError(f"{len(failed)} task(s) failed, e.g. {first['estimator']} on {first['problem']}: "
                         f"{first['error']}")
    return scores.drop(columns=["task_key"]).reset_index(drop=True)


def report(run: str = "latest", store: str = DEFAULT_DB, out: str | os.PathLike | None = None,
           formats: Sequence[str] = ("html", "pdf")) -> dict[str, Path]:
    """Render a stored run (an id, a unique prefix, or ``latest``) into ``out``; returns the written paths.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> _ = score("st", "random:widths=2-3-3,points=4,seed=2", draws=100, store=os.path.join(d, "r.sqlite"))
    >>> sorted(report("latest", os.path.join(d, "r.sqlite"), os.path.join(d, "rep"), ["html"]))
    ['html', 'tables']
    """
    return render(str(store), [run], None if out is None else str(out), ",".join(formats))


def validate(estimator: str, checks: Sequence[str] | None = None, seed: int = 0) -> Report:
    """The contract checks of :mod:`bench.validate` on ``estimator``; ``.passed``, ``.table()``.

    >>> validate("psa", checks=["output", "from-path"]).passed
    True
    """
    return check_estimator(estimator, list(checks) if checks is not None else None, seed=seed)
