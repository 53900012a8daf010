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
import json
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from bench.manifest import build_manifest
from bench.rendering import check_out_files, write_file
from bench.store import Store
from bench.tasks import seed_key, task_key, task_seed
from bench.training.loop import TrainResult, TrainSettings, train
from bench.training.lr_search import search_lr
from bench.training.metrics import with_data
from bench.training.recipes import TrainConfig
from bench.training.setups import TrainProblem
from estimators import registry
from estimators.errors import InputError, one_line, raised_at
from reference.files import save_problem

__all__ = ["TrainingRun", "check_checkpoint_folders", "checkpoint_file", "checkpoint_folder", "plan_train_tasks", "prepare", "run_train_task", "run_training"]


def plan_train_tasks(cfg: TrainConfig, estimators: list[str]) -> list[dict]:
    common = {k: v for k, v in cfg.as_dict().items() if k not in ("estimators", "name", "seed")}
    common["root_seed"] = cfg.seed
    data_seed = task_seed(cfg.seed, task_key(dict(problem=cfg.problem, device=cfg.device, stream="data")))
    tasks = []
    for espec in estimators:
        spec = dict(common, kind="train", **registry.task_record(espec)[1])
        tasks.append(dict(spec, key=task_key(spec), seed=task_seed(cfg.seed, seed_key(spec)), data_seed=data_seed))
    return tasks


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in text)[:80]


def checkpoint_folder(directory: str, task: dict, tasks: list[dict]) -> str:
    """Where a task's checkpoints go: ``DIR`` itself when the run trains one estimator, else
    ``DIR/<estimator>`` (one sub-folder per estimator of the run)."""
    if len(tasks) == 1:
        return directory
    return os.path.join(directory, _slug(task["estimator"]))


def checkpoint_file(directory: str, task: dict, epoch: int, tasks: list[dict] | None = None) -> str:
    """``DIR/chk-<epoch>.npz`` (one estimator) or ``DIR/<estimator>/chk-<epoch>.npz``."""
    return os.path.join(checkpoint_folder(directory, task, tasks if tasks is not None else [task]), f"chk-{epoch}.npz")


_OWNER = "checkpoints.json"


def check_checkpoint_folders(directory: str | None, tasks: list[dict]) -> None:
    """Refuse (before anything is trained or written) a checkpoint folder that holds another
    training's checkpoints: each folder names the task that owns it in ``checkpoints.json``."""
    if directory is None or not any(t["checkpoint_epochs"] for t in tasks):
        return
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise InputError(f"--checkpoint-dir {directory!r} is a file, not a folder")
    for task in tasks:
        folder = checkpoint_folder(directory, task, tasks)
        owner = os.path.join(folder, _OWNER)
        if os.path.isfile(owner):
            try:
                with open(owner) as fh:
                    key = json.load(fh).get("task_key")
            except (OSError, ValueError, AttributeError):
                key = None
            if key != task["key"]:
                raise InputError(f"checkpoint folder {folder!r} holds the checkpoints of another training; choose "
                                 f"another --checkpoint-dir (nothing was trained)")
        elif os.path.isdir(folder) and any(n.startswith("chk-") and n.endswith(".npz") for n in os.listdir(folder)):
            raise InputError(f"checkpoint folder {folder!r} already holds chk-*.npz files of unknown origin; choose "
                             f"another --checkpoint-dir (nothing was trained)")


def _saver(task: dict, tp: TrainProblem, directory: str | None, tasks: list[dict] | None = None):
    epochs = set(task["checkpoint_epochs"])
    if not epochs or directory is None:
        return None
    n = min(task["checkpoint_points"], tp.dataset.X_train.shape[0])
    X = tp.dataset.features(tp.dataset.X_train[:n], torch.float64)
    y = tp.dataset.y_train[:n]

    def save(epoch: int, net) -> None:
        if epoch in epochs:
            path = checkpoint_file(directory, task, epoch, tasks)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            owner = os.path.join(os.path.dirname(path), _OWNER)
            check_out_files(os.path.dirname(path), [_OWNER], "train's checkpoint record")  # never onto a store
            write_file(owner, json.dumps(dict(task_key=task["key"], problem=task["problem"],
                                              estimator=task["estimator"])))
            name = f"{task['problem']} {task['estimator']} chk-{epoch}"
            host = net.to(dtype=torch.float64, device="cpu")
            save_problem(with_data(host, X, y.to(tp.problem.y.dtype)).replace(name=name), path)

    return save


def run_train_task(task: dict, tp: TrainProblem, checkpoint_dir: str | None = None, progress=None,
                   tasks: list[dict] | None = None) -> dict:
    """Search the rate (unless given), train, evaluate each epoch; returns ``dict(task=row, curves=rows)``.

    ``progress(epoch)``, when given, is called after each epoch of the final training run.
    """
    est = registry.from_task(task)
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
        save = _saver(task, tp, checkpoint_dir, tasks)

        def on_epoch(epoch: int, trained) -> None:
            if save is not None:
                save(epoch, trained)
            if progress is not None:
                progress(epoch)

        final = TrainSettings(lr=lr, epochs=task["epochs"], ensemble_sizes=tuple(task["ensemble_sizes"]), **settings)
        result = TrainResult()
        train(net, data, est, final, seeds, on_epoch=on_epoch, out=result)
        cost = est.cost(net)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - recorded, never lost (a plugin may raise anything)
        row.update(error=f"{type(exc).__name__}: {one_line(exc)}{raised_at(exc)}", seconds=time.perf_counter() - t0)
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


def prepare(cfg: TrainConfig, tp: TrainProblem, augment_asked: bool) -> TrainConfig:
    """Check ``cfg`` against the built problem before anything is written: the device, augmentation
    (dropped for non-image data unless asked for explicitly), every estimator's support."""
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but CUDA is not available here (pass --device cpu)")
    if cfg.augment and tp.dataset.image_shape is None:
        if augment_asked:
            raise InputError(f"problem {cfg.problem!r} holds no images; --augment (flip and crop) needs images")
        cfg = cfg.replace(augment=False)  # the recipe's augmentation applies to image data only
    for espec in cfg.estimators:
        registry.get(espec).check(tp.problem)
    return cfg


@dataclasses.dataclass
class TrainingRun:
    """What :func:`run_training` did: the run id, its tasks, how many were already stored, trained, failed."""

    run_id: str
    tasks: list[dict]
    already_done: int
    trained: int
    failed: int


def _bar(total: int, desc: str):
    return tqdm(total=total, desc=desc, unit="epoch", file=sys.stderr, disable=None, leave=False)


def run_training(cfg: TrainConfig, tp: TrainProblem, db: str, recipe: str, label: str = "",
                 checkpoint_dir: str | None = None) -> TrainingRun:
    """Train every estimator of ``cfg`` not yet stored in ``db`` (resumable), one transaction per task."""
    tasks = plan_train_tasks(cfg, list(cfg.estimators))
    check_checkpoint_folders(checkpoint_dir, tasks)
    store = Store(db, create=True)
    try:
        run_id = f"{cfg.name}-{cfg.hash[:10]}"
        if not store.has_run(run_id):
            manifest = build_manifest(cfg.as_dict(), cfg.hash, cfg.seed, cfg.device, preset=recipe, label=label)
            manifest.update(run_id=run_id, kind="train")
            store.create_run(run_id, manifest, cfg.hash, label=label, preset=recipe)
        done = store.done_keys(run_id)
        todo = [t for t in tasks if t["key"] not in done]
        failed = 0
        for i, task in enumerate(todo, start=1):
            print(f"[{i}/{len(todo)}] training {task['estimator']} on {task['problem']}", file=sys.stderr)
            bar = _bar(cfg.epochs, task["estimator"])
            try:
                res = run_train_task(task, tp, checkpoint_dir, progress=lambda e, b=bar: e > 0 and b.update(1),
                                     tasks=tasks)
            finally:
                bar.close()
            store.write_task(run_id, res["task"], curves=res["curves"])
            failed += res["task"]["status"] != "done"
            if res["task"]["error"]:
                print(f"  {res['task']['status']}: {res['task']['error']}", file=sys.stderr)
    finally:
        store.close()
    return TrainingRun(run_id, tasks, len(tasks) - len(todo), len(todo), failed)
