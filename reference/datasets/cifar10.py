r"""CIFAR-10 from the standard python-pickle distribution (``cifar-10-python.tar.gz``), read offline.

``path`` may be the extracted ``cifar-10-batches-py`` directory, a directory containing it, or the
``.tar.gz`` archive itself (read in place, nothing extracted).  Each of ``data_batch_1..5`` and
``test_batch`` is a pickled dict with ``b"data"`` (``uint8 [N, 3072]``: 1024 red, 1024 green, 1024
blue values, each a row-major 32x32 plane) and ``b"labels"`` (N integers in 0..9).

Pickles can run code, so they are read with a restricted unpickler that only resolves the few
numpy names an array needs.  The 50,000 training images are split by a seeded permutation into
``1 - val_fraction`` train and ``val_fraction`` validation (45k / 5k, ``docs/protocols.md#cifar``).  Pixels stay
``uint8`` (``scale = 1/255`` gives [0, 1]); no mean/std normalisation.  Any missing file or wrong
format is one :class:`InputError`.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import torch

from estimators.errors import InputError

from .dataset import Dataset

__all__ = ["load_cifar10", "read_batch", "TRAIN_FILES", "TEST_FILE"]

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
_SUBDIR = "cifar-10-batches-py"
_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only the numpy names needed to rebuild arrays (``numpy.core`` is read as ``numpy._core``)."""

    def find_class(self, module: str, name: str):
        if module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core."):]
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one batch file's bytes into ``(data uint8 [N, 3072], labels int64 [N])``."""
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any decoding failure is a format error
        why = f"{type(exc).__name__}: {exc}"
        raise InputError(f"CIFAR-10 file {where!r} is not a python-pickle batch ({why})") from None
    if not isinstance(obj, dict):
        raise InputError(f"CIFAR-10 file {where!r} holds a {type(obj).__name__}, expected a dict")
    get = lambda key: obj.get(key.encode(), obj.get(key))  # noqa: E731 - bytes keys (py2 pickles) or str keys
    data, labels = get("data"), get("labels")
    if data is None or labels is None:
        raise InputError(f"CIFAR-10 file {where!r} lacks the 'data' or 'labels' entry")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {list(data.shape)}"
        raise InputError(f"CIFAR-10 file {where!r}: 'data' must be uint8 [N, 3072], got {got}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"CIFAR-10 file {where!r}: 'labels' must be integers") from None
    if labels.shape[0] != data.shape[0] or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise InputError(f"CIFAR-10 file {where!r}: need {data.shape[0]} labels in 0..9")
    return data, labels


def _read_files(path: str) -> tuple[dict[str, bytes], str]:
    """The bytes of every batch file at ``path`` (a directory or a .tar.gz archive), and where they were."""
    names = TRAIN_FILES + (TEST_FILE,)
    if not os.path.exists(path):
        raise InputError(f"CIFAR-10 path {path!r} does not exist (give the python version: cifar-10-batches-py)")
    if os.path.isfile(path):
        try:
            with tarfile.open(path, "r:*") as tar:
                members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
                missing = [n for n in names if n not in members]
                if missing:
                    raise InputError(f"CIFAR-10 archive {path!r} has no file {missing[0]!r}")
                return {n: tar.extractfile(members[n]).read() for n in names}, path
        except (tarfile.TarError, OSError, EOFError) as exc:
            # tarfile's "r:*" lists one failure per compression on its own line: the gist is one reason
            why = ("not a tar archive, plain or compressed with gzip, bzip2 or xz" if isinstance(exc, tarfile.ReadError)
                   and str(exc).startswith("file could not be opened") else " ".join(str(exc).split()))
            raise InputError(f"CIFAR-10 path {path!r} is neither a directory nor a readable tar archive "
                             f"({why})") from None
    base = path
    if not os.path.exists(os.path.join(base, TEST_FILE)) and os.path.isdir(os.path.join(base, _SUBDIR)):
        base = os.path.join(base, _SUBDIR)
    out = {}
    for name in names:
        full = os.path.join(base, name)
        if not os.path.isfile(full):
            raise InputError(f"CIFAR-10 file {name!r} is missing in {base!r} (expected data_batch_1..5 and test_batch)")
        with open(full, "rb") as fh:
            out[name] = fh.read()
    return out, base


def load_cifar10(path, val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """The CIFAR-10 :class:`~reference.datasets.Dataset`: seeded train/val split of the five training batches."""
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    files, where = _read_files(os.fspath(path))
    parts = [read_batch(files[name], os.path.join(where, name)) for name in TRAIN_FILES]
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    Xte, yte = read_batch(files[TEST_FILE], os.path.join(where, TEST_FILE))
    n_val = max(1, int(round(val_fraction * X.shape[0])))
    if n_val >= X.shape[0]:
        raise InputError(f"CIFAR-10 at {where!r} has too few training images ({X.shape[0]}) for a validation split")
    perm = np.random.default_rng(seed).permutation(X.shape[0])
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    t = torch.from_numpy
    return Dataset("cifar10", t(X[train]), t(y[train]), t(X[val]), t(y[val]), t(Xte), t(yte), loss="softmax",
                   n_classes=10, image_shape=(3, 32, 32), scale=1.0 / 255.0)
