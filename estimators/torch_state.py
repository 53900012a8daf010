"""Torch's process-wide settings, kept across user code (plugin imports and estimator calls).

A plugin may switch off autograd (``torch.set_grad_enabled(False)``), change the default device
(``torch.set_default_device("meta")``) or dtype, or the number of threads, at import or inside its
estimator.  :func:`kept_torch_state` restores all four when the user code returns or raises, so
one estimator's settings never reach the exact reference, another estimator or the store.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["kept_torch_state"]


@contextlib.contextmanager
def kept_torch_state() -> Iterator[None]:
    """Run the body, then restore grad mode, default device, default dtype and thread count."""
    grad, dtype, threads = torch.is_grad_enabled(), torch.get_default_dtype(), torch.get_num_threads()
    device = torch.get_default_device()
    try:
        yield
    finally:
        torch.set_grad_enabled(grad)
        if torch.get_default_dtype() != dtype:
            torch.set_default_dtype(dtype)
        if torch.get_default_device() != device:
            torch.set_default_device(None if device == torch.device("cpu") else device)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
