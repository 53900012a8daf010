"""Rendering stored runs: runs loaded from the results store, one report built with :mod:`reports`.

``sbn-bench report`` renders any stored runs; ``sbn-bench run`` and ``sbn-bench train`` render the
run they made.  Rendering reads results only (no recomputation).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.store import Store
from estimators.errors import InputError
from estimators.inputs import cannot_create_in, comma_items, is_sqlite_file, no_repeats
from reports import FORMATS, ReportError, build_report

__all__ = ["check_out_dir", "check_out_file", "check_out_files", "check_report_flags", "parse_formats", "render",
           "write_file"]


def check_out_dir(path: str | os.PathLike, what: str = "output folder") -> None:
    """Refuse, before anything runs, a folder that is a file or cannot be created or written."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        raise InputError(f"{what} {str(p)!r} is a symbolic link to nothing (it cannot be made into a folder)")
    if p.exists() and not p.is_dir():
        raise InputError(f"{what} {str(p)!r} exists and is not a folder")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{what} {str(p)!r} cannot be written ({str(probe)!r} is not a writable folder)")
    reason = cannot_create_in(probe)
    if reason:
        raise InputError(f"{what} {str(p)!r} cannot be written (no folder can be created in {str(probe)!r}: "
                         f"{reason})")


def check_out_files(folder: str | os.PathLike, names, writer: str) -> None:
    """Refuse, before anything is written, an output ``folder/name`` that exists as a symbolic link (the
    write would land outside ``folder``) or as anything but a regular file (a FIFO blocks the writer); a
    folder on the way (``tables/``) must be a real folder.  ``names`` are relative to ``folder``."""
    for name in names:
        path, parts = Path(folder), Path(name).parts
        for i, part in enumerate(parts):
            path, last = path / part, i == len(parts) - 1
            if path.is_symlink():
                raise InputError(f"{path} is a symbolic link; {writer} writes only plain files in {str(folder)!r}")
            if path.exists() and not (path.is_file() if last else path.is_dir()):
                kind = ("a directory" if path.is_dir() else "a pipe (FIFO)" if path.is_fifo() else "a socket"
                        if path.is_socket() else "a device" if not path.is_file() else "a file")
                raise InputError(f"{path} is {kind}, not a {'regular file' if last else 'folder'}; "
                                 f"{writer} writes only plain files in {str(folder)!r}")
            if last and is_sqlite_file(path):  # `report --db o/report.html --out o` replaced the store it read
                raise InputError(f"{path} is a SQLite database (a results store?); {writer} does not replace it")


def check_out_file(path: str | os.PathLike, writer: str) -> None:
    """Refuse, before the work, a file ``path`` that :func:`write_file` could not write: its folder as
    :func:`check_out_dir`, the file itself as :func:`check_out_files` (a link, a FIFO, a folder)."""
    folder, name = os.path.split(os.path.abspath(path))
    check_out_dir(folder, f"{writer} folder")
    check_out_files(folder, [name], writer)  # `check --json results.sqlite` replaced every stored run


def write_file(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` whole: into a temporary beside it, then moved into place (its folder is
    made, as for ``--db``), so a reader or an interruption never sees half a file."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


#: the report formats of ``run``, ``train`` and ``report`` when ``--format`` is not given
DEFAULT_FORMATS = "html,pdf"


def parse_formats(text: str) -> tuple[str, ...]:
    """``"html,pdf"`` -> ``("html", "pdf")``; unknown or empty -> InputError."""
    formats = tuple(no_repeats([f.lower() for f in comma_items(text, "--format")], f"--format {text!r}", "format"))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"unknown report format {(bad or [text])[0]!r} (choose from {', '.join(FORMATS)})")
    return formats


def check_report_flags(no_report: bool, report_dir: str | None, formats: str, db: str | None = None) -> None:
    """The report flags of ``run`` and ``train``, checked before anything runs: ``--no-report`` with a
    ``--report-dir`` or another ``--format`` than the default contradicts itself; else the formats and the
    folder must be usable, and the store ``db`` must not be one of the files the report writes."""
    if no_report:
        if report_dir is not None:
            raise InputError("--no-report and --report-dir contradict each other; drop one of them")
        if formats != DEFAULT_FORMATS:
            raise InputError("--no-report and --format contradict each other; drop one of them")
        return
    fmts = parse_formats(formats)
    check_out_dir(report_dir or "sbn-report", "--report-dir" if report_dir is not None else "the report folder")
    if report_dir is not None:  # the files the report will write there (the run's default folder is new)
        check_out_files(report_dir, [f"report.{f}" for f in fmts] + ["tables/x"], "the report")
    if db is not None and _report_writes(db, report_dir):
        where = f"--report-dir {report_dir!r}" if report_dir is not None else "in the default folder sbn-report/RUN_ID"
        raise InputError(f"--db {db!r} is a path the report writes ({where}); name another store or another report "
                         f"folder")


def _report_writes(db: str, report_dir: str | None) -> bool:
    """Whether the report of a run would write the path ``db``: ``report.html``, ``report.pdf``, ``tables`` or a
    file in it, in ``report_dir`` (or, without it, in any ``sbn-report/RUN_ID`` folder); paths compared resolved
    (a linked folder is the same folder)."""
    here = os.path.realpath(db)
    if report_dir is not None:
        folder = os.path.realpath(report_dir)
        return (os.path.dirname(here) == folder and os.path.basename(here) in ("report.html", "report.pdf", "tables")
                or os.path.dirname(here) == os.path.join(folder, "tables"))
    root = os.path.realpath("sbn-report")
    parts = os.path.relpath(here, root).split(os.sep)
    return (parts[0] != ".." and (len(parts) == 2 and parts[1] in ("report.html", "report.pdf", "tables")
                                  or len(parts) == 3 and parts[1] == "tables"))


def render(db: str, refs: list[str], out_dir: str | None, formats: str = DEFAULT_FORMATS) -> dict[str, Path]:
    """Load ``refs`` from the store at ``db`` and build one report in ``out_dir``; returns the written paths.

    Report errors (an empty or malformed run) become :class:`InputError`, which the CLI prints as one line.
    """
    fmts = parse_formats(formats)
    if out_dir is not None:
        check_out_dir(out_dir)
    with Store(db) as store:
        runs = [store.load_run(ref) for ref in refs]
    no_repeats([r.manifest.get("run_id") for r in runs], "the report", "run")  # 'latest latest': one run twice
    out = out_dir or f"sbn-report/{runs[0].manifest.get('run_id', 'run')}"
    try:
        return build_report(runs, out, fmts, check=lambda names: check_out_files(out, names, "report"))
    except ReportError as exc:
        raise InputError(str(exc)) from None
