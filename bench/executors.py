"""Executors for sweeps, all behind ``concurrent.futures.Executor``.

- ``inprocess`` (default): tasks run one at a time in this process, each stored before the next.
- ``process``: a local ``ProcessPoolExecutor`` (spawned workers, one torch thread each).
- ``dask``: an existing Dask distributed scheduler (``--scheduler tcp://HOST:PORT``), through
  ``Client.get_executor()``.
- ``dask-local``: a Dask ``LocalCluster`` on loopback with ``--workers N`` single-threaded workers.

Workers only compute; they send result rows back and the sweep's single writer stores them.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing

import torch

from estimators.errors import InputError

__all__ = ["EXECUTORS", "make_executor"]

EXECUTORS = ("inprocess", "process", "dask", "dask-local")


class InlineExecutor(cf.Executor):
    """Runs each task when it is submitted (no concurrency); futures come back already done."""

    def submit(self, fn, /, *args, **kwargs):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            if isinstance(exc, KeyboardInterrupt):
                raise
            fut.set_exception(exc)
        return fut


def _init_worker() -> None:
    torch.set_num_threads(1)


def _dask():
    try:
        import dask.distributed as dd
    except ImportError:
        raise InputError("the dask executors need the 'dask' extra: pip install 'sbn-bench[dask]'") from None
    return dd


@contextlib.contextmanager
def make_executor(kind: str = "inprocess", workers: int | None = None, scheduler: str | None = None):
    """Yield ``(executor, window)``: the executor and how many tasks to keep in flight."""
    if kind not in EXECUTORS:
        raise InputError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be positive, got {workers}")
    if kind == "inprocess":
        yield InlineExecutor(), 1
    elif kind == "process":
        n = workers or 2
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker) as ex:
            yield ex, 2 * n
    elif kind == "dask":
        if not scheduler:
            raise InputError("--executor dask needs --scheduler tcp://HOST:PORT")
        dd = _dask()
        try:
            client = dd.Client(scheduler, timeout="10s")
        except OSError as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with client:
            client.run(_init_worker)
            n = max(1, sum(client.nthreads().values()))
            yield client.get_executor(pure=False), 2 * n
    else:
        dd = _dask()
        n = workers or 2
        with dd.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address=None) as cluster, dd.Client(cluster) as client:
            client.run(_init_worker)
            yield client.get_executor(pure=False), 2 * n
