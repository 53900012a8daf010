r"""Training checkpoints of the PSA paper's gradient-accuracy protocol (``docs/protocols.md#checkpoints``),
cached on disk.

The network is trained with **REINFORCE without a baseline** on its expected loss: one sample per
data point per step, SGD with learning rate 0.03 and momentum 0.9 (no Nesterov), shuffled batches of
10, constant learning rate, 2000 epochs; parameters are saved after epochs 1, 100, 200, 500, 1000,
1500 and 2000.  A problem spec ``BASE@chk-E`` (e.g. ``psa-2-5-5-5@chk-100``) names the network
``BASE`` after epoch ``E``; training runs once, saves every checkpoint as a problem file
(:mod:`reference.files`) under ``cache_dir``, and later calls load the files.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from estimators import registry
from estimators.errors import InputError
from estimators.model import Problem

from .files import load_problem, save_problem

__all__ = ["CHECKPOINT_EPOCHS", "split_spec", "checkpoint_path", "ensure_checkpoints", "train_reinforce"]

CHECKPOINT_EPOCHS = (1, 100, 200, 500, 1000, 1500, 2000)
LR, MOMENTUM, BATCH = 0.03, 0.9, 10


def split_spec(spec: str) -> tuple[str, int | None]:
    """``"psa-2-5-5-5@chk-100"`` -> ``("psa-2-5-5-5", 100)``; a spec without ``@`` -> ``(spec, None)``."""
    base, at, tail = spec.partition("@")
    if not at:
        return spec, None
    if not tail.startswith("chk-") or not tail[4:].isdigit():
        raise InputError(f"bad checkpoint {tail!r} in {spec!r}; write BASE@chk-EPOCH, e.g. psa-2-5-5-5@chk-100")
    epoch = int(tail[4:])
    if epoch not in CHECKPOINT_EPOCHS:
        raise InputError(f"no checkpoint at epoch {epoch}; available: {', '.join(map(str, CHECKPOINT_EPOCHS))}")
    return base, epoch


def _dir(cache_dir: str, base: str) -> str:
    tag = hashlib.sha256(base.encode()).hexdigest()[:8]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in base)[:60]
    return os.path.join(cache_dir, f"{safe}-{tag}")


def checkpoint_path(cache_dir: str, base: str, epoch: int) -> str:
    return os.path.join(_dir(cache_dir, base), f"chk-{epoch}.npz")


def train_reinforce(problem: Problem, epochs: int = 2000, seed: int = 0, save=None) -> Problem:
    """Train ``problem`` with REINFORCE (no baseline) as the protocol says; ``save(epoch, problem)`` at checkpoints."""
    est = registry.get("reinforce")
    p = problem.to(dtype=torch.float64)
    params = [t.clone() for t in p.group_params()]
    velocity = [torch.zeros_like(t) for t in params]
    gen = torch.Generator().manual_seed(seed)
    order_rng = np.random.default_rng(seed)
    B = p.batch_size
    for epoch in range(1, epochs + 1):
        perm = torch.as_tensor(order_rng.permutation(B))
        for start in range(0, B, BATCH):
            idx = perm[start : start + BATCH]
            batch = p.with_group_params(params, validate=False).subset(idx)
            grads = est.estimate(batch, 1, gen)
            for v, t, gname in zip(velocity, params, p.group_names):
                v.mul_(MOMENTUM).add_(grads[gname][0])
                t.sub_(LR * v)
        if save is not None and epoch in CHECKPOINT_EPOCHS:
            save(epoch, p.with_group_params(params))  # validated: a diverged network is refused here
    return p.with_group_params(params)


def ensure_checkpoints(cache_dir: str, base_problem: Problem, base_spec: str, seed: int = 0) -> None:
    """Train once and write every checkpoint of ``base_spec`` that is missing from ``cache_dir``."""
    missing = [e for e in CHECKPOINT_EPOCHS if not os.path.exists(checkpoint_path(cache_dir, base_spec, e))]
    if not missing:
        return
    os.makedirs(_dir(cache_dir, base_spec), exist_ok=True)

    def save(epoch: int, trained: Problem) -> None:
        save_problem(trained.replace(name=f"{base_spec}@chk-{epoch}"), checkpoint_path(cache_dir, base_spec, epoch))

    train_reinforce(base_problem, epochs=max(missing), seed=seed, save=save)


def load_checkpoint(cache_dir: str, base_spec: str, epoch: int) -> Problem:
    path = checkpoint_path(cache_dir, base_spec, epoch)
    if not os.path.exists(path):
        raise InputError(f"checkpoint {base_spec}@chk-{epoch} is not in {cache_dir!r}; run the sweep to train it")
    return load_problem(path)
