"""Training tasks: one (problem, estimator) training run per task, stored in one transaction.

A task spec holds every setting that shapes its numbers (problem, estimator, optimiser, learning
rate or search, epochs, batch, k, augmentation, device, dtype, root seed, checkpoints); its key is
the spec's hash, so rerunning the same command skips tasks already done.  Seeds: the data order
and augmentation stream derives from (root seed, problem, device) and is shared by every
estimator, as is the initial network (fixed by the problem spec); the estimator's sampling and the
evaluation streams derive from the task key.

The learning-rate search (:mod:`bench.training.lr_search`) runs inside the task; its trials are stored as
curve rows ``search_log10_lr`` / ``search_loss`` whose ``epoch`` is the trial number (1, 2, ...), and
the rate used as ``lr`` at epoch 0.  A training run that diverges is a result, not a failure: the
task is ``done`` with ``error = "diverged in epoch E ..."`` and a ``diverged_epoch`` row; any
exception marks it ``failed`` with a one-line error, keeping the curves recorded before it.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback

import numpy as np
import torch

from estimators import registry

from bench.training.lr_search import search_lr
from bench.tasks import task_key, task_seed
from bench.training.metrics import with_data
from bench.training.recipes import TrainConfig
from bench.training.setups import TrainProblem
from bench.training.loop import TrainResult, TrainSettings, train

__all__ = ["plan_train_tasks", "run_train_task", "checkpoint_file"]


def plan_train_tasks(cfg: TrainConfig, estimators: list[str]) -> list[dict]:
    common = {k: v for k, v in cfg.as_dict().items() if k not in ("estimators", "name", "seed")}
    common["root_seed"] = cfg.seed
    data_seed = task_seed(cfg.seed, task_key(dict(problem=cfg.problem, device=cfg.device, stream="data")))
    tasks = []
    for espec in estimators:
        spec = dict(common, kind="train", estimator=espec)
        key = task_key(spec)
        tasks.append(dict(spec, key=key, seed=task_seed(cfg.seed, key), data_seed=data_seed))
    return tasks


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in text)[:80]


def checkpoint_file(directory: str, task: dict, epoch: int) -> str:
    """``DIR/<problem>__<estimator>__<key8>/chk-<epoch>.npz``."""
    sub = f"{_slug(task['problem'])}__{_slug(task['estimator'])}__{task['key'][:8]}"
    return os.path.join(directory, sub, f"chk-{epoch}.npz")


def _saver(task: dict, tp: TrainProblem, directory: str | None):
    from reference.files import save_problem

    epochs = set(task["checkpoint_epochs"])
    if not epochs or directory is None:
        return None
    n = min(task["checkpoint_points"], tp.dataset.X_train.shape[0])
    X = tp.dataset.features(tp.dataset.X_train[:n], torch.float64)
    y = tp.dataset.y_train[:n]

    def save(epoch: int, net) -> None:
        if epoch in epochs:
            path = checkpoint_file(directory, task, epoch)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            name = f"{task['problem']} {task['estimator']} chk-{epoch}"
            host = net.to(dtype=torch.float64, device="cpu")
            save_problem(with_data(host, X, y.to(tp.problem.y.dtype)).replace(name=name), path)

    return save


def run_train_task(task: dict, tp: TrainProblem, checkpoint_dir: str | None = None, progress=None) -> dict:
    """Search the rate (unless given), train, evaluate each epoch; returns ``dict(task=row, curves=rows)``.

    ``progress(epoch)``, when given, is called after each epoch of the final training run.
    """
    est = registry.get(task["estimator"])
    row = dict(task_key=task["key"], problem=task["problem"], estimator=task["estimator"], estimator_name=est.name,
               unbiased=est.unbiased, device=task["device"], dtype=task["dtype"], draws=0, seed=task["seed"],
               status="failed", error="", spec=task)
    curves: list[dict] = []
    result: TrainResult | None = None
    t0 = time.perf_counter()
    try:
        net = tp.problem.to(dtype=getattr(torch, task["dtype"]), device=task["device"])
        est.check(net)
        data = tp.dataset.to(task["device"])
        est_seed, eval_seed = (int(s.generate_state(1)[0] >> 1) for s in np.random.SeedSequence(task["seed"]).spawn(2))
        seeds = (task["data_seed"], est_seed, eval_seed)
        settings = dict(optimizer=task["optimizer"], batch=task["batch"], samples=task["samples"],
                        momentum=task["momentum"], clip=task["clip"], augment=task["augment"],
                        crop_pad=task["crop_pad"])
        lr = task["lr"]
        if lr is None:
            trial = TrainSettings(lr=1.0, epochs=task["lr_search_epochs"], evaluate=False, **settings)
            search = search_lr(lambda r: train(net, data, est, dataclasses.replace(trial, lr=r), seeds).running_loss,
                               task["lr_search_trials"], tuple(task["lr_bounds"]))
            lr = search.lr
            for i, (t, value) in enumerate(search.trials, start=1):
                curves += [dict(epoch=i, metric="search_log10_lr", value=t),
                           dict(epoch=i, metric="search_loss", value=value)]
        curves.append(dict(epoch=0, metric="lr", value=lr))
        curves.append(dict(epoch=0, metric="search_seconds", value=time.perf_counter() - t0))
        save = _saver(task, tp, checkpoint_dir)

        def on_epoch(epoch: int, trained) -> None:
            if save is not None:
                save(epoch, trained)
            if progress is not None:
                progress(epoch)

        final = TrainSettings(lr=lr, epochs=task["epochs"], ensemble_sizes=tuple(task["ensemble_sizes"]), **settings)
        result = TrainResult()
        train(net, data, est, final, seeds, on_epoch=on_epoch, out=result)
        cost = est.cost(net)
    except Exception as exc:  # recorded, never lost
        last = traceback.extract_tb(exc.__traceback__)[-1]
        msg = " ".join(str(exc).split())  # one line
        row.update(error=f"{type(exc).__name__}: {msg} (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno})",
                   seconds=time.perf_counter() - t0)
        return dict(task=row, curves=_tag(curves + (result.rows if result is not None else []), task))
    curves += result.rows
    if result.diverged_at is not None:
        row["error"] = f"diverged in epoch {result.diverged_at} (non-finite parameters, lr={lr:.3g}); training stopped"
        curves.append(dict(epoch=result.diverged_at, metric="diverged_epoch", value=result.diverged_at))
    row.update(status="done", draws=result.steps, seconds=time.perf_counter() - t0,
               seconds_per_draw=result.step_seconds / max(result.steps, 1), layer_evals=cost.layer_evals,
               head_evals=cost.head_evals, backward_passes=cost.backward_passes, loss_evals_per_draw=cost.head_evals)
    return dict(task=row, curves=_tag(curves, task))


def _tag(curves: list[dict], task: dict) -> list[dict]:
    return [dict(c, problem=task["problem"], estimator=task["estimator"]) for c in curves]
