r"""Named problems, built from a spec string ``name`` or ``name:key=value,...``.

- Bernoulli toys of the literature (Liu et al. 2019; Yin & Zhou 2019; Grathwohl et al. 2018), as one stochastic layer read by an
  identity head with the ``squared`` loss, so $f=\sum_i(b_i-t_i)^2$; the input is a single zero
  feature, so each unit's logit is its bias:
  ``toy-liu3`` ($t=(0.6,0.51,0.48)$, logits 0, 0/1 states; the shared-logit gradient is the sum of
  the three bias gradients), ``toy-arm4`` ($t=(0.49,0.499,0.501,0.51)$), ``toy-relax1``
  ($t=0.499$), and ``toy-psa1`` (``docs/protocols.md#toy``: $\pm1$ state, $a=1$, $f=(x-0.3)^2$).
- ``psa-2-5-5-5``: the PSA paper's gradient-accuracy network (``docs/protocols.md#psa2020``): its 2-D data, three
  layers of 5 logistic units in 0/1 encoding, a scalar head with the logistic loss, initialised
  $U(-1,1)$ and rescaled layer by layer by analytic moment propagation.
- ``random``: a random network, ``widths=n0-n1-...-nL``, all weights and biases
  $\mathcal N(0,\mathrm{scale}^2)$, Gaussian inputs and random labels.
- ``conv``, ``conv-tiny``, ``cifar-s1``: convolutional SBNs (random; the tiny one is enumerable,
  ``cifar-s1`` is the PSA paper's CIFAR architecture).
- any path ending in ``.npz``: a user file (:mod:`reference.files`).
"""

from __future__ import annotations

import os
import re
from typing import Callable

import numpy as np
import torch

from estimators.errors import InputError
from estimators.spec import no_control_characters
from estimators.model import ConvGeom, Problem

from .checkpoints import ensure_checkpoints, load_checkpoint, split_spec
from .datasets import psa_2d
from .files import load_problem
from .specs import build_from_spec, dash_ints, guard_size, parse_widths

__all__ = ["build_problem", "problem_names", "NAMED_PROBLEMS", "moment_rescale"]


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def _toy(name: str, targets, logits, encoding: str) -> Problem:
    n = len(targets)
    return Problem(
        weights=(torch.zeros(n, 1, dtype=torch.float64),),
        biases=(_t(logits),),
        head_weight=torch.eye(n, dtype=torch.float64),
        head_bias=torch.zeros(n, dtype=torch.float64),
        X=torch.zeros(1, 1, dtype=torch.float64),
        y=_t([targets]),
        encoding=encoding,
        loss="squared",
        name=name,
    )


def toy_liu3() -> Problem:
    return _toy("toy-liu3", [0.6, 0.51, 0.48], [0.0, 0.0, 0.0], "01")


def toy_arm4() -> Problem:
    return _toy("toy-arm4", [0.49, 0.499, 0.501, 0.51], [0.0] * 4, "01")


def toy_relax1() -> Problem:
    return _toy("toy-relax1", [0.499], [0.0], "01")


def toy_psa1() -> Problem:
    return _toy("toy-psa1", [0.3], [1.0], "pm1")


def moment_rescale(problem: Problem) -> Problem:
    r"""Data-dependent rescaling of every stochastic layer by analytic moment propagation
    (``docs/protocols.md#psa2020-init``).

    Layer 1 uses the data's per-feature mean and variance; later layers the moments of a unit that
    is on with probability ½ ($(\tfrac12,\tfrac14)$ in 0/1, $(0,1)$ in $\pm1$).  Each unit is set to
    $W_j\leftarrow W_j/s_j$, $b_j\leftarrow(b_j-\mu_j)/s_j$ with $\mu=Wm+b$, $s^2=(W\odot W)v$.
    The head is not rescaled.
    """
    m, v = problem.X.mean(0), problem.X.var(0, unbiased=False)
    weights, biases = [], []
    for W, b in zip(problem.weights, problem.biases):
        mu, s = W @ m + b, torch.sqrt((W * W) @ v).clamp_min(1e-12)
        weights.append(W / s[:, None])
        biases.append((b - mu) / s)
        n = W.shape[0]
        half = torch.full((n,), 0.5 if problem.encoding == "01" else 0.0, dtype=W.dtype)
        m, v = half, torch.full((n,), 0.25 if problem.encoding == "01" else 1.0, dtype=W.dtype)
    return problem.replace(weights=tuple(weights), biases=tuple(biases))


def psa_2_5_5_5(seed: int = 0, points: int = 200) -> Problem:
    guard_size(points * 5, f"{points} points of the 2-5-5-5 network")  # its widest layer, before any data is made
    X, y = psa_2d(points, seed)
    rng = np.random.default_rng(seed + 1_000_003)
    widths = (2, 5, 5, 5)
    U = lambda *shape: _t(rng.uniform(-1.0, 1.0, shape))  # noqa: E731
    p = Problem(
        weights=tuple(U(widths[k + 1], widths[k]) for k in range(3)),
        biases=tuple(U(widths[k + 1]) for k in range(3)),
        head_weight=U(1, 5),
        head_bias=U(1),
        X=_t(X),
        y=_t(y),
        encoding="01",
        noise="logistic",
        loss="logistic",
        name="psa-2-5-5-5",
    )
    return moment_rescale(p)


def _classes(loss: str, classes: int) -> int:
    """The head's outputs for a loss with classes (0: 3); ``classes`` with the one-output logistic loss is refused."""
    if loss == "logistic" and classes:
        raise InputError(f"classes={classes} does not apply to the logistic loss (one output); use loss=softmax or "
                         f"loss=squared")
    return classes or 3


def random_problem(widths: str = "2-5-5-5", scale: float = 1.0, seed: int = 0, points: int = 20,
                   encoding: str = "pm1", noise: str = "logistic", loss: str = "logistic", classes: int = 0,
                   init: str = "normal") -> Problem:
    r"""``init=normal``: every weight and bias $\mathcal N(0,\mathrm{scale}^2)$; ``init=fanin``: stochastic-layer
    weights $\mathcal N(0,\mathrm{scale}^2/n_{k-1})$, so pre-activations keep a standard deviation of about
    ``scale`` at any width (the wide networks of ``docs/monte-carlo.md#presets``).  ``classes``: outputs of
    the softmax or squared loss (0: 3); the logistic loss has one output and takes no ``classes``."""
    classes = _classes(loss, classes)
    if init not in ("normal", "fanin"):
        raise InputError(f"unknown init {init!r}; use normal or fanin")
    scale = float(scale) + 0.0  # -0.0 is 0 (numpy refuses a negative-zero spread)
    w = parse_widths(widths)
    guard_size(points * w[0], f"{points} points of {w[0]} inputs")
    C = 1 if loss == "logistic" else classes
    guard_size(C * w[-1] + (points * C if loss == "squared" else 0), f"a head of {C} outputs on {w[-1]} units")
    guard_size(points * w[0] + sum(a * b for a, b in zip(w, w[1:])) + C * w[-1],  # each part fits, the sum may not
               f"the network {'-'.join(map(str, w))} with its data")
    rng = np.random.default_rng(seed)
    N = lambda *shape, s=scale: _t(rng.normal(0.0, s, shape))  # noqa: E731
    X = N(points, w[0], s=1.0)
    if loss == "logistic":
        y = _t(rng.choice([-1.0, 1.0], points))
    elif loss == "softmax":
        y = torch.as_tensor(rng.integers(0, C, points), dtype=torch.long)
    else:
        y = N(points, C, s=1.0)
    return Problem(
        weights=tuple(N(w[k + 1], w[k], s=scale / (w[k] ** 0.5 if init == "fanin" else 1.0)) for k in range(len(w) - 1)),
        biases=tuple(N(w[k + 1]) for k in range(len(w) - 1)),
        head_weight=N(C, w[-1], s=1.0),
        head_bias=N(C, s=1.0),
        X=X, y=y, encoding=encoding, noise=noise, loss=loss,
        name=f"random-{widths}-s{scale:g}-seed{seed}" + ("-fanin" if init == "fanin" else ""),
    )


def conv_problem(input: str = "1x4x4", channels: str = "2-2", kernels: str = "3-2", strides: str = "2-1",
                 paddings: str = "1-0", scale: float = 1.0, seed: int = 0, points: int = 10, encoding: str = "pm1",
                 noise: str = "logistic", loss: str = "softmax", classes: int = 0) -> Problem:
    r"""A random convolutional SBN: ``input=CxHxW`` and per-layer ``channels``, ``kernels``, ``strides``,
    ``paddings`` (dash lists); weights and biases $\mathcal N(0,\mathrm{scale}^2/\text{fan-in})$, Gaussian inputs;
    ``classes`` as for :func:`random_problem`."""
    classes = _classes(loss, classes)
    scale = float(scale) + 0.0  # -0.0 is 0 (numpy refuses a negative-zero spread)
    dims = str(input).lower().split("x")
    if len(dims) != 3 or not all(re.fullmatch(r"[0-9]{1,30}", v) for v in dims):  # not 0_4, +4, ٤ or 5000 digits
        raise InputError(f"bad input {str(input)[:60]!r}; write CxHxW in plain digits, e.g. 1x4x4")
    C, H, W = (int(v) for v in dims)
    if min(C, H, W) < 1:
        raise InputError(f"bad input {input!r}; channels, height and width must be positive")
    chans = dash_ints(channels, "channels")
    if not chans or min(chans) < 1:
        raise InputError(f"bad channels {channels!r}; every conv layer needs at least one channel")
    L = len(chans)
    ks, ss, ps = (dash_ints(v, n, L) for v, n in ((kernels, "kernels"), (strides, "strides"), (paddings, "paddings")))
    rng = np.random.default_rng(seed)
    geoms, weights, biases = [], [], []
    guard_size(points * C * H * W, f"{points} input maps of {C}x{H}x{W}")
    for c_out, k, st, pd in zip(chans, ks, ss, ps):
        if k < 1 or st < 1:
            raise InputError(f"kernel {k} and stride {st} must be positive")
        if not 0 <= pd < k:  # a border of pd >= k pixels makes output units that see only zeros
            raise InputError(f"padding {pd} must be from 0 to kernel - 1 = {k - 1}")
        guard_size(c_out * C * k * k + (H + 2 * pd) * (W + 2 * pd) * c_out * points, f"conv layer {C}->{c_out}")
        g = ConvGeom(C, H, W, k, st, pd)
        if min(g.out_hw()) < 1:
            raise InputError(f"kernel {k}, stride {st}, padding {pd} do not fit a {H}x{W} map")
        fan_in = C * k * k
        weights.append(_t(rng.normal(0.0, scale / np.sqrt(fan_in), (c_out, C, k, k))))
        biases.append(_t(rng.normal(0.0, scale / np.sqrt(fan_in), c_out)))
        geoms.append(g)
        (H, W), C = g.out_hw(), c_out
    n_last = C * H * W
    n_out = 1 if loss == "logistic" else classes
    guard_size(n_out * n_last + (points * n_out if loss == "squared" else 0), f"a head of {n_out} outputs on "
               f"{n_last} units")
    y = (_t(rng.choice([-1.0, 1.0], points)) if loss == "logistic"
         else torch.as_tensor(rng.integers(0, n_out, points), dtype=torch.long) if loss == "softmax"
         else _t(rng.normal(size=(points, n_out))))
    return Problem(
        weights=tuple(weights), biases=tuple(biases),
        head_weight=_t(rng.normal(0.0, 1.0 / np.sqrt(n_last), (n_out, n_last))), head_bias=_t(np.zeros(n_out)),
        X=_t(rng.normal(size=(points, geoms[0].in_size))), y=y, encoding=encoding, noise=noise, loss=loss,
        name=f"conv-{input}-{channels}-seed{seed}", conv=tuple(geoms),
    )


def conv_tiny(seed: int = 0, points: int = 8, encoding: str = "pm1") -> Problem:
    """A 1x3x3 input read by two tiny conv layers (2x2x2 = 8 units, then 1x1x2 = 2 units): exactly enumerable."""
    return conv_problem(input="1x3x3", channels="2-2", kernels="2-2", strides="1-1", paddings="0-0", seed=seed,
                        points=points, encoding=encoding).replace(name=f"conv-tiny-seed{seed}")


#: The PSA paper's CIFAR-10 architecture (``docs/protocols.md#cifar-s1``): eight binary conv layers, no
#: padding, no pooling.
CIFAR_S1 = ((96, 3, 1), (96, 3, 1), (96, 3, 2), (192, 3, 1), (192, 3, 1), (192, 3, 2), (192, 3, 1), (192, 1, 1))


def cifar_s1(points: int = 16, seed: int = 0, encoding: str = "pm1") -> Problem:
    """CIFAR_S1 (``docs/protocols.md#cifar-s1``) on random 3x32x32 inputs in [0, 1] with a 10-class softmax
    head; the framework's
    default (Kaiming-uniform) initialisation.  Too large for the exact reference; used for timing and training."""
    guard_size(points * 96 * 30 * 30, f"{points} images through CIFAR_S1")  # its widest layer, before the data
    rng = np.random.default_rng(seed)
    C, H, W = 3, 32, 32
    geoms, weights, biases = [], [], []
    for c_out, k, st in CIFAR_S1:
        g = ConvGeom(C, H, W, k, st, 0)
        bound = 1.0 / np.sqrt(C * k * k)
        weights.append(_t(rng.uniform(-bound, bound, (c_out, C, k, k))))
        biases.append(_t(rng.uniform(-bound, bound, c_out)))
        geoms.append(g)
        (H, W), C = g.out_hw(), c_out
    n_last = C * H * W
    bound = 1.0 / np.sqrt(n_last)
    return Problem(
        weights=tuple(weights), biases=tuple(biases),
        head_weight=_t(rng.uniform(-bound, bound, (10, n_last))), head_bias=_t(rng.uniform(-bound, bound, 10)),
        X=_t(rng.uniform(0.0, 1.0, (points, 3 * 32 * 32))), y=torch.as_tensor(rng.integers(0, 10, points)),
        encoding=encoding, loss="softmax", name="cifar-s1", conv=tuple(geoms),
    )


#: the named problems: builder and a one-line description (``sbn-bench list problems``)
NAMED_PROBLEMS: dict[str, tuple[Callable[..., Problem], str]] = {
    "toy-liu3": (toy_liu3, "Liu/Kool three-bit toy, f = sum (b - p0)^2, p0 = (0.6, 0.51, 0.48)"),
    "toy-arm4": (toy_arm4, "ARM four-logit toy, p = (0.49, 0.499, 0.501, 0.51)"),
    "toy-relax1": (toy_relax1, "RELAX one-bit toy, f = (b - 0.499)^2"),
    "toy-psa1": (toy_psa1, "PSA single-variable toy, a = 1, f = (x - 0.3)^2 in +-1"),
    "psa-2-5-5-5": (psa_2_5_5_5, "PSA paper 2-D data (200 points) and 2-5-5-5 0/1 network, moment-rescaled"),
    "random": (random_problem, "random network: widths=n0-...-nL, scale, seed, points, encoding, noise, loss, init (normal or fanin)"),
    "conv": (conv_problem, "random conv network: input=CxHxW, channels=, kernels=, strides=, paddings= (dash lists)"),
    "conv-tiny": (conv_tiny, "1x3x3 input, two 2x2 conv layers (8 and 2 units): exactly enumerable"),
    "cifar-s1": (cifar_s1, "the PSA paper's CIFAR-10 architecture (8 binary conv layers) on random images"),
}


def problem_names() -> list[str]:
    return list(NAMED_PROBLEMS)


def build_problem(spec: str, cache_dir: str | None = None) -> Problem:
    """Build a problem from a named-problem spec (``psa-2-5-5-5:seed=3``), a checkpoint of one
    (``psa-2-5-5-5@chk-100``, trained once and cached under ``cache_dir``) or an ``.npz`` path."""
    no_control_characters(spec, "problem spec")
    if spec != spec.strip():  # as the sweep's problems: `exact --problem 'psa-2-5-5-5 '` was read as the name
        raise InputError(f"problem {spec!r} begins or ends with spaces; write it without them")
    base, epoch = split_spec(spec)
    if epoch is not None:
        if cache_dir is None:
            raise InputError(f"problem {spec!r} is a training checkpoint and needs a checkpoint cache directory")
        ensure_checkpoints(cache_dir, build_problem(base), base)
        return load_checkpoint(cache_dir, base, epoch)
    if spec.strip().endswith(".npz"):
        return load_problem(spec.strip())
    if ":" not in spec and ("/" in spec or os.sep in spec):  # a path, not a spec: '/dev/zero', 'data/p.np'
        raise InputError(f"problem {spec!r} is a path but not an .npz problem file (problem files end in .npz)")
    return build_from_spec(spec, NAMED_PROBLEMS, "problem", " or an .npz file")
