r"""Training an SBN with one gradient estimator: the loop, its optimiser and its per-epoch records.

Each step takes a batch (a seeded permutation per epoch; the last batch may be short), applies
flip-and-crop augmentation to image data when asked (:mod:`bench.training.augment`), records the running
metrics of the true binary SBN on that batch *before* the update (``k`` sample paths per point,
:func:`bench.training.metrics.batch_sums`), draws **one** gradient estimate of the batch-mean expected
loss, ``estimator.estimate(batch, 1, gen)``, clips it elementwise to ``[-clip, clip]`` and takes an
optimiser step: SGD with Nesterov momentum (``sgd``, the ``docs/protocols.md#cifar`` protocol), heavy-ball momentum
(``momentum``, the ``docs/protocols.md#checkpoints`` checkpoint protocol) or Adam.  The loop only uses the
generic Problem
API (``group_params`` / ``with_group_params``, ``sample_path``, ``head``), so any layer kind the
model supports trains unchanged.

Records per epoch ``e`` (``e = 0`` is the initial network, evaluated on the whole training set):
``train_{loss,acc_1,acc_k,entropy}`` (running, averaged over the epoch's batches),
``val_*`` and ``test_*`` (full passes, when ``evaluate``), ``seconds`` (cumulative time in
gradient estimation and optimiser steps, device-synchronised) and ``wall_seconds`` (cumulative,
everything included).  Three independent generators drive data order and augmentation, the
estimator's sampling, and evaluation, so the training trajectory does not depend on ``k``.
After the last epoch, ``test_acc_m{m}`` is the test accuracy of the ensemble of ``m`` sample paths
for each ``m`` of ``ensemble_sizes`` (``docs/protocols.md#cifar``: test accuracy against the number of samples).
Training stops at the first non-finite parameter ("diverged"), keeping the records so far.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from bench.training.augment import flip_crop
from bench.training.metrics import METRICS, batch_sums, chunk_size, ensemble_accuracy, evaluate, with_data
from estimators.base import Estimator
from estimators.errors import InputError
from estimators.model import Problem
from reference.datasets import Dataset

__all__ = ["TrainSettings", "TrainResult", "train", "make_optimizer", "OPTIMIZERS"]

OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclass(frozen=True)
class TrainSettings:
    lr: float
    epochs: int
    optimizer: str = "sgd"
    batch: int = 64
    samples: int = 10  # k: sample paths per point for the loss and ensemble estimates
    momentum: float = 0.9
    clip: float = 1e3
    augment: bool = False
    crop_pad: int = 4
    evaluate: bool = True  # val/test passes each epoch (off in learning-rate trials)
    ensemble_sizes: tuple[int, ...] = ()  # after the last epoch: test accuracy of m-path ensembles


@dataclass
class TrainResult:
    rows: list[dict] = field(default_factory=list)  # {"epoch", "metric", "value"}
    params: list[torch.Tensor] = field(default_factory=list)
    steps: int = 0
    step_seconds: float = 0.0
    wall_seconds: float = 0.0
    diverged_at: int | None = None
    running_loss: float = math.nan  # the last epoch's running training loss; NaN once diverged


def make_optimizer(name: str, params: list[torch.Tensor], lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise InputError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _net(template: Problem, params: list[torch.Tensor]) -> Problem | None:
    """The network at ``params``, or None once a parameter is not finite (validation refuses it)."""
    try:
        return template.with_group_params(params)
    except InputError:
        if all(bool(torch.isfinite(p).all()) for p in params):
            raise
        return None


def train(net: Problem, data: Dataset, estimator: Estimator, s: TrainSettings, seeds: tuple[int, int, int],
          on_epoch: Callable[[int, Problem], None] | None = None, out: TrainResult | None = None) -> TrainResult:
    """Train ``net`` (on its device and dtype) on ``data`` (same device); ``seeds`` = (data, estimator, evaluation).

    ``out``, when given, is filled as training goes, so a caller keeps the records of a run that raises.
    """
    dev, dtype = net.device, net.dtype
    gen_data, gen_est, gen_eval = (torch.Generator(device=dev).manual_seed(int(x)) for x in seeds)
    feats = lambda X: data.features(X, dtype)  # noqa: E731
    if s.augment and data.image_shape is None:
        raise InputError(f"data set {data.name!r} holds no images; flip-and-crop augmentation needs images")
    params = [p.detach().clone() for p in net.group_params()]
    opt = make_optimizer(s.optimizer, params, s.lr, s.momentum)
    res = out if out is not None else TrainResult()
    res.params = params
    N, names = data.X_train.shape[0], net.group_names
    chunk = chunk_size(net, s.samples)
    t_start = _clock(dev)

    def record(epoch: int, prefix: str, values) -> None:
        res.rows.extend(dict(epoch=epoch, metric=f"{prefix}_{m}", value=float(v)) for m, v in zip(METRICS, values))

    def finish_epoch(epoch: int, cur: Problem) -> None:
        if s.evaluate:
            for prefix, X, y in (("val", data.X_val, data.y_val), ("test", data.X_test, data.y_test)):
                record(epoch, prefix, evaluate(cur, X, y, s.samples, gen_eval, feats, chunk).values())
        res.rows.append(dict(epoch=epoch, metric="seconds", value=res.step_seconds))
        if on_epoch is not None:
            on_epoch(epoch, cur)
        res.wall_seconds = _clock(dev) - t_start
        res.rows.append(dict(epoch=epoch, metric="wall_seconds", value=res.wall_seconds))

    if s.evaluate:
        record(0, "train", evaluate(net, data.X_train, data.y_train, s.samples, gen_eval, feats, chunk).values())
    finish_epoch(0, net)
    for epoch in range(1, s.epochs + 1):
        perm = torch.randperm(N, generator=gen_data, device=dev)
        sums = torch.zeros(4, dtype=dtype, device=dev)
        for start in range(0, N, s.batch):
            cur = _net(net, params)
            if cur is None:
                break
            idx = perm[start:start + s.batch]
            xb = feats(data.X_train[idx])
            if s.augment:
                xb = flip_crop(xb, data.image_shape, s.crop_pad, gen_data)
            batch = with_data(cur, xb, data.y_train[idx].to(net.y.dtype))
            sums += batch_sums(batch, s.samples, gen_eval)
            t0 = _clock(dev)
            grads = estimator.estimate(batch, 1, gen_est)
            for p, name in zip(params, names):
                p.grad = grads[name][0].clamp(-s.clip, s.clip)
            opt.step()
            res.step_seconds += _clock(dev) - t0
            res.steps += 1
        cur = _net(net, params)
        running = (sums / N).tolist()
        if cur is None or not math.isfinite(running[0]):
            res.diverged_at, res.running_loss = epoch, math.nan  # a diverged trial scores as a failure
            break
        record(epoch, "train", running)
        res.running_loss = running[0]
        finish_epoch(epoch, cur)
    if s.evaluate and s.ensemble_sizes and res.diverged_at is None:
        acc = ensemble_accuracy(cur, data.X_test, data.y_test, s.ensemble_sizes, gen_eval, feats)
        res.rows.extend(dict(epoch=s.epochs, metric=f"test_acc_m{m}", value=v) for m, v in acc.items())
    return res
