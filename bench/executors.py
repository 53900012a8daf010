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
import ctypes
import multiprocessing
import os
import re
import signal
import sys
import threading
import time

import torch

from estimators.errors import InputError

__all__ = ["EXECUTORS", "check_executor", "make_executor"]

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


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive the sweep that started it (``kill -9`` of the parent included): the
    kernel signals it when the parent dies (Linux ``PR_SET_PDEATHSIG``), and a watchdog thread exits
    the worker once it is re-parented (any POSIX system).  ``parent`` is the sweep's pid, passed in:
    a worker whose imports outlast its parent finds itself re-parented and exits at once."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the watchdog alone
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="sbn-bench-parent-watchdog", daemon=True).start()


def _close_pool(ex: cf.ProcessPoolExecutor, grace_s: float = 5.0) -> None:
    """Shut a process pool down without waiting on a dead worker: ``shutdown(wait=True)`` hung when a worker
    was killed between tasks.  By the time the sweep leaves the pool its results are stored; workers still
    alive after ``grace_s`` are terminated."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.terminate()
            proc.join(1.0)


def _init_worker() -> None:
    torch.set_num_threads(1)


def _init_process_worker(parent: int) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (inherited already): Ctrl-C is the sweep's to handle
    _init_worker()


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore SIGINT while worker processes are started: a process inherits an ignored signal across exec, so a
    Ctrl-C sent to the whole process group (a terminal's) never lands in a worker's start-up, which printed
    its traceback; the sweep handles Ctrl-C and stops the workers.  A Ctrl-C in this window (the
    milliseconds of a process start) is dropped.  Main thread only (elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Pool(cf.ProcessPoolExecutor):
    """A spawn-based process pool whose workers start with SIGINT ignored (:func:`_sigint_ignored`); they are
    started on demand by ``submit``."""

    def submit(self, fn, /, *args, **kwargs):
        with _sigint_ignored():
            return super().submit(fn, *args, **kwargs)


#: local worker processes at most (8 per CPU, at least 64; like ``--threads``): more only exhausts the machine
MAX_LOCAL_WORKERS = max(64, 8 * (os.cpu_count() or 1))


def check_executor(kind: str, workers: int | None = None, scheduler: str | None = None) -> None:
    """Refuse an unknown executor, a non-positive worker count, dask without a scheduler or without the
    extra, before anything is planned or written."""
    if kind not in EXECUTORS:
        raise InputError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"--workers must be positive, got {workers}")
    if workers is not None and kind != "dask" and workers > MAX_LOCAL_WORKERS:  # a remote cluster sizes itself
        raise InputError(f"--workers {workers} is more than this machine can run ({MAX_LOCAL_WORKERS}: 8 per CPU, at "
                         f"least 64)")
    if kind == "dask" and not scheduler:
        raise InputError("--executor dask needs --scheduler tcp://HOST:PORT")
    port = re.search(r":(\d+)/?$", scheduler or "")
    if kind == "dask" and port and not 0 < int(port.group(1)) < 65536:
        raise InputError(f"--scheduler {scheduler!r}: port {port.group(1)} is not a TCP port (1-65535)")
    if kind == "dask" and not re.fullmatch(r"(tcp|tls|inproc|ws|wss)://[^\s/:]+:\d{1,5}/?|[^\s/:]+:\d{1,5}", scheduler):
        raise InputError(f"--scheduler {scheduler!r} is not an address: give tcp://HOST:PORT")
    if scheduler and kind != "dask":
        raise InputError(f"--scheduler is for --executor dask (this run uses {kind!r})")
    if workers is not None and kind == "inprocess":
        raise InputError("--workers needs --executor process, dask-local or dask (the default, inprocess, has one)")
    if kind in ("dask", "dask-local"):
        _dask()


def _dask():
    try:
        import dask.distributed as dd
    except ImportError:
        raise InputError("the dask executors need the 'dask' extra: pip install 'sbn-bench[dask]'") from None
    return dd


@contextlib.contextmanager
def make_executor(kind: str = "inprocess", workers: int | None = None, scheduler: str | None = None):
    """Yield ``(executor, window)``: the executor and how many tasks to keep in flight."""
    check_executor(kind, workers, scheduler)
    if kind == "inprocess":
        yield InlineExecutor(), 1
    elif kind == "process":
        n = workers or 2
        ctx = multiprocessing.get_context("spawn")
        ex = _Pool(max_workers=n, mp_context=ctx, initializer=_init_process_worker, initargs=(os.getpid(),))
        try:
            yield ex, 2 * n
        except BaseException:  # interrupted or failed: the running tasks' results are not wanted
            _close_pool(ex, grace_s=0.5)
            raise
        else:
            _close_pool(ex)
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
        # a free port for its HTTP server (":8787", its default, is taken when two clusters run at once)
        with dd.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address=":0") as cluster, dd.Client(cluster) as client:
            client.run(_init_worker)
            yield client.get_executor(pure=False), 2 * n
