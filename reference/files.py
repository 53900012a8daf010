"""Problem files: one ``.npz`` archive holding a whole problem.

Arrays (float64 unless stated):

==============  =====================  ==================================================
name            shape                  meaning
==============  =====================  ==================================================
``W1..WL``      ``[n_k, n_{k-1}]``     weights of stochastic layer k (1-based, no gaps)
``b1..bL``      ``[n_k]``              biases of stochastic layer k
``W_head``      ``[C, n_L]``           linear head weights (C = 1 for the logistic loss)
``b_head``      ``[C]``                head bias
``X``           ``[B, n_0]``           real inputs
``y``           ``[B]`` / ``[B, C]``   labels: +-1 (logistic), 0..C-1 (softmax), targets (squared)
``encoding``    0-d string, optional   ``pm1`` (default) or ``01``
``noise``       0-d string, optional   ``logistic`` (default), ``gaussian`` or ``uniform``
``loss``        0-d string, optional   ``logistic`` (default), ``softmax`` or ``squared``
``name``        0-d string, optional   problem name (default: the file's stem)
``conv1..convL``int ``[6]``, optional  conv layer k: ``[C_in, H, W, kernel, stride, padding]`` of its
                                       input map; then ``Wk`` is ``[C_out, C_in, K, K]``, ``bk`` ``[C_out]``
==============  =====================  ==================================================

Settings given to :func:`load_problem` override those stored in the file.  Loading never unpickles
(``allow_pickle=False``); every defect is reported as one :class:`InputError` naming the array.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
import torch

from estimators.errors import InputError
from estimators.model import ConvGeom, Problem

__all__ = ["load_problem", "save_problem"]

_SETTINGS = ("encoding", "noise", "loss", "name")


def save_problem(problem: Problem, path: str | os.PathLike) -> None:
    """Write ``problem`` in the documented format (a round trip through :func:`load_problem` is exact)."""
    arrays: dict[str, np.ndarray] = {}
    p = problem.to(device="cpu")
    for k, (w, b) in enumerate(zip(p.weights, p.biases), start=1):
        arrays[f"W{k}"], arrays[f"b{k}"] = w.numpy(), b.numpy()
    arrays["W_head"], arrays["b_head"] = p.head_weight.numpy(), p.head_bias.numpy()
    arrays["X"], arrays["y"] = p.X.numpy(), p.y.numpy()
    for key in _SETTINGS:
        arrays[key] = np.array(getattr(p, key))
    for k, geom in enumerate(p.conv, start=1):
        if geom is not None:
            arrays[f"conv{k}"] = np.array(geom.as_array(), dtype=np.int64)
    tmp = f"{os.fspath(path)}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _array(data, key: str) -> torch.Tensor:
    if key not in data.files:
        raise InputError(f"problem file is missing array {key!r}")
    arr = data[key]
    if arr.dtype.kind not in "fiu":
        raise InputError(f"array {key!r} must be numeric, got dtype {arr.dtype}")
    return torch.as_tensor(arr)


def load_problem(path: str | os.PathLike, **settings: str) -> Problem:
    """Read a problem file; ``settings`` (encoding, noise, loss, name) override the stored ones."""
    path = os.fspath(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"problem file {path!r} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(f"problem file {path!r} is not a readable .npz archive ({exc})") from None
    with data:
        L = 0
        while f"W{L + 1}" in data.files:
            L += 1
        if L == 0:
            raise InputError("problem file is missing array 'W1'")
        stored = {}
        for key in _SETTINGS:
            if key in data.files:
                if data[key].dtype.kind != "U" or data[key].ndim != 0:
                    raise InputError(f"array {key!r} must be a 0-d string")
                stored[key] = str(data[key])
        stored.setdefault("name", os.path.splitext(os.path.basename(path))[0])
        stored.update({k: v for k, v in settings.items() if v is not None})
        loss = stored.get("loss", "logistic")
        y = _array(data, "y")
        y = y.long() if loss == "softmax" and not y.is_floating_point() else y.double()
        if loss == "softmax" and y.is_floating_point():
            if not bool((y == y.round()).all()):
                raise InputError("array 'y': the softmax loss needs integer labels")
            y = y.long()
        f = lambda key: _array(data, key).double()  # noqa: E731
        conv = []
        for k in range(1, L + 1):
            if f"conv{k}" in data.files:
                g = data[f"conv{k}"]
                if g.dtype.kind not in "iu" or g.shape != (6,):
                    raise InputError(f"array 'conv{k}' must be 6 integers [C_in, H, W, kernel, stride, padding]")
                conv.append(ConvGeom(*(int(v) for v in g)))
            else:
                conv.append(None)
        return Problem(
            conv=tuple(conv),
            weights=tuple(f(f"W{k}") for k in range(1, L + 1)),
            biases=tuple(f(f"b{k}") for k in range(1, L + 1)),
            head_weight=f("W_head"),
            head_bias=f("b_head"),
            X=f("X"),
            y=y,
            **stored,
        )
