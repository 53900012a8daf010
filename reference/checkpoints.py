r"""Training checkpoints of the PSA paper's gradient-accuracy protocol (``docs/protocols.md#checkpoints``),
cached on disk with a record of the training.

The network is trained with **REINFORCE without a baseline** on its expected loss: one sample per
data point per step, SGD with learning rate 0.03 and momentum 0.9 (no Nesterov), shuffled batches of
10, constant learning rate, 2000 epochs; parameters are saved after epochs 1, 100, 200, 500, 1000,
1500 and 2000.  A problem spec ``BASE@chk-E`` (e.g. ``psa-2-5-5-5@chk-100``) names the network
``BASE`` after epoch ``E``; training runs once, saves every checkpoint as a problem file
(:mod:`reference.files`) and the training record (``training.json``: the exact expected loss after
every epoch, and each checkpoint's exact loss and weight norms) under ``cache_dir``; later calls load
the files.  The cache key carries :data:`TRAINING_VERSION`, so checkpoints made by an older training
are never reused.

Each step samples the batch's path from uniforms drawn in numpy (one generator for the data order
and the samples) and takes the gradient of one draw of the registered ``reinforce`` estimator on
that path (``from_path``), so the training step is the estimator the suite scores.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re

import numpy as np
import torch

from estimators import registry
from estimators.errors import InputError
from estimators.model import Path, Problem
from estimators.spec import plain_spec

from .exact import exact_loss
from .files import load_problem, save_problem

__all__ = ["CHECKPOINT_EPOCHS", "TRAINING_VERSION", "RECIPE", "split_spec", "checkpoint_path", "ensure_checkpoints",
           "train_reinforce", "path_from_uniforms", "LEFT_PLATEAU", "MAX_TRIES", "weight_norms", "training_record", "checkpoint_facts",
           "load_checkpoint"]

CHECKPOINT_EPOCHS = (1, 100, 200, 500, 1000, 1500, 2000)
LR, MOMENTUM, BATCH = 0.03, 0.9, 10
#: Version of the checkpoint training, part of the cache key: bump it whenever the training changes.
#: 1: the first training (one generator per concern, torch sampling); 2: numpy stream, training record.
TRAINING_VERSION = 2
#: The recipe as recorded with every training (``docs/protocols.md#checkpoints``).
RECIPE = {"estimator": "reinforce (no baseline)", "optimizer": "SGD, heavy-ball momentum", "lr": LR,
          "momentum": MOMENTUM, "batch": BATCH, "samples_per_point": 1, "shuffle": "every epoch",
          "epochs": max(CHECKPOINT_EPOCHS), "dtype": "float64"}
_RECORD = "training.json"
#: A training whose exact expected loss after its last epoch is not below this never left the plateau
#: near log 2 (``docs/protocols.md#plateau``); the paper's network reaches about 0.41.
LEFT_PLATEAU = 0.6
#: Trainings tried (seeds ``seed, seed+1, ...``) before the last one is kept whatever its loss.
MAX_TRIES = 4


def split_spec(spec: str) -> tuple[str, int | None]:
    """``"psa-2-5-5-5@chk-100"`` -> ``("psa-2-5-5-5", 100)``; a spec without ``@`` -> ``(spec, None)``."""
    plain_spec(str(spec), "problem")  # the whole spec: parse() sees only the part before '@'
    base, at, tail = spec.partition("@")
    if not at:
        return spec, None
    if not tail.startswith("chk-") or not re.fullmatch(r"[0-9]{1,9}", tail[4:]):  # not '²', '١' or 5000 digits
        raise InputError(f"bad checkpoint {tail[:40]!r} in {spec[:80]!r}; write BASE@chk-EPOCH, e.g. "
                         f"psa-2-5-5-5@chk-100")
    epoch = int(tail[4:])
    if epoch not in CHECKPOINT_EPOCHS:
        raise InputError(f"no checkpoint at epoch {epoch}; available: {', '.join(map(str, CHECKPOINT_EPOCHS))}")
    return base, epoch


def _dir(cache_dir: str, base: str, seed: int = 0) -> str:
    tag = hashlib.sha256(f"{base}|v{TRAINING_VERSION}|seed{seed}".encode()).hexdigest()[:8]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in base)[:60]
    return os.path.join(cache_dir, f"{safe}-v{TRAINING_VERSION}-{tag}")


def checkpoint_path(cache_dir: str, base: str, epoch: int, seed: int = 0) -> str:
    return os.path.join(_dir(cache_dir, base, seed), f"chk-{epoch}.npz")


def _record_path(cache_dir: str, base: str, seed: int = 0) -> str:
    return os.path.join(_dir(cache_dir, base, seed), _RECORD)


def path_from_uniforms(problem: Problem, uniforms: list[torch.Tensor]) -> Path:
    r"""The one-draw :class:`~estimators.model.Path` (tensors ``[1, B, n_k]``) that the given uniforms
    ``[B, n_k]`` produce: $x=+1$ iff $u<F(a)$, layer by layer (``docs/model.md#definition``)."""
    law = problem.noise_law
    inp = problem.X.unsqueeze(0)
    path = Path([], [], [], [])
    for k, u in enumerate(uniforms):
        a = problem.preact(k, inp)
        u = u.unsqueeze(0).to(a.dtype)
        on = (u < law.cdf(a)).to(a.dtype)
        path.inputs.append(inp)
        path.a.append(a)
        path.u.append(u)
        path.x.append(on * 2.0 - 1.0)
        inp = path.x[-1] if problem.encoding == "pm1" else on
    return path


def weight_norms(problem: Problem) -> dict[str, dict[str, float]]:
    """Per group (``layer0``.., ``head``): Frobenius norm of the weights, norm of the bias, largest |weight|."""
    pairs = list(zip(problem.weights, problem.biases)) + [(problem.head_weight, problem.head_bias)]
    return {g: {"weight": float(w.norm()), "bias": float(b.norm()), "max_abs_weight": float(w.abs().max())}
            for g, (w, b) in zip(problem.group_names, pairs)}


def train_reinforce(problem: Problem, epochs: int = 2000, seed: int = 0, save=None,
                    curve: list[float] | None = None) -> Problem:
    """Train ``problem`` with REINFORCE (no baseline) as the protocol says.

    ``save(epoch, problem)`` is called at the checkpoint epochs; ``curve``, when given, receives the
    exact expected loss (float64, all data points) of the initial network and after every epoch.
    One numpy generator seeded with ``seed`` draws each epoch's permutation and then, batch by
    batch and layer by layer, the uniforms of the batch's sample path.
    """
    est = registry.get("reinforce")
    p = problem.to(dtype=torch.float64)
    est.check(p)
    params = [t.clone() for t in p.group_params()]
    velocity = [torch.zeros_like(t) for t in params]
    rng = np.random.default_rng(seed)
    widths = p.widths[1:]
    B = p.batch_size
    if curve is not None:
        curve.append(float(exact_loss(p)))
    for epoch in range(1, epochs + 1):
        perm = torch.as_tensor(rng.permutation(B))
        for start in range(0, B, BATCH):
            idx = perm[start : start + BATCH]
            batch = p.with_group_params(params, validate=False).subset(idx)
            uniforms = [torch.from_numpy(rng.random((len(idx), n))) for n in widths]
            grads = est.from_path(batch, path_from_uniforms(batch, uniforms))
            for v, t, g in zip(velocity, params, grads):
                v.mul_(MOMENTUM).add_(g[0])
                t.sub_(LR * v)
        if curve is not None or (save is not None and epoch in CHECKPOINT_EPOCHS):
            now = p.with_group_params([t.clone() for t in params])  # a copy (the steps update params in
            # place); validated: a diverged network is refused here
            if curve is not None:
                curve.append(float(exact_loss(now)))
            if save is not None and epoch in CHECKPOINT_EPOCHS:
                save(epoch, now)
    return p.with_group_params(params)


def _one_thread(fn):
    """Run ``fn()`` with torch on one thread: the steps are tiny tensors, for which thread start-up dominates."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def ensure_checkpoints(cache_dir: str, base_problem: Problem, base_spec: str, seed: int = 0) -> None:
    """Train once and write every checkpoint of ``base_spec`` and the training record, unless all are in
    ``cache_dir`` already (a partial set is trained again from scratch).

    A training whose exact loss after the last epoch is not below :data:`LEFT_PLATEAU` never left the
    plateau at the start (``docs/protocols.md#plateau``); it is recorded as tried and the training
    is repeated with the next seed, at most :data:`MAX_TRIES` times in all (the last one is kept)."""
    paths = [checkpoint_path(cache_dir, base_spec, e, seed) for e in CHECKPOINT_EPOCHS]
    record = _record_path(cache_dir, base_spec, seed)
    if all(os.path.exists(x) for x in paths) and os.path.exists(record):
        return
    tried: list[dict] = []
    for s in range(seed, seed + MAX_TRIES):
        saved: dict[int, Problem] = {}
        curve: list[float] = []
        _one_thread(lambda: train_reinforce(base_problem, epochs=max(CHECKPOINT_EPOCHS), seed=s,
                                            save=saved.__setitem__, curve=curve))
        tried.append({"seed": s, "final_exact_loss": curve[-1]})
        if curve[-1] < LEFT_PLATEAU:
            break
    os.makedirs(_dir(cache_dir, base_spec, seed), exist_ok=True)
    checkpoints: dict[str, dict] = {}
    for epoch, trained in saved.items():
        save_problem(trained.replace(name=f"{base_spec}@chk-{epoch}"), checkpoint_path(cache_dir, base_spec, epoch, seed))
        checkpoints[str(epoch)] = {"exact_loss": curve[epoch], "weight_norms": weight_norms(trained)}
    doc = {"base": base_spec, "training_version": TRAINING_VERSION, "seed": tried[-1]["seed"], "tried": tried,
           "recipe": RECIPE, "initial": {"exact_loss": curve[0], "weight_norms": weight_norms(base_problem)},
           "curve": {"kind": "exact expected loss (float64, all data points) after each epoch; entry 0 = initial",
                     "exact_loss": curve},
           "checkpoints": checkpoints}
    tmp = record + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh)
    os.replace(tmp, record)


def training_record(cache_dir: str, base_spec: str, seed: int = 0) -> dict:
    """The stored training record of ``base_spec`` (see :func:`ensure_checkpoints`)."""
    path = _record_path(cache_dir, base_spec, seed)
    if not os.path.exists(path):
        raise InputError(f"no training record of {base_spec} in {cache_dir!r}; run the sweep to train it")
    with open(path) as fh:
        return json.load(fh)


def checkpoint_facts(cache_dir: str, spec: str, seed: int = 0) -> dict:
    """What a scored task records about its checkpoint problem ``BASE@chk-E`` (``{}`` for other specs):
    the checkpoint's exact expected loss and weight norms, the recipe, and the training's exact loss
    curve up to epoch ``E``."""
    base, epoch = split_spec(spec)
    if epoch is None:
        return {}
    rec = training_record(cache_dir, base, seed)
    chk = rec["checkpoints"][str(epoch)]
    return {"checkpoint": {"base": base, "epoch": epoch, "seed": rec["seed"], "exact_loss": chk["exact_loss"],
                           "weight_norms": chk["weight_norms"], "training_version": rec["training_version"]},
            "training": {"recipe": rec["recipe"], "curve_kind": rec["curve"]["kind"],
                         "curve": [round(v, 6) if math.isfinite(v) else None
                                   for v in rec["curve"]["exact_loss"][: epoch + 1]]}}


def load_checkpoint(cache_dir: str, base_spec: str, epoch: int, seed: int = 0) -> Problem:
    path = checkpoint_path(cache_dir, base_spec, epoch, seed)
    if not os.path.exists(path):
        raise InputError(f"checkpoint {base_spec}@chk-{epoch} is not in {cache_dir!r}; run the sweep to train it")
    return load_problem(path)
