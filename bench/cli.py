"""The ``sbn-bench`` command line: argparse subcommands, one-line errors, exit codes.

Exit codes: 0 success; 1 a failed check (regression); 2 bad input (unknown names, bad options,
malformed files, oversize exact problems, a corrupt store) with one line on stderr and no
traceback; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sqlite3
import sys
from typing import Sequence

from estimators.errors import InputError

from . import __version__
from .commands import command_names

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sbn-bench",
        description="Benchmark gradient estimators of stochastic binary networks against exact gradients.",
    )
    parser.add_argument("--version", action="version", version=f"sbn-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in command_names():
        importlib.import_module(f"bench.commands.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call ``main([...])`` directly)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"sbn-bench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (``sbn-bench show | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, MemoryError, sqlite3.DatabaseError) as exc:
        print(f"sbn-bench: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sbn-bench: interrupted; completed tasks are stored, rerun the same command to resume", file=sys.stderr)
        return 130
