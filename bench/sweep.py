"""Run a sweep into the results store: validate everything first, then compute only what is missing.

Order of work: (1) resolve estimators and build every problem, checking that its exact reference
fits the memory budget — any bad input stops here with one line and nothing written; (2) open the
store and find or create the run (its id is derived from the config hash, so rerunning the same
command resumes the same run); (3) train missing checkpoints once, in this process; (4) submit the
tasks whose keys are not yet done to the executor and store each result, in its own transaction,
as it arrives.  Ctrl-C or ``kill -9`` loses no completed task.
"""

from __future__ import annotations

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import dataclasses
import datetime
import os
import secrets
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from estimators import inputs, registry
from estimators.errors import InputError
from reference.checkpoints import split_spec
from reference.exact import check_feasible, exact
from reference.problems import build_problem

from .config import SweepConfig
from .costs import timed_draws
from .executors import check_executor, make_executor
from .mc_reference import (DEFAULT_CANDIDATES, MIN_REFERENCE_DRAWS, check_stream_file, reference_key, stream_folder,
                           stream_path, uses_mc)
from .manifest import build_manifest
from .store import HEARTBEAT_S, Store
from .tasks import failed_row, plan_tasks, prepare_task_reference, run_task

__all__ = ["run_sweep", "SweepOutcome", "expand_estimators", "checkpoint_dir"]


@dataclass
class SweepOutcome:
    run_id: str
    total: int
    already_done: int
    ran: int
    failed: int
    skipped: list[str]
    elsewhere: int = 0  # tasks another process had claimed (computed there)
    errors: list[str] = dataclasses.field(default_factory=list)  # one line per failed task
    superseded: int = 0  # stored tasks of this run made by other code or problem content (kept, hidden)


def checkpoint_dir(db_path: str) -> str:
    """Checkpoints are cached beside the results database."""
    return os.path.join(os.path.dirname(os.path.abspath(db_path)), "sbn_checkpoints")


def expand_estimators(specs) -> list[str]:
    """Canonical estimator specs, ``*`` expanded to every registered estimator not listed before it.

    An estimator named twice (``st,st``, or ``concrete`` and ``concrete:tau=1.0``: the same canonical
    spec) is refused; ``*`` only adds what is not listed.  A plugin loaded from a module or file keeps its
    ``module:Class`` / ``file.py:Class`` form (with canonical options), so worker processes can load it too."""
    out: list[str] = []
    named: dict[str, str] = {}  # the estimator (registered name and options) -> how the user wrote it
    for spec in specs:
        star = spec.strip() == "*"
        if star and "*" in named.values():
            raise InputError("the estimators name '*' more than once")
        for s in registry.names() if star else [spec]:
            parsed = registry.resolve(s)
            est = registry.get(parsed)
            canonical = est.spec if not parsed.source else parsed.source + est.spec[len(est.name):]
            if not star and est.spec in named and named[est.spec] != "*":  # also a plugin and its bare name
                same = "" if named[est.spec] == spec else f" (as {named[est.spec]!r})"
                raise InputError(f"the estimators name {spec!r} more than once{same}")
            if est.spec not in named:
                out.append(canonical)
            named.setdefault(est.spec, "*" if star else spec)
    return out


def _problems(cfg: SweepConfig, notes: list[str] | None = None) -> tuple[dict, list[str]]:
    """The sweep's problems by spec (each built and checked once) and the specs scored against the Monte Carlo
    reference."""
    problems, mc_specs = {}, []
    seen: dict[tuple, str] = {}  # (content digest, checkpoint) -> the spec that named it first
    for spec in cfg.problems:
        base, epoch = split_spec(spec)
        problem = build_problem(base)
        first = seen.setdefault((problem.digest(), epoch), spec)
        if first != spec:  # `random:...,seed=0` and `random:...`, `a.npz` and `./a.npz`: one problem run twice
            raise InputError(f"the problems {first!r} and {spec!r} are the same problem (same content); name it once")
        if uses_mc(cfg.reference, problem, cfg.exact_method, int(cfg.memory_budget_gib * 2**30)):
            if notes is not None:
                notes.append(f"problem {spec}: scored against the Monte Carlo reference (docs/monte-carlo.md)")
            problems[spec] = problem
            mc_specs.append(spec)
            continue
        check_feasible(problem, cfg.exact_method, int(cfg.memory_budget_gib * 2**30))
        if "@" not in spec:  # checkpoints are trained later; their exact reference is checked by the task
            ex = exact(problem, cfg.exact_method, int(cfg.memory_budget_gib * 2**30))  # refuses a non-finite one
            zero = [g for g, v in ex.grads.items() if float(v.norm()) == 0.0]
            if zero and notes is not None:
                notes.append(f"problem {spec}: the exact gradient of {', '.join(zero)} is exactly zero (saturated "
                             f"units?); relative scores of those groups are undefined (NaN)")
        problems[spec] = problem
    return problems, mc_specs


#: the exact reference's memory budget when none is given (a different one with ``reference = "mc"`` is noted)
MEMORY_BUDGET_DEFAULT = SweepConfig.__dataclass_fields__["memory_budget_gib"].default

#: seconds between looks at the store while waiting for tasks another run of the same sweep computes
CLAIM_POLL_S = 1.0

#: draws per task above which a sweep's compute time is estimated (by a pilot) before it starts
PILOT_ABOVE_DRAWS = 10**6
#: estimated compute above which a sweep needs ``--allow-large`` (one day)
MAX_SWEEP_SECONDS = 24 * 3600.0
PILOT_DRAWS = 32


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def check_size(cfg: SweepConfig, tasks: list[dict], problems: dict) -> None:
    """Refuse a sweep that cannot finish in reasonable time, with an estimate measured here.

    Above :data:`PILOT_ABOVE_DRAWS` draws per task, each (problem, estimator) is timed on
    :data:`PILOT_DRAWS` draws after a warm-up call; a sweep whose estimated compute exceeds
    :data:`MAX_SWEEP_SECONDS`, or with more than :data:`~estimators.inputs.MAX_DRAWS` draws per task,
    is refused unless ``--allow-large`` is given.  Nothing has touched the disk yet."""
    dtype = getattr(torch, cfg.dtype)
    if any(t.get("mc", {}).get("draws", 0) > PILOT_ABOVE_DRAWS for t in tasks):
        _check_reference_size(cfg, tasks, problems, dtype)
    most = max((t["draws"] for t in tasks), default=0)  # per task: a problem may have its own budget
    if most <= PILOT_ABOVE_DRAWS:
        return
    per_draw: list[tuple[float, str, str]] = []
    total = 0.0
    for task in tasks:
        est = registry.from_task(task)
        problem = problems[task["problem"]].to(dtype=dtype, device=cfg.device)
        spd, _ = timed_draws(est, problem, PILOT_DRAWS, torch.Generator(device=cfg.device).manual_seed(0))
        per_draw.append((spd, task["estimator"], task["problem"]))
        total += spd * task["draws"]
    if most > inputs.MAX_DRAWS or total > MAX_SWEEP_SECONDS:
        slow, est_spec, pspec = max(per_draw)
        raise InputError(
            f"{most} draws per task: this sweep would need about {_duration(total)} of compute here (slowest: "
            f"{est_spec} on {pspec}, {slow * 1e3:.3g} ms per draw, timed on {PILOT_DRAWS} draws); the limits are "
            f"{inputs.MAX_DRAWS:.0e} draws per task and {MAX_SWEEP_SECONDS / 3600:g} hours of compute: pass "
            f"--allow-large to run it")


def _check_reference_size(cfg: SweepConfig, tasks: list[dict], problems: dict, dtype) -> None:
    """Refuse ``reference_draws`` that might not finish in a day.  Which reference estimator serves a group is
    the pilot's choice, made only when the stream is computed; so per Monte Carlo problem each candidate is
    timed on :data:`PILOT_DRAWS` draws, and the cost is bounded above by the slowest candidate unbiased for
    each group, summed over the groups (at most the sum over all candidates) and below by the fastest one.
    The upper bound is what is checked; the message gives both."""
    low = high = 0.0
    worst = (0.0, "")
    for pspec in dict.fromkeys(t["problem"] for t in tasks):
        task = next(t for t in tasks if t["problem"] == pspec)
        draws = task.get("mc", {}).get("draws")  # the problem's own reference budget, or the sweep's
        if draws is None or not uses_mc(task.get("reference", "auto"), problems[pspec], cfg.exact_method, task["budget"]):
            continue
        problem = problems[pspec].to(dtype=dtype, device=cfg.device)
        timed: dict[str, float] = {}
        slowest: dict[str, float] = {}  # group -> slowest candidate unbiased for it
        for spec in DEFAULT_CANDIDATES:
            est = registry.get(spec)
            try:
                est.check(problem)
                groups = [g for g in est.unbiased_groups(problem) if g in problem.group_names]
                if not groups:
                    continue
                spd, _ = timed_draws(est, problem, PILOT_DRAWS, torch.Generator(device=cfg.device).manual_seed(0))
            except InputError:
                continue
            timed[spec] = spd
            for g in groups:
                slowest[g] = max(slowest.get(g, 0.0), spd)
        if timed:
            up = min(sum(slowest.values()), sum(timed.values())) * draws
            low += min(timed.values()) * draws
            high += up
            worst = max(worst, (up, pspec))
    if high > MAX_SWEEP_SECONDS:
        most = max(t.get("mc", {}).get("draws", 0) for t in tasks)
        raise InputError(f"{most} reference draws per problem could need up to {_duration(high)} of "
                         f"compute here (at least {_duration(low)}; most on {worst[1]}: the reference estimators are "
                         f"chosen by a pilot when the stream is computed, timed here on {PILOT_DRAWS} draws each); the "
                         f"limit is {MAX_SWEEP_SECONDS / 3600:g} hours: use fewer draws or --reference-seconds, or pass "
                         f"--allow-large to run it")


def _progress(total: int, desc: str, unit: str = "task"):
    """A tqdm bar on stderr, silent when stderr is not a terminal (CI logs)."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False)


def _submit(ex, executor: str, task: dict, cache: str):
    """Submit one task; in-process tasks also get a progress bar over their draws (tqdm, stderr)."""
    if executor != "inprocess":
        return ex.submit(run_task, task, cache)
    bar = _progress(task["draws"], f"{task['estimator']} | {task['problem']}", unit="draw")
    try:
        return ex.submit(run_task, task, cache, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


def _check_cache_folder(folder: str) -> None:
    """Refuse, before anything is written, a reference cache folder that cannot be made: a part of its path
    that exists but is no folder (``sbn_checkpoints`` a file), or a nearest existing folder that takes no
    new entries."""
    base = os.path.abspath(folder)
    while not os.path.lexists(base):
        base = os.path.dirname(base)
    why = (f"{base} is not a folder" if not os.path.isdir(base) else
           None if base == os.path.abspath(folder) else inputs.cannot_create_in(base))
    if why:
        raise InputError(f"cannot create the Monte Carlo reference cache {folder}: {why}")


class _Heartbeat:
    """A daemon thread renewing this process's claims every :data:`~bench.store.HEARTBEAT_S` seconds (its own
    connection: SQLite connections stay in their thread), until :meth:`stop` or the process ends."""

    def __init__(self, db: str, run_id: str):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(db, run_id), name="sbn-bench-claims", daemon=True)
        self._thread.start()

    def _run(self, db: str, run_id: str) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                with Store(db) as store:
                    store.heartbeat(run_id)
            except (InputError, OSError, sqlite3.DatabaseError):  # the sweep itself reports a store gone bad
                pass

    def stop(self) -> None:
        self._stop.set()


def _prepare_references(ex, todo: list[dict], problems: dict, cache: str) -> None:
    """Compute the Monte Carlo reference streams the pending tasks need, one job per problem on the executor,
    before any task is scored: every estimator of a problem then reads the same stream from the cache
    (``docs/monte-carlo.md#budget``).  A stream already cached (an interrupted sweep) is not recomputed."""
    jobs: dict[str, dict] = {}  # the folder was checked before the store (_check_cache_folder); a job makes it
    for task in todo:
        if uses_mc(task.get("reference", "auto"), problems[task["problem"]], task["exact_method"], task["budget"]):
            key = reference_key(task)
            if key not in jobs and not os.path.exists(stream_path(task, cache)):
                jobs[key] = task
    if not jobs:
        return
    bar = _progress(len(jobs), "Monte Carlo references", unit="problem")
    if bar is None or bar.disable:  # no progress bar (stderr is a log): say what the silent minutes are for
        print(f"computing the Monte Carlo reference stream of {len(jobs)} problem(s) before scoring "
              f"({', '.join(t['problem'] for t in jobs.values())[:200]})", file=sys.stderr, flush=True)
    futures = {ex.submit(prepare_task_reference, task, cache): task for task in jobs.values()}
    for fut in cf.as_completed(futures):
        try:
            fut.result()  # an error string: each of the problem's tasks meets it again and reports it
        except BrokenProcessPool:
            raise InputError(f"a worker process died while computing the Monte Carlo reference of "
                             f"{futures[fut]['problem']} (killed, or out of memory?); completed tasks are kept: "
                             f"rerun the command to resume") from None
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()


def run_sweep(cfg: SweepConfig, db: str, executor: str = "inprocess", workers: int | None = None,
              scheduler: str | None = None, label: str = "", fresh: bool = False,
              allow_large: bool = False) -> SweepOutcome:
    """Plan the sweep, check everything, then run what the store does not hold yet.

    Nothing touches the disk before the problems, estimators, executor and sizes are checked; more
    than :data:`~estimators.inputs.MAX_DRAWS` draws per task are refused unless ``allow_large``."""
    check_executor(executor, workers, scheduler)
    estimators = expand_estimators(cfg.estimators)
    notes: list[str] = []
    problems, mc_specs = _problems(cfg, notes)
    any_mc = bool(mc_specs)
    for spec in mc_specs:
        draws = cfg.for_problem(spec).draws
        if draws < MIN_REFERENCE_DRAWS:
            raise InputError(f"{draws} draws per task{'' if draws == cfg.draws else f' of {spec}'}: a Monte Carlo "
                             f"score needs at least {MIN_REFERENCE_DRAWS} (its interval comes from "
                             f"{MIN_REFERENCE_DRAWS // 2} batches of at least 2 draws)")
    if any_mc and cfg.exact_method == "brute":
        notes.append("--exact-method brute applies only to the problems scored exactly; the Monte Carlo ones "
                     "enumerate nothing")
    if cfg.reference_budget() and not any_mc:
        notes.append("the Monte Carlo reference's budget (reference draws or seconds) has no effect: every problem "
                     "of this sweep is scored against the exact reference")
    for spec, own in cfg.problem_budgets.items():
        if spec not in mc_specs and any(k.startswith("reference_") for k in own):
            notes.append(f"problem {spec}: its own reference budget has no effect: it is scored against the exact "
                         f"reference")
    if cfg.reference == "mc" and cfg.memory_budget_gib != MEMORY_BUDGET_DEFAULT:
        notes.append("--memory-budget sets which problems the exact reference may enumerate; with --reference mc "
                     "none is enumerated, so it has no effect")
    if cfg.cost_time == 0 and (cfg.cost_threads is not None or cfg.cost_clock != "wall"):
        notes.append("--threads and --clock set how the cost per draw is timed; with --cost-time 0 nothing is timed, "
                     "so they have no effect")
    tasks, skipped = plan_tasks(cfg, problems, estimators)
    if not tasks:  # every pair skipped: an empty run stored with exit 0 would read as a sweep that ran
        first = skipped[0].removeprefix("skipped: ") if skipped else "none"
        raise InputError(f"nothing to run: every (problem, estimator) pair of this sweep was skipped ({len(skipped)}; "
                         f"first: {first})")
    if not allow_large:
        check_size(cfg, tasks, problems)
    skipped = notes + skipped
    if cfg.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda was asked for, but CUDA is not available here")
    if any_mc:
        _check_cache_folder(stream_folder(checkpoint_dir(db)))
        for task in tasks:  # an entry the streams would be written to (or read from) that is not ours: refused now
            if task["problem"] in mc_specs:
                check_stream_file(stream_path(task, checkpoint_dir(db)))
    # the executor first: a Dask scheduler that cannot be reached is refused before the store is touched
    with make_executor(executor, workers, scheduler) as (ex, window):
        store = Store(db, create=True)
        beat = None
        try:
            run_id = f"{cfg.name}-{cfg.hash[:10]}"
            if fresh:  # its own run, even beside another --fresh started in the same second
                run_id += datetime.datetime.now(datetime.timezone.utc).strftime("-%Y%m%dT%H%M%S-") + secrets.token_hex(2)
            if not store.has_run(run_id):
                manifest = build_manifest(cfg.as_dict(), cfg.hash, cfg.seed, cfg.device, preset=cfg.name, label=label)
                manifest["run_id"] = run_id
                manifest["skipped_pairs"] = skipped
                store.create_run(run_id, manifest, cfg.hash, label=label, preset=cfg.name)
            cache = checkpoint_dir(db)
            trained = {spec: build_problem(spec, cache_dir=cache) for spec in cfg.problems if "@" in spec}
            if trained:  # checkpoints are trained (once, cached) here: key their tasks by the trained content
                tasks, _ = plan_tasks(cfg, {**problems, **trained}, estimators)
            superseded = store.supersede(run_id, {t["key"] for t in tasks})
            done = store.done_keys(run_id)
            todo = [t for t in tasks if t["key"] not in done]
            _prepare_references(ex, todo, {**problems, **trained}, cache)
            failed = elsewhere = 0
            errors: list[str] = []
            beat = _Heartbeat(db, run_id)  # keeps this process's claims alive for runs on other hosts
            bar = _progress(len(todo), cfg.name)
            pending: set = set()
            submitted: dict = {}
            queue = list(reversed(todo))  # popped from the end: the planned order
            held: list[dict] = []  # tasks another run of this sweep is computing: waited for below
            waited = False
            while True:
                while len(pending) < window and queue:
                    task = queue.pop()
                    if not store.claim(run_id, task["key"], task["problem"], task["estimator"]):
                        held.append(task)  # another run of this sweep on this store computes it
                        continue
                    fut = _submit(ex, executor, task, cache)
                    submitted[fut] = task
                    pending.add(fut)
                if not pending and not queue and held:  # ours are done: wait for the others' (or take them over)
                    if not waited:
                        print(f"waiting for {len(held)} task(s) another run of this sweep is computing on this "
                              f"store", file=sys.stderr, flush=True)
                        waited = True
                    time.sleep(CLAIM_POLL_S)
                    state = {id(t): store.claim_state(run_id, t["key"]) for t in held}
                    for t in held:
                        if state[id(t)] == "finished":
                            elsewhere += 1
                            if bar is not None:
                                bar.update(1)
                    queue = [t for t in reversed(held) if state[id(t)] == "free"]  # its run died: computed here
                    held = [t for t in held if state[id(t)] == "held"]
                    continue
                if not pending:
                    break
                finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    try:
                        res = fut.result()
                    except BrokenProcessPool:  # a worker died (killed by a signal, out of memory, os._exit)
                        task = submitted[fut]
                        store.write_task(run_id, failed_row(task, "the worker process died (killed by a signal or out of memory)"))
                        raise InputError(f"a worker process died while computing {task['estimator']} on "
                                         f"{task['problem']} (killed, or out of memory?); that task is stored as "
                                         f"failed and completed tasks are kept: rerun the command to resume") from None
                    store.write_task(run_id, res["task"], res["scores"], res["moments"])
                    if res["task"]["status"] != "done":
                        failed += 1
                        errors.append(f"{res['task']['estimator']} on {res['task']['problem']}: {res['task']['error']}")
                    if bar is not None:
                        bar.update(1)
            if bar is not None:
                bar.close()
            return SweepOutcome(run_id, len(tasks), len(tasks) - len(todo), len(todo) - elsewhere, failed, skipped,
                                elsewhere, errors, superseded)
        finally:
            if beat is not None:
                beat.stop()
            store.close()
