"""Sweep tasks: a small picklable spec in, result rows out (workers get specs, never tensors).

A task is one (problem, estimator) pair with the sweep's settings.  Its key is a hash of everything
that determines its result: the problem's content (:meth:`~estimators.model.problem.Problem.digest`,
never only its name or file path), the estimator's canonical spec and options, the identity of its
code (:func:`estimators.registry.origin`: built-ins by package version and source digest, plugins by
distribution version or file hash) and the sweep's settings.  A stored result is reused only when
all of these match (``docs/architecture.md#results-are-keyed-by-content``).

Its seed is derived from the run's root seed and the key of the same spec *without* the content
and code identities (``numpy.random.SeedSequence(root, spawn_key=...)``), so adding or removing
tasks never changes another task's random stream, a rerun reproduces it exactly, and a code change
that does not change an estimator's numbers gives the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import torch

from estimators import registry
from estimators.errors import EstimatorError, InputError, one_line, raised_at
from reference import exact
from reference.checkpoints import checkpoint_facts
from reference.problems import build_problem

from .config import SweepConfig
from .costs import task_cost, with_cost
from .mc_reference import prepare_reference, score_task_mc, uses_mc
from .scoring import score

__all__ = ["plan_tasks", "task_key", "seed_key", "task_seed", "failed_row", "run_task", "prepare_task_reference"]

#: spec fields that identify content or code: part of a task's key, not of its random stream
IDENTITY_FIELDS = ("estimator_origin", "problem_digest")


def task_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def seed_key(spec: dict) -> str:
    """The key a task's random stream is spawned along: its spec without :data:`IDENTITY_FIELDS`."""
    return task_key({k: v for k, v in spec.items() if k not in IDENTITY_FIELDS})


def task_seed(root: int, key: str) -> int:
    """A 63-bit seed spawned from the root seed along the task's key."""
    ss = np.random.SeedSequence(root, spawn_key=(int(key[:8], 16), int(key[8:16], 16)))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def plan_tasks(cfg: SweepConfig, problems: dict, estimators: list[str]) -> tuple[list[dict], list[str]]:
    """Expand the sweep into task specs; pairs an estimator does not support are returned as notes."""
    tasks, skipped = [], []
    records = [registry.task_record(espec) for espec in estimators]  # each spec resolved once
    digests = {pspec: problem.digest() for pspec, problem in problems.items()}
    for pspec, problem in problems.items():
        pc = cfg.for_problem(pspec)  # the sweep's settings with this problem's own budget, if it has one
        for est, record in records:
            try:
                est.check(problem)
            except InputError as exc:
                skipped.append(f"skipped: {exc} [problem {pspec}]")
                continue
            spec = dict(problem=pspec, problem_digest=digests[pspec], **record, draws=pc.draws,
                        grid=list(pc.grid) if pc.grid else None, chunk=pc.chunk, device=pc.device,
                        dtype=pc.dtype, exact_method=pc.exact_method,
                        budget=int(pc.memory_budget_gib * 2**30), root_seed=pc.seed)
            if pc.reference != "auto":  # absent for auto: task keys planned before it existed are unchanged
                spec["reference"] = pc.reference
            if pc.reference_budget():  # the Monte Carlo reference's draws or seconds, when set
                spec["mc"] = pc.reference_budget()
            tasks.append(dict(spec, key=task_key(spec), seed=task_seed(cfg.seed, seed_key(spec)),
                              cost=cfg.cost_settings().as_dict()))
    return tasks, skipped


def _score_against_reference(task: dict, est, problem, here, progress, cache_dir=None):
    """Scores of ``est`` on ``here`` (the problem in the task's dtype and device) and the facts naming the
    reference that produced them: exact enumeration of ``problem`` (as built, float64) where the task's
    ``reference`` setting allows and it fits, else Monte Carlo (:mod:`bench.mc_reference`, with its
    estimators, draws and interval level)."""
    if uses_mc(task.get("reference", "auto"), problem, task["exact_method"], task["budget"]):
        result = score_task_mc(task, est, here, progress, cache_dir=cache_dir)
        return result, {"reference": result.reference}
    ex = exact(problem, task["exact_method"], budget=task["budget"])
    gen = torch.Generator(device=task["device"]).manual_seed(task["seed"])
    result = score(est, here, ex.grads, task["draws"], gen, grid=task["grid"], chunk=task["chunk"], progress=progress)
    return result, {"reference": {"kind": "exact", "method": ex.method}}


def prepare_task_reference(task: dict, cache_dir: str) -> str | None:
    """Compute and cache the Monte Carlo reference stream that the tasks of ``task``'s problem share
    (:func:`bench.mc_reference.prepare_reference`); ``None``, or a one-line error (the tasks then report it)."""
    try:
        problem = build_problem(task["problem"], cache_dir=cache_dir)
        here = problem.to(dtype=getattr(torch, task["dtype"]), device=task["device"]).replace(name=task["problem"])
        prepare_reference(task, here, cache_dir)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - each of the problem's tasks meets it again and reports it
        return f"{type(exc).__name__}: {one_line(exc)}"
    return None


def failed_row(task: dict, error: str, **fields) -> dict:
    """The stored row of a task that failed with ``error`` (``run_task`` starts from it, and a sweep
    stores it for a task whose worker died)."""
    row = dict(task_key=task["key"], problem=task["problem"], estimator=task["estimator"],
               estimator_name=task.get("estimator_name"), device=task["device"], dtype=task["dtype"],
               draws=task["draws"], seed=task["seed"], status="failed", error=error, spec=task)
    return {**row, **fields}


def run_task(task: dict, cache_dir: str | None = None, progress=None) -> dict:
    """Run one task: build the problem, its exact gradient, stream and score the estimator, measure its cost.

    Never raises for a failing estimator: the task comes back with ``status = 'failed'`` and a
    one-line error, so a sweep always records what happened.
    """
    est = registry.from_task(task)
    row = failed_row(task, "", estimator_name=est.name, unbiased=est.unbiased)
    t0 = time.perf_counter()
    try:
        problem = build_problem(task["problem"], cache_dir=cache_dir)
        if "problem_digest" in task and problem.digest() != task["problem_digest"]:
            raise InputError(f"problem {task['problem']!r} changed after the sweep was planned (its content "
                             f"digest differs); run the sweep again")
        if cache_dir is not None and "@" in task["problem"]:  # the checkpoint's training facts, for the report
            row["facts"] = checkpoint_facts(cache_dir, task["problem"])
        here = problem.to(dtype=getattr(torch, task["dtype"]), device=task["device"]).replace(name=task["problem"])
        result, facts = _score_against_reference(task, est, problem, here, progress, cache_dir)
        row.setdefault("facts", {}).update(facts)
        cost = est.cost(here)
        measured = task_cost(est, here, task, result.seconds_per_draw)  # docs/timing.md#cost-per-draw
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - recorded, never lost: the report shows failed tasks
        if isinstance(exc, EstimatorError):  # names the estimator and where its code raised
            error = f"{type(exc).__name__}: {one_line(exc)}"
        else:  # a failure of the problem or the scoring (an estimator's own is an EstimatorError)
            what = f"sys.exit({exc.code!r}) was called" if isinstance(exc, SystemExit) else one_line(exc)
            error = f"{type(exc).__name__}: {what}{raised_at(exc)}"
        row.update(error=error, seconds=time.perf_counter() - t0)
        return dict(task=row, scores=[], moments={})
    row.update(status="done", seconds=time.perf_counter() - t0, seconds_per_draw=measured["s_per_draw"],
               layer_evals=cost.layer_evals, head_evals=cost.head_evals, backward_passes=cost.backward_passes,
               loss_evals_per_draw=cost.head_evals, facts={**row.get("facts", {}), "cost": measured})
    scores = [dict(r, task_key=task["key"]) for r in with_cost(result.rows, measured["s_per_draw"])]
    moments = {g: (m.n, m.mean, m.m2) for g, m in result.moments.items()}
    return dict(task=row, scores=scores, moments=moments)
