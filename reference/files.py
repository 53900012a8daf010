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

import math
import os
import re
import stat
import zipfile

import numpy as np
import torch

from estimators.errors import InputError
from estimators.inputs import is_sqlite_file
from estimators.model import ConvGeom, Problem

from .specs import guard_size

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
    if os.path.isdir(path):
        raise InputError(f"{os.fspath(path)!r} is a directory; name the .npz file to write")
    if is_sqlite_file(path):  # `train --db c/chk-1.npz --checkpoint-dir c`: the checkpoint would replace the results store
        raise InputError(f"{os.fspath(path)!r} is a SQLite database (a results store?); a problem file does not "
                         f"replace it")
    tmp = f"{os.fspath(path)}.{os.getpid()}.tmp.npz"
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError as exc:  # named by the file asked for, not by the private one written first
        raise InputError(f"problem file {os.fspath(path)!r} cannot be written: "
                         f"{(exc.strerror or str(exc)).lower()}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _array(data, key: str) -> torch.Tensor:
    if key not in data.files:
        raise InputError(f"problem file is missing array {key!r}")
    arr = data[key]
    if arr.dtype.kind not in "fiu" or (arr.dtype.kind == "f" and arr.dtype.itemsize > 8):
        raise InputError(f"array {key!r} must hold integers or float16/32/64 numbers, got dtype {arr.dtype}")
    if not arr.dtype.isnative:  # big-endian data from another machine: read in this machine's byte order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return torch.as_tensor(arr)


_ARRAY = re.compile(r"^(W|b|conv)([1-9][0-9]*)$")
_FIXED = {"W_head", "b_head", "X", "y", *_SETTINGS}


def inspect_archive(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{array: (shape, dtype)}`` read from the archive's headers, without loading any data.

    Refuses (one :class:`InputError`) anything that is not an ``.npz`` of plain arrays, object arrays,
    unknown array names, layers with gaps (``W4`` without ``W3``) and archives whose arrays hold more
    than :data:`~reference.specs.MAX_ELEMENTS` numbers, before anything is allocated.
    """
    if not os.path.exists(path):
        raise InputError(f"problem file {path!r} does not exist")
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise InputError(f"problem file {path!r} is not a regular file (a directory, pipe or device?)")
    invalid = f"problem file {path!r} is not a valid .npz problem file"
    try:
        with open(path, "rb") as fh:  # numpy reads a file that does not start as a zip as a pickle: refuse it here
            if fh.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
                raise InputError(f"{invalid}: it is not a zip archive (an .npz is a zip of .npy arrays)")
        with zipfile.ZipFile(path) as zf:
            headers = {}
            for info in zf.infolist():
                if info.is_dir():
                    raise InputError(f"{invalid}: it holds a folder entry {info.filename!r}")
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if name in headers:  # two members 'W1.npy', or 'W1.npy' and 'W1': which one numpy reads is arbitrary
                    raise InputError(f"{invalid}: it holds the array {name!r} twice")
                try:
                    with zf.open(info) as fh:
                        version = np.lib.format.read_magic(fh)
                        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                else np.lib.format.read_array_header_2_0)
                        shape, _, dtype = read(fh)  # the header only, never the data
                except (ValueError, EOFError):
                    raise InputError(f"{invalid}: its member {info.filename!r} is not a .npy array") from None
                except (RuntimeError, NotImplementedError) as exc:  # encrypted, or an unknown compression method
                    raise InputError(f"{invalid}: its member {info.filename!r} cannot be read "
                                     f"({' '.join(str(exc).split())})") from None
                headers[name] = (tuple(shape), dtype)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{invalid}: {' '.join(str(exc).split())}") from None
    for name, (shape, dtype) in headers.items():
        m = _ARRAY.match(name)
        if name not in _FIXED and not m:
            raise InputError(f"problem file {path!r} has an unexpected array {name!r} (see the README's table)")
        if dtype.hasobject:
            raise InputError(f"array {name!r} of {path!r} holds Python objects; only numbers and strings are read")
        if name not in _SETTINGS and dtype.kind not in "fiu":  # a record, complex, string or date array
            raise InputError(f"{invalid}: array {name!r} has dtype {dtype}, not a real number type")
    for prefix in ("W", "b", "conv"):
        layers = sorted(int(_ARRAY.match(n).group(2)) for n in headers if _ARRAY.match(n) and
                        _ARRAY.match(n).group(1) == prefix)
        if layers and layers != list(range(1, len(layers) + 1)):
            missing = min(set(range(1, max(layers) + 1)) - set(layers))
            raise InputError(f"problem file {path!r} has {prefix}{max(layers)} but no {prefix}{missing}: "
                             f"layers are numbered 1..L without gaps")
    guard_size(sum(math.prod(int(d) for d in s) for s, _ in headers.values()), f"problem file {path!r}")  # exact
    _check_shapes(headers, path)
    return headers


def _check_shapes(headers: dict, path: str) -> None:
    """The fully connected arrays' shapes agree with each other (from the headers, before any data is read:
    a W2 declared 30000 x 30000 after a 3 x 2 W1 allocated gigabytes before the mismatch was found)."""
    if any(_ARRAY.match(n) and n.startswith("conv") for n in headers):
        return  # convolutional layers: their geometry arrays set the shapes, checked when the problem is built
    shape = {n: s for n, (s, _) in headers.items()}
    L = sum(1 for n in shape if _ARRAY.match(n) and n[0] == "W")
    prev = shape["X"][-1] if "X" in shape and len(shape["X"]) == 2 else None
    for k in range(1, L + 1):
        w, b = shape.get(f"W{k}"), shape.get(f"b{k}")
        if w is None or len(w) != 2:
            continue  # named by the reader
        if prev is not None and w[1] != prev:
            raise InputError(f"array 'W{k}' of {path!r} has shape {list(w)}: it takes {w[1]} inputs, but the layer "
                             f"before gives {prev}")
        if b is not None and tuple(b) != (w[0],):
            raise InputError(f"array 'b{k}' of {path!r} has shape {list(b)}, expected [{w[0]}]")
        prev = w[0]
    head = shape.get("W_head")
    if head is not None and prev is not None and len(head) == 2 and head[1] != prev:
        raise InputError(f"array 'W_head' of {path!r} has shape {list(head)}: it reads {head[1]} units, but the "
                         f"last layer has {prev}")


def load_problem(path: str | os.PathLike, **settings: str) -> Problem:
    """Read a problem file; ``settings`` (encoding, noise, loss, name) override the stored ones."""
    path = os.fspath(path)
    headers = inspect_archive(path)
    for name in ("X", *[f"W{k}" for k in range(1, 1 + sum(1 for n in headers if _ARRAY.match(n) and n[0] == "W"))]):
        if name in headers and len(headers[name][0]) < 2:
            raise InputError(f"array {name!r} of {path!r} has shape {headers[name][0]}: it needs at least two "
                             f"dimensions ({'points x inputs' if name == 'X' else 'units x inputs'})")
        if name in headers and min(headers[name][0]) < 1:
            raise InputError(f"array {name!r} of {path!r} has shape {headers[name][0]}: every dimension must be positive")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:  # never a pickle
        raise InputError(f"problem file {path!r} is not a valid .npz problem file: {' '.join(str(exc).split())}") from None
    try:
        with data:
            return _read(data, path, settings)
    except (ValueError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"problem file {path!r} could not be read: {' '.join(str(exc).split())}") from None


def _read(data, path: str, settings: dict) -> Problem:
    """The problem in an opened archive whose headers :func:`inspect_archive` accepted."""
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
            if not stored[key].isprintable() or len(stored[key]) > 200:  # printed and stored as the problem's name
                raise InputError(f"array {key!r} must be a printable string of at most 200 characters, got "
                                 f"{stored[key][:60]!r}")
    stored.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    stored.update({k: v for k, v in settings.items() if v is not None})
    loss = stored.get("loss", "logistic")
    y = _array(data, "y")
    y = y.long() if loss == "softmax" and not y.is_floating_point() else y.double()
    if loss == "softmax" and y.is_floating_point():
        if not bool((y == y.round()).all()):
            raise InputError("array 'y': the softmax loss needs integer labels")
        y = y.long()
    if loss == "squared" and y.dim() == 1 and "W_head" in data.files and data["W_head"].shape[:1] == (1,):
        y = y.unsqueeze(1)  # one output: targets [B] are [B, 1] (the README's table allows both)
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
