r"""Training problems: a data set plus an initialised network, named by a spec ``name:key=value,...``.

=================  ==========================================================================
``psa2d``          the PSA paper's 2-D data (:func:`reference.datasets.psa2d`), layers ``widths``
                   (default ``5-5-5``), 0/1 states, scalar head, logistic loss; initialised as in
                   ``docs/protocols.md#psa2020-init``: $U(-1,1)$, then analytic moment rescaling.  With the
                   defaults the
                   network equals the named problem ``psa-2-5-5-5`` exactly.
``shapes``         the generated glyph images (:func:`reference.datasets.shapes`), fully connected
                   ``widths`` (default ``64-64``), ±1 states, softmax head over 10 classes.
``shapes-conv``    the glyph images read by binary convolutional layers (``channels``, ``kernels``,
                   ``strides``, ``paddings`` as dash lists; default 8-8 channels, 3x3 kernels,
                   strides 1-2): a CPU-sized stand-in for CIFAR_S1.
``cifar10-fc``     CIFAR-10 (``--cifar-dir``), fully connected ``widths`` (default ``512-512``).
``cifar10-s1``     CIFAR-10 with the all-convolutional CIFAR_S1 of the PSA paper (``docs/protocols.md#cifar-s1``)
                   (:data:`reference.problems.CIFAR_S1`: 8 binary conv layers, no padding/pooling).
=================  ==========================================================================

Image networks use the ``docs/protocols.md#cifar`` initialisation: the framework default (Kaiming-uniform)
$U(\pm1/\sqrt{\text{fan-in}})$ for weights and biases, then one forward pass of ``init_points``
training images through the mean-field network ($\mathbb E[\mathrm{enc}(x)\mid a]$, i.e. $\tanh(a/2)$
for logistic noise in ±1) rescaling each layer so that its pre-activations have zero mean and unit
standard deviation per unit (per channel for a convolution) over that batch; the head is not
rescaled.  The data set and the
initialisation depend only on the spec (its ``seed``), never on the training seed, so every
estimator starts from the same network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from estimators.errors import InputError
from estimators.model import ConvGeom, Problem
from reference.datasets import Dataset, load_cifar10, psa2d, shapes
from reference.problems import CIFAR_S1, moment_rescale
from reference.specs import build_from_spec, dash_ints, guard_size

__all__ = ["TrainProblem", "build_train_problem", "TRAIN_PROBLEMS", "batch_rescale", "TEMPLATE_POINTS"]

TEMPLATE_POINTS = 8


@dataclass(frozen=True, eq=False)
class TrainProblem:
    """``problem``: the initialised network (float64, CPU) holding the first training points as its data."""

    spec: str
    dataset: Dataset
    problem: Problem


def _widths(n_in: int, widths: str) -> tuple[int, ...]:
    """``(n0, n1, ..., nL)`` from the layer widths ``"n1-...-nL"``."""
    try:
        out = tuple(int(w) for w in str(widths).split("-"))
    except ValueError:
        raise InputError(f"bad widths {widths!r}; write the layer widths as n1-n2-..., e.g. 64-64") from None
    if min(out) < 1:
        raise InputError(f"bad widths {widths!r}; every layer needs at least one unit")
    return (n_in,) + out


def _network(ds: Dataset, widths: tuple[int, ...], U, head_scale, encoding: str, name: str) -> Problem:
    k = range(len(widths) - 1)
    n_out = ds.n_outputs
    guard_size(sum(widths[i + 1] * widths[i] for i in k) + n_out * widths[-1],
               f"{name}: a network of widths {'-'.join(map(str, widths))}")  # before anything is allocated
    X = ds.features(ds.X_train[:TEMPLATE_POINTS], torch.float64)
    return Problem(
        weights=tuple(U((widths[i + 1], widths[i]), widths[i]) for i in k),
        biases=tuple(U((widths[i + 1],), widths[i]) for i in k),
        head_weight=U((n_out, widths[-1]), head_scale),
        head_bias=U((n_out,), head_scale),
        X=X, y=ds.y_train[:TEMPLATE_POINTS], encoding=encoding, noise="logistic", loss=ds.loss, name=name,
    )


def batch_rescale(problem: Problem, X: torch.Tensor) -> Problem:
    """Rescale each layer so its pre-activations over ``X`` (mean-field forward) have mean 0 and std 1
    per unit, or per output channel for a convolutional layer (statistics over images and positions)."""
    law = problem.noise_law
    weights, biases = [], []
    inp = X
    for k, (W, b) in enumerate(zip(problem.weights, problem.biases)):
        a = problem.preact(k, inp).reshape(X.shape[0], W.shape[0], -1)  # [B, units or channels, positions]
        mu, sd = a.mean((0, 2)), a.std((0, 2), unbiased=False).clamp_min(1e-8)
        weights.append(W / sd.reshape(-1, *([1] * (W.dim() - 1))))
        biases.append((b - mu) / sd)
        a = ((a - mu[:, None]) / sd[:, None]).reshape(X.shape[0], -1)
        inp = problem.enc(2 * law.cdf(a) - 1)
    return problem.replace(weights=tuple(weights), biases=tuple(biases))


def _uniform(seed: int):
    rng = np.random.default_rng(seed + 1_000_003)
    return lambda shape, fan_in: torch.as_tensor(rng.uniform(-1.0, 1.0, shape) / np.sqrt(fan_in))


def _rescaled(ds: Dataset, p: Problem, seed: int, init_points: int) -> Problem:
    if init_points < 1:
        raise InputError(f"init_points must be at least 1, got {init_points}")
    idx = torch.as_tensor(np.random.default_rng(seed + 2_000_003).permutation(ds.X_train.shape[0])[:init_points])
    return batch_rescale(p, ds.features(ds.X_train[idx], torch.float64))


def _image_network(ds: Dataset, widths: str, encoding: str, seed: int, name: str, init_points: int) -> Problem:
    w = _widths(ds.n_inputs, widths)
    return _rescaled(ds, _network(ds, w, _uniform(seed), w[-1], encoding, name), seed, init_points)


def _conv_network(ds: Dataset, layers, encoding: str, seed: int, name: str, init_points: int) -> Problem:
    """Binary conv layers ``(C_out, kernel, stride, padding)`` on the images of ``ds``, then a linear head."""
    U = _uniform(seed)
    C, H, W = ds.image_shape
    geoms, weights, biases = [], [], []
    for c_out, k, st, pad in layers:
        g = ConvGeom(C, H, W, k, st, pad)
        if min(c_out, k, st) < 1 or pad < 0 or min(g.out_hw()) < 1:
            raise InputError(f"{name}: layer with {c_out} channels, kernel {k}, stride {st}, padding {pad} is invalid "
                             f"for a {H}x{W} map (need channels, kernel, stride >= 1, padding >= 0, output >= 1x1)")
        guard_size(c_out * C * k * k + c_out * g.out_hw()[0] * g.out_hw()[1] * max(init_points, TEMPLATE_POINTS),
                   f"{name}: conv layer {C}->{c_out} (kernel {k}) on {init_points} images")
        weights.append(U((c_out, C, k, k), C * k * k))
        biases.append(U((c_out,), C * k * k))
        geoms.append(g)
        (H, W), C = g.out_hw(), c_out
    n_last = C * H * W
    p = Problem(weights=tuple(weights), biases=tuple(biases), head_weight=U((ds.n_outputs, n_last), n_last),
                head_bias=U((ds.n_outputs,), n_last), X=ds.features(ds.X_train[:TEMPLATE_POINTS], torch.float64),
                y=ds.y_train[:TEMPLATE_POINTS], encoding=encoding, loss=ds.loss, name=name, conv=tuple(geoms))
    return _rescaled(ds, p, seed, init_points)


def _psa2d(widths: str = "5-5-5", seed: int = 0, train: int = 200, val: int = 1000, test: int = 1000,
           encoding: str = "01", cifar_dir: str | None = None) -> tuple[Dataset, Problem]:
    ds = psa2d(seed, train, val, test)
    U = _uniform(seed)
    p = _network(ds, _widths(2, widths), lambda shape, _fan: U(shape, 1.0), 1.0, encoding, "psa2d")
    full = p.replace(X=ds.X_train, y=ds.y_train)  # moments of the whole training set, as
    # ``docs/protocols.md#psa2020-init``
    return ds, moment_rescale(full).subset(slice(0, TEMPLATE_POINTS))


def _shapes(widths: str = "64-64", size: int = 12, train: int = 2000, val: int = 500, test: int = 1000,
            noise: float = 0.15, seed: int = 0, encoding: str = "pm1", init_points: int = 1024,
            cifar_dir: str | None = None):
    ds = shapes(size, train, val, test, noise, seed)
    return ds, _image_network(ds, widths, encoding, seed, "shapes", init_points)


def _shapes_conv(channels: str = "8-8", kernels: str = "3", strides: str = "1-2", paddings: str = "0",
                 size: int = 12, train: int = 2000, val: int = 500, test: int = 1000, noise: float = 0.15,
                 seed: int = 0, encoding: str = "pm1", init_points: int = 256, cifar_dir: str | None = None):
    chans = dash_ints(channels, "channels")
    layers = zip(chans, *(dash_ints(v, w, len(chans)) for v, w in ((kernels, "kernels"), (strides, "strides"),
                                                               (paddings, "paddings"))))
    ds = shapes(size, train, val, test, noise, seed)
    return ds, _conv_network(ds, list(layers), encoding, seed, "shapes-conv", init_points)


def _cifar_data(cifar_dir: str | None, seed: int) -> Dataset:
    if not cifar_dir:
        raise InputError("CIFAR-10 problems need --cifar-dir (the python version of CIFAR-10: a directory or .tar.gz)")
    return load_cifar10(cifar_dir, seed=seed)


def _cifar10_fc(widths: str = "512-512", seed: int = 0, encoding: str = "pm1", init_points: int = 1024,
                cifar_dir: str | None = None):
    ds = _cifar_data(cifar_dir, seed)
    return ds, _image_network(ds, widths, encoding, seed, "cifar10-fc", init_points)


def _cifar10_s1(seed: int = 0, encoding: str = "pm1", init_points: int = 64, cifar_dir: str | None = None):
    """CIFAR_S1; the rescaling batch is one training batch of 64 images, as ``docs/protocols.md#cifar`` says."""
    ds = _cifar_data(cifar_dir, seed)
    return ds, _conv_network(ds, [(c, k, s, 0) for c, k, s in CIFAR_S1], encoding, seed, "cifar10-s1", init_points)


TRAIN_PROBLEMS = {
    "psa2d": (_psa2d, "PSA 2-D data (train 200 = the gradient protocol's points), 0/1 layers widths=5-5-5, logistic"),
    "shapes": (_shapes, "generated 10-class glyph images size x size, FC widths=64-64, +-1, softmax"),
    "shapes-conv": (_shapes_conv, "the glyph images through binary conv layers channels=8-8, kernels=3, strides=1-2"),
    "cifar10-fc": (_cifar10_fc, "CIFAR-10 (--cifar-dir), fully connected widths=512-512, +-1, softmax"),
    "cifar10-s1": (_cifar10_s1, "CIFAR-10 (--cifar-dir) through the PSA paper's all-convolutional CIFAR_S1"),
}


def build_train_problem(spec: str, cifar_dir: str | None = None) -> TrainProblem:
    """Build the data set and initialised network named by ``spec`` (one :class:`InputError` on bad input)."""
    ds, problem = build_from_spec(spec, TRAIN_PROBLEMS, "training problem", "", hidden=("cifar_dir",),
                                  cifar_dir=cifar_dir)
    return TrainProblem(spec, ds, problem.replace(name=spec))
