"""The ``sbn-bench`` command line: argparse subcommands, one-line errors, exit codes.

Exit codes: 0 success; 1 a failed check (regression) or task, or an unexpected internal error (one line;
``SBN_BENCH_TRACEBACK=1`` re-raises it); 2 bad input (unknown names, bad options, malformed files, oversize
exact problems, a corrupt store) with one line on stderr and no traceback; 130 interrupted; 143 terminated.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import sqlite3
import sys
import threading
from typing import Sequence


class _HeldSignals:
    """Hold SIGINT and SIGTERM while modules are imported: a Ctrl-C in the middle of an import (torch's,
    numpy's) left half-initialised modules behind (a RecursionError, or a traceback), and a SIGTERM ended the
    process without a word; held, they are noted and acted on once the imports are complete.  Only signals
    at their default disposition, in the main thread."""

    _DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}

    def __init__(self) -> None:
        self.caught: set[int] = set()
        self._previous: dict[int, object] = {}

    def hold(self) -> "_HeldSignals":
        if threading.current_thread() is threading.main_thread():
            for sig, default in self._DEFAULTS.items():
                if signal.getsignal(sig) is default:
                    self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum, frame) -> None:
        self.caught.add(signum)

    def release(self) -> set[int]:
        """Give the signals back; the ones that came while they were held."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
        return self.caught


_IMPORTS = _HeldSignals().hold()  # the console script's first seconds are these imports (torch)

from estimators.errors import InputError, one_line, raised_at  # noqa: E402
from estimators.spec import no_control_characters  # noqa: E402

from . import __version__  # noqa: E402
from .commands import command_names  # noqa: E402

_IMPORTS.release()

__all__ = ["main", "build_parser"]


def _plain_int(text: str) -> int:
    """``int`` for flags, in plain ASCII decimal only (``int()`` also reads ``6_4``, `` 64`` and other scripts'
    digits, which spec options refuse)."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError(text)
    return int(text)


def _plain_float(text: str) -> float:
    """``float`` for flags without underscores or non-ASCII characters (``float()`` reads ``0_1`` as 1)."""
    if "_" in text or not text.isascii() or text != text.strip():
        raise ValueError(text)
    return float(text)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2; ``type=int`` and
    ``type=float`` flags take plain numbers only (:func:`_plain_int`, :func:`_plain_float`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register("type", int, _plain_int)  # argparse looks a flag's type up here first
        self.register("type", float, _plain_float)

    def error(self, message: str):  # noqa: D401 - argparse API
        command = self.prog.split()[1] if len(self.prog.split()) > 1 else ""  # "sbn-bench run" -> "run"
        self.exit(2, f"sbn-bench: error: {message}{f' (sbn-bench {command} --help)' if command else ''}\n")


class _StoreOnce(argparse._StoreAction):
    """A single-valued flag given twice (``--estimators st --estimators arm``) is a usage error: argparse keeps
    the last one silently.  Repeatable flags are ``append`` actions and are not affected."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = namespace.__dict__.setdefault("_sbn_given", set())
        if self.dest in seen:
            raise argparse.ArgumentError(self, "given more than once; give it once (lists are comma-separated)")
        seen.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


def _once(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if type(action) is argparse._StoreAction and action.option_strings:
            action.__class__ = _StoreOnce


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sbn-bench",
        description="Benchmark gradient estimators of stochastic binary networks against exact gradients.",
    )
    parser.add_argument("--version", action="version", version=f"sbn-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in command_names():
        importlib.import_module(f"bench.commands.{name}").add_parser(sub)
    parser.commands = sub.choices  # each command's parser, for its defaults (_checked_flags)
    for command in sub.choices.values():
        _once(command)
    return parser


#: the commands that store each task as it completes (an interruption or a failure keeps the finished ones)
_STORES_TASKS = ("run", "train")


def system_error(exc: BaseException, db: str | None = None, command: str | None = "run") -> str:
    """One line for a failure of the system rather than of the input: a file operation, memory, the
    database.  Completed tasks are committed one transaction each, so the line says what is kept (for
    the commands that store tasks: ``run`` and ``train``)."""
    if isinstance(exc, MemoryError):
        if command not in _STORES_TASKS:
            return f"out of memory in '{command}'; use a smaller problem or a lower --memory-budget where it applies"
        return ("out of memory; completed tasks are stored. Use a smaller problem, fewer draws per call "
                "(--chunk) or a lower --memory-budget")
    if isinstance(exc, sqlite3.DatabaseError):  # a task's transaction notes its rollback (Store.write_task)
        notes = "; ".join(getattr(exc, "__notes__", ()))
        return (f"the results database{f' {db!r}' if db else ''} failed ({' '.join(str(exc).split())})"
                f"{f'; {notes}, completed tasks are stored' if notes else ''}")
    what = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    where = [f for f in (exc.filename, exc.filename2) if f]
    return f"{what.rstrip('.').lower()}: {' -> '.join(repr(str(f)) for f in where)}" if where else what


#: flags naming files or folders the command writes: made absolute as parsed, before any plugin runs
#: (a plugin that changes the working directory at import must not move the store or the outputs)
PATH_FLAGS = ("db", "out", "report_dir", "checkpoint_dir")
#: flags stored or printed as typed: a control character (a pasted newline) is refused
TEXT_FLAGS = PATH_FLAGS + ("label",)
#: the longest text flag accepted (a path or a label)
MAX_TEXT_FLAG = 4096
#: the longest error line printed (a message quoting 100,000 characters of input is cut, with "...")
MAX_ERROR_LINE = 2000


def _checked_flags(args: argparse.Namespace, command: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """``args`` with its text flags checked and its path flags absolute (one :class:`InputError`); an empty
    value given where the command's default is not empty (``--save ''``, ``--widths ''``) is refused, not
    read as the flag left out."""
    for key, value in vars(args).items():
        if value == "" and command is not None and command.get_default(key) != "":
            names = [max(a.option_strings, key=len) if a.option_strings else a.dest for a in command._actions if a.dest == key]
            raise InputError(f"{names[0] if names else key} is empty; give a value or leave it out")
    for flag in TEXT_FLAGS:
        value = getattr(args, flag, None)
        if isinstance(value, str):
            no_control_characters(value, f"--{flag.replace('_', '-')}")
            if len(value) > MAX_TEXT_FLAG:  # stored with every run and printed by 'runs'
                raise InputError(f"--{flag.replace('_', '-')} has {len(value)} characters; at most {MAX_TEXT_FLAG}")
            if value and flag in PATH_FLAGS:  # an empty name stays empty (and is refused as such)
                # a trailing slash says "a folder": kept, so that a file flag (--db x/) can refuse it
                setattr(args, flag, os.path.abspath(value) + (os.sep if value.endswith(("/", os.sep)) else ""))
    return args


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every clean-up path of an interruption runs (workers stopped,
    nothing half-written); the exit status is 143 (128 + SIGTERM)."""


def _terminate(signum, frame):
    raise Terminated()


def _on_sigterm(handler):
    """Install ``handler`` for SIGTERM (main thread only: a test may call :func:`main` from another)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _unraisable_note(seen: set):
    """A ``sys.unraisablehook`` that says once per message, in one line, what Python ignored (an exception in a
    plugin's ``__del__`` or a finaliser), instead of a traceback per occurrence."""
    def hook(unraisable) -> None:
        exc = unraisable.exc_value
        what = f"{type(exc).__name__}: {one_line(exc, 200)}" if exc is not None else "an exception"
        if what not in seen:
            seen.add(what)
            print(f"sbn-bench: note: ignored {what} raised during clean-up (a plugin's __del__?)", file=sys.stderr)
    return hook


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call ``main([...])`` directly)."""
    hook = sys.unraisablehook
    sys.unraisablehook = _unraisable_note(set())
    try:
        return _main(argv)
    except Exception as exc:  # noqa: BLE001 - not a refusal: a bug, or a plugin that broke torch itself
        if os.environ.get("SBN_BENCH_TRACEBACK"):
            raise
        print(f"sbn-bench: internal error: {type(exc).__name__}: {one_line(exc)}{raised_at(exc)}; rerun with "
              f"SBN_BENCH_TRACEBACK=1 for the traceback, and please report it", file=sys.stderr)
        return 1
    finally:
        if argv is not None:  # a caller's process (tests): its hook back; the console script keeps ours to the end
            sys.unraisablehook = hook


#: what an interruption keeps, for the commands that store work as they go (the others store nothing,
#: or, like ``time``, only at the end)
_RESUME = {c: "; completed tasks are stored, rerun the same command to resume" for c in _STORES_TASKS}


def _main(argv: Sequence[str] | None) -> int:
    held = _HeldSignals().hold()
    try:
        try:
            parser = build_parser()  # imports every command: a Ctrl-C is acted on once they are complete
        finally:
            caught = held.release() | _IMPORTS.caught
            _IMPORTS.caught = set()
        if signal.SIGTERM in caught:
            print("sbn-bench: terminated (SIGTERM) before anything was done", file=sys.stderr)
            return 128 + signal.SIGTERM
        if caught:
            raise KeyboardInterrupt
        args = parser.parse_args(argv)
        vars(args).pop("_sbn_given", None)  # _StoreOnce's bookkeeping
    except KeyboardInterrupt:
        print("sbn-bench: interrupted before anything was done", file=sys.stderr)
        return 130
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    previous = _on_sigterm(_terminate)
    try:
        return int(args.func(_checked_flags(args, parser.commands.get(args.command))) or 0)
    except Terminated:
        print(f"sbn-bench: terminated (SIGTERM){_RESUME.get(args.command, '')}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except InputError as exc:  # one line whatever the message quotes (a library's multi-line reason, 100 kB of input)
        print(f"sbn-bench: error: {one_line(exc, MAX_ERROR_LINE)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (``sbn-bench show | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, MemoryError, sqlite3.DatabaseError) as exc:
        print(f"sbn-bench: error: {system_error(exc, getattr(args, 'db', None), args.command)}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # torch reports a failed allocation as a RuntimeError, not a MemoryError
        if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc).lower():
            raise
        print(f"sbn-bench: error: {system_error(MemoryError(), command=args.command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sbn-bench: interrupted{_RESUME.get(args.command, '')}", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            _on_sigterm(previous)
