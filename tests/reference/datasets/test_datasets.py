"""Training data sets: the PSA 2-D splits, the generated glyph images, and the CIFAR-10 pickle loader."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from estimators.errors import InputError
from reference.datasets.cifar10 import TEST_FILE, TRAIN_FILES, load_cifar10
from reference.datasets import psa_2d
from reference.datasets import SHAPE_CLASSES, psa2d, shapes
from reference.datasets.shapes import _glyph_masks


# ---- PSA 2-D -----------------------------------------------------------------------------------
def test_psa2d_train_split_is_the_protocol_data_and_val_test_are_fresh():
    ds = psa2d(seed=3, train=200, val=50, test=60)
    X, y = psa_2d(200, 3)
    assert np.array_equal(ds.X_train.numpy(), X) and np.array_equal(ds.y_train.numpy(), y)
    assert ds.X_val.shape == (50, 2) and ds.X_test.shape == (60, 2)
    assert ds.loss == "logistic" and ds.n_outputs == 1 and ds.image_shape is None
    assert set(ds.y_val.tolist()) == {-1.0, 1.0}
    # no split shares a point with another
    rows = lambda t: {tuple(r) for r in t.tolist()}  # noqa: E731
    assert not rows(ds.X_train) & rows(ds.X_val) and not rows(ds.X_val) & rows(ds.X_test)


# ---- generated glyph images --------------------------------------------------------------------
def test_shapes_are_deterministic_balanced_and_in_range():
    a = shapes(size=10, train=200, val=40, test=30, seed=5)
    b = shapes(size=10, train=200, val=40, test=30, seed=5)
    c = shapes(size=10, train=200, val=40, test=30, seed=6)
    for split in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test"):
        assert torch.equal(getattr(a, split), getattr(b, split))
    assert not torch.equal(a.X_train, c.X_train)
    assert a.X_train.shape == (200, 100) and a.X_train.dtype == torch.float32
    assert a.image_shape == (1, 10, 10) and a.n_outputs == 10 and a.loss == "softmax"
    assert float(a.X_train.min()) >= 0.0 and float(a.X_train.max()) <= 1.0
    assert np.bincount(a.y_train.numpy(), minlength=10).tolist() == [20] * 10


def test_shapes_splits_are_independent_streams():
    small = shapes(size=8, train=50, val=20, test=20, seed=1)
    big = shapes(size=8, train=90, val=20, test=20, seed=1)
    assert torch.equal(small.X_val, big.X_val) and torch.equal(small.X_test, big.X_test)


@pytest.mark.parametrize("size", [8, 12, 13])
def test_every_glyph_is_mirror_symmetric_so_flip_augmentation_keeps_labels(size):
    centre = np.arange(size) + 0.5 - size / 2
    yy, xx = centre[:, None], centre[None, :]
    s = np.full((1, 1, 1), 0.3 * size)
    t = np.full((1, 1, 1), 0.07 * size)
    masks = _glyph_masks(xx[None] + 0 * yy[None], yy[None] + 0 * xx[None], s, t)  # centred glyphs
    assert masks.shape == (len(SHAPE_CLASSES), 1, size, size)
    for m in masks[:, 0]:
        assert np.array_equal(m, m[:, ::-1])
        assert m.any()
    flat = masks[:, 0].reshape(len(SHAPE_CLASSES), -1)
    assert len({row.tobytes() for row in flat}) == len(SHAPE_CLASSES)  # ten distinct glyphs


def test_shapes_bad_input():
    with pytest.raises(InputError, match="size"):
        shapes(size=3)
    with pytest.raises(InputError, match="at least one"):
        shapes(train=0)


# ---- CIFAR-10 ----------------------------------------------------------------------------------
PER_BATCH = 10


def _batches(seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in TRAIN_FILES + (TEST_FILE,):
        out[name] = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, PER_BATCH)],
                     b"data": rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8),
                     b"filenames": [f"img{i}.png".encode() for i in range(PER_BATCH)]}
    return out


def _write(directory, batches: dict, protocol: int = 2) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, d in batches.items():
        with open(os.path.join(directory, name), "wb") as fh:
            pickle.dump(d, fh, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_loader_reads_the_pickle_format(tmp_path, protocol):
    batches = _batches()
    root = tmp_path / "cifar-10-batches-py"
    _write(root, batches, protocol)
    for path in (root, tmp_path):  # the batch directory, or the folder holding it
        ds = load_cifar10(path, val_fraction=0.1, seed=0)
        assert ds.X_train.shape == (45, 3072) and ds.X_val.shape == (5, 3072) and ds.X_test.shape == (10, 3072)
        assert ds.X_train.dtype == torch.uint8 and ds.image_shape == (3, 32, 32) and ds.scale == 1 / 255
        all_X = np.concatenate([batches[n][b"data"] for n in TRAIN_FILES])
        all_y = np.concatenate([batches[n][b"labels"] for n in TRAIN_FILES])
        got = np.concatenate([ds.X_train.numpy(), ds.X_val.numpy()])
        got_y = np.concatenate([ds.y_train.numpy(), ds.y_val.numpy()])
        order = {row.tobytes(): i for i, row in enumerate(all_X)}
        idx = [order[row.tobytes()] for row in got]
        assert sorted(idx) == list(range(50))  # a partition of the 50 training images
        assert np.array_equal(got_y, all_y[idx])  # labels travel with their images
        assert np.array_equal(ds.X_test.numpy(), batches[TEST_FILE][b"data"])
        feats = ds.features(ds.X_test[:2], torch.float32)
        assert float(feats.max()) <= 1.0 and torch.allclose(feats * 255, ds.X_test[:2].float())
    # the split is a seeded permutation
    assert not torch.equal(load_cifar10(root, seed=1).X_val, load_cifar10(root, seed=0).X_val)


def test_cifar_loader_reads_the_tar_archive_and_numpy1_pickles(tmp_path):
    batches = _batches(1)
    tar_path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for name, d in batches.items():
            raw = pickle.dumps(d, protocol=2).replace(b"numpy._core", b"numpy.core")  # as numpy 1.x wrote them
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    ds = load_cifar10(tar_path)
    assert ds.X_train.shape[0] + ds.X_val.shape[0] == 50
    assert np.array_equal(ds.X_test.numpy(), batches[TEST_FILE][b"data"])


class _Exploit:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_cifar_loader_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist") as e:
        load_cifar10(tmp_path / "nowhere")
    _one_line(e)
    root = tmp_path / "c"
    batches = _batches()
    _write(root, batches)
    os.remove(root / "data_batch_3")
    with pytest.raises(InputError, match="data_batch_3") as e:
        load_cifar10(root)
    _one_line(e)

    def broken(name: str, payload) -> pytest.ExceptionInfo:
        _write(root, batches)
        with open(root / name, "wb") as fh:
            fh.write(payload if isinstance(payload, bytes) else pickle.dumps(payload, protocol=2))
        with pytest.raises(InputError, match=name) as info:
            load_cifar10(root)
        _one_line(info)
        return info

    broken("test_batch", b"not a pickle at all")
    broken("data_batch_1", [1, 2, 3])
    broken("data_batch_2", {b"labels": [0] * PER_BATCH})
    broken("data_batch_4", {b"data": np.zeros((PER_BATCH, 3072), np.float32), b"labels": [0] * PER_BATCH})
    broken("data_batch_5", {b"data": np.zeros((PER_BATCH, 3000), np.uint8), b"labels": [0] * PER_BATCH})
    broken("data_batch_1", {b"data": np.zeros((PER_BATCH, 3072), np.uint8), b"labels": [11] * PER_BATCH})
    broken("data_batch_1", {b"data": np.zeros((PER_BATCH, 3072), np.uint8), b"labels": [0] * 3})
    # a pickle that would run code is refused, and the code does not run
    evil = _Exploit()
    evil.target = str(tmp_path / "pwned")
    info = broken("test_batch", pickle.dumps({b"data": evil}, protocol=2))
    assert "refusing" in str(info.value) and not os.path.exists(evil.target)
    with open(tmp_path / "junk.tar.gz", "wb") as fh:
        fh.write(b"\x00" * 100)
    with pytest.raises(InputError, match="tar archive"):
        load_cifar10(tmp_path / "junk.tar.gz")
    with pytest.raises(InputError, match="val_fraction"):
        load_cifar10(root, val_fraction=1.5)
