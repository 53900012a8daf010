"""The results store: one embedded SQLite database (standard-library ``sqlite3``).

Tables: ``runs`` (one row per run, with its manifest as JSON), ``tasks`` (one row per task: its
spec, key, status and cost), ``scores`` (tidy score rows), ``moments`` (the float64 Welford triples
per task and group, so any later aggregation is exact), ``curves`` (per-epoch training records:
task, epoch, metric, value) and ``timings`` (kernel throughput rows).

Integrity rules:
- each task's rows are committed in **one transaction** (task row, scores, moments), so a crash or
  ``kill -9`` never leaves partial rows, and a rerun skips the task keys already done;
- the schema version is ``PRAGMA user_version``; a database of another version, or a file that is
  not a healthy SQLite database, is refused with one line and is **never overwritten**; a store of
  an older version this code knows how to upgrade (:data:`MIGRATIONS`) is upgraded in one
  transaction when it is opened for writing (columns are only ever added), and read as it is when
  the file is read-only;
- WAL journal mode: readers do not block the single writer.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import re
import secrets
import socket
import stat
import sqlite3
import urllib.parse
from typing import Iterable

import numpy as np
import pandas as pd

from estimators import registry
from estimators.errors import InputError
from estimators.inputs import cannot_create_in
from estimators.spec import options_json, parse
from reports.results import RunResults

__all__ = ["Store", "SCHEMA_VERSION", "DEFAULT_DB", "RUN_KINDS"]

#: what a run can hold: accuracy scores, training curves, kernel timings
RUN_KINDS = ("accuracy", "training", "timing")

SCHEMA_VERSION = 2
#: upgrade steps: ``MIGRATIONS[v]`` takes a store of version ``v`` to ``v + 1`` (additive only)
MIGRATIONS = {
    1: "ALTER TABLE tasks ADD COLUMN facts TEXT",
}
#: ``PRAGMA application_id`` of an sbn-bench store ("SBNB"); stores made before it was set have 0
APPLICATION_ID = 0x53424E42
DEFAULT_DB = "sbn_results.sqlite"

#: a stored run id: printable ASCII without path separators (``safe_name`` for new ids is stricter; older ids pass)
_STORED_ID = re.compile(r"^[^\x00-\x1f\x7f/\\.][^\x00-\x1f\x7f/\\]{0,254}$")
TASK_COLUMNS = [
    "task_key", "problem", "estimator", "estimator_name", "unbiased", "device", "dtype", "draws", "seed",
    "status", "error", "seconds", "seconds_per_draw", "layer_evals", "head_evals", "backward_passes",
    "loss_evals_per_draw",
]
SCORE_COLUMNS = ["task_key", "problem", "estimator", "group", "metric", "M", "value", "lo", "hi"]
TIMING_COLUMNS = [
    "kernel", "variant", "device", "dtype", "shape", "unit", "items_per_s", "median_s", "iqr_s", "ratio",
    "ratio_to", "pct_peak", "peak_kind",
]

_SCHEMA = f"""
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, created_utc TEXT NOT NULL, label TEXT, preset TEXT,
    config_hash TEXT NOT NULL, manifest TEXT NOT NULL
);
CREATE TABLE tasks (
    run_id TEXT NOT NULL REFERENCES runs(run_id), task_key TEXT NOT NULL, problem TEXT, estimator TEXT,
    estimator_name TEXT, unbiased INTEGER, device TEXT, dtype TEXT, draws INTEGER, seed INTEGER,
    status TEXT NOT NULL, error TEXT, seconds REAL, seconds_per_draw REAL, layer_evals REAL,
    head_evals REAL, backward_passes REAL, loss_evals_per_draw REAL, spec TEXT, finished_utc TEXT,
    facts TEXT,
    PRIMARY KEY (run_id, task_key)
);
CREATE TABLE scores (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, problem TEXT, estimator TEXT, grp TEXT, metric TEXT,
    M INTEGER, value REAL, lo REAL, hi REAL
);
CREATE INDEX scores_run ON scores(run_id, task_key);
CREATE TABLE moments (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, grp TEXT NOT NULL, n INTEGER, mean BLOB, m2 BLOB,
    PRIMARY KEY (run_id, task_key, grp)
);
CREATE TABLE curves (
    run_id TEXT NOT NULL, task_key TEXT NOT NULL, problem TEXT, estimator TEXT, epoch INTEGER, metric TEXT,
    value REAL
);
CREATE INDEX curves_run ON curves(run_id, task_key);
CREATE TABLE timings (
    run_id TEXT NOT NULL, {", ".join(c + (" REAL" if c in ("items_per_s", "median_s", "iqr_s", "ratio", "pct_peak") else " TEXT") for c in TIMING_COLUMNS)},
    extra TEXT
);
PRAGMA user_version = {SCHEMA_VERSION};
PRAGMA application_id = {APPLICATION_ID};
"""
_SUPERSEDED = "SELECT task_key FROM tasks WHERE run_id = ? AND status = 'superseded'"
_TABLES = {"runs", "tasks", "scores", "moments", "timings", "curves"}


def _utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """An open results database.  ``Store(path, create=True)`` makes a new one if ``path`` is absent."""

    def __init__(self, path: str | os.PathLike = DEFAULT_DB, create: bool = False):
        self.path = os.fspath(path)
        if self.path.endswith(("/", os.sep)) and not os.path.isdir(self.path):
            raise InputError(f"results database {self.path!r} ends with a slash, so it names a folder; give a file "
                             f"name (like {os.path.join(self.path, 'sbn_results.sqlite')!r})")
        exists = os.path.exists(self.path)
        if not exists and os.path.islink(self.path):
            raise InputError(f"results database {self.path!r} is a symbolic link to a file that does not exist")
        if not exists and not create:
            raise InputError(f"results database {self.path!r} does not exist (run 'sbn-bench run' first)")
        if not self.path:
            raise InputError("the results database path is empty")
        if exists and os.path.isdir(self.path):
            raise InputError(f"results database {self.path!r} is a directory")
        if exists and not stat.S_ISREG(os.stat(self.path).st_mode):
            raise InputError(f"results database {self.path!r} is not a regular file (a pipe or device?)")
        for suffix in ("-journal", "-wal", "-shm"):  # SQLite opens these beside the store: a pipe there hung it
            side = self.path + suffix
            if os.path.lexists(side) and not stat.S_ISREG(os.lstat(side).st_mode):
                raise InputError(f"results database {self.path!r} cannot be opened: its {suffix[1:]} file {side!r} "
                                 f"is not a regular file (a pipe, folder or link); move it away")
        if create and exists and not os.access(self.path, os.W_OK):
            raise InputError(f"results database {self.path!r} is read-only; results cannot be stored there "
                             f"(use another --db)")
        try:
            if not exists:
                self._create()
            version = self._check_existing()
            self.con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self.con.execute("PRAGMA foreign_keys = ON")
            self.con.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the file (and its -wal) now
        except (sqlite3.OperationalError, OSError) as exc:
            raise self._cannot_open(exc) from None
        self.version = version
        if version < SCHEMA_VERSION and os.access(self.path, os.W_OK):
            self._migrate(version)

    def _cannot_open(self, exc: sqlite3.OperationalError | OSError) -> InputError:
        """One line naming the store and, where the OS can tell, why it could not be opened or created."""
        folder = os.path.dirname(os.path.abspath(self.path))
        why = cannot_create_in(folder) if os.path.isdir(folder) else None
        if why:
            why = f"no file can be created in {folder!r}: {why}"
        elif isinstance(exc, OSError) and exc.strerror:  # making its folder failed
            why = f"{exc.strerror.lower()}: {exc.filename!r}" if exc.filename else exc.strerror.lower()
        else:
            why = " ".join(str(exc).split())
        return InputError(f"results database {self.path!r} cannot be opened or created ({why})")

    def _migrate(self, version: int) -> None:
        """Upgrade an older store in one transaction (another process may have done it already)."""
        cur = self.con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            now = cur.execute("PRAGMA user_version").fetchone()[0]
            for v in range(now, SCHEMA_VERSION):
                cur.execute(MIGRATIONS[v])
            cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            cur.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self.version = SCHEMA_VERSION

    def _create(self) -> None:
        """Create the database atomically: built complete in a private file, then linked into place
        (``os.link`` never overwrites), so two runs creating one store at once both end up using the
        one that won, and nobody ever sees a half-made schema."""
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.{secrets.token_hex(4)}.new"
        try:
            con = sqlite3.connect(tmp, isolation_level=None)
            try:
                con.execute("PRAGMA journal_mode = WAL")
                con.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                con.execute("PRAGMA journal_mode = DELETE")  # a self-contained file to link
            finally:
                con.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process created it first: use theirs (checked like any existing file)
        finally:
            for leftover in (tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"):
                if os.path.exists(leftover):
                    os.remove(leftover)

    def _check_existing(self) -> int:
        """Refuse, without touching the file, anything that is not a healthy store of our schema; its version."""
        try:
            # immutable: no lock, no -wal/-shm file is created beside a file that may not be ours
            con = sqlite3.connect(f"file:{urllib.parse.quote(os.path.abspath(self.path))}?mode=ro&immutable=1",
                                  uri=True, timeout=30.0)
            try:
                ok = con.execute("PRAGMA quick_check").fetchone()[0]
                version = con.execute("PRAGMA user_version").fetchone()[0]
                app = con.execute("PRAGMA application_id").fetchone()[0]
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                task_cols = {r[1] for r in con.execute("PRAGMA table_info(tasks)")} if "tasks" in tables else set()
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path!r} is not a readable sbn-bench results database ({exc}); left untouched") from None
        if ok != "ok":
            raise InputError(f"results database {self.path!r} failed its integrity check ({ok}); left untouched")
        ours = app == APPLICATION_ID or (app == 0 and _TABLES <= tables and set(TASK_COLUMNS) <= task_cols)
        if not ours:
            raise InputError(f"{self.path!r} is an SQLite database but not an sbn-bench results store; use another "
                             f"--db path (the file was left untouched)")
        if 1 <= version <= SCHEMA_VERSION and not _TABLES <= tables:
            raise InputError(f"results database {self.path!r} holds damaged data: its table(s) "
                             f"{', '.join(sorted(_TABLES - tables))} are missing; left untouched")
        if not (1 <= version <= SCHEMA_VERSION):
            raise InputError(
                f"results database {self.path!r} has schema version {version}, this sbn-bench reads versions 1 to "
                f"{SCHEMA_VERSION}; use another --db path (the file was left untouched)"
            )
        return version

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- runs ----------------------------------------------------------------------------------
    def create_run(self, run_id: str, manifest: dict, config_hash: str, label: str = "", preset: str = "") -> None:
        self.con.execute(  # OR IGNORE: two processes starting the same run at once both go on with it
            "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, manifest.get("created_utc", _utc()), label, preset, config_hash, json.dumps(manifest, default=str)),
        )

    def claim(self, run_id: str, task_key: str, problem: str = "", estimator: str = "") -> bool:
        """Claim a task for this process, in one transaction: true when it is ours to compute.

        Concurrent runs of one sweep on one store share the work this way (each skips what another
        has claimed or finished), which also spreads a sweep over several processes or machines
        with a shared file system.  A claim is a ``claimed`` task row naming ``host:pid:start`` (the
        process's start time, so that a reused process id does not keep it); it is void when that process
        is gone (same host) or its heartbeat is older than :data:`CLAIM_TTL_S` (another host)."""
        me = _owner()
        cur = self.con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            row = cur.execute("SELECT status, error, finished_utc FROM tasks WHERE run_id = ? AND task_key = ?",
                              (run_id, task_key)).fetchone()
            if row is not None and (row[0] == "done" or (row[0] == "claimed" and row[1] != me
                                                          and not _claim_void(row[1], row[2]))):
                self._rollback()
                return False
            cur.execute("INSERT OR REPLACE INTO tasks (run_id, task_key, problem, estimator, status, error, "
                        "finished_utc) VALUES (?, ?, ?, ?, 'claimed', ?, ?)", (run_id, task_key, problem, estimator,
                                                                             me, _utc()))
            cur.execute("COMMIT")
            return True
        except BaseException:
            self._rollback()
            raise

    def heartbeat(self, run_id: str) -> int:
        """Renew the time of this process's claims of ``run_id`` (a claim on another host lives on it)."""
        cur = self.con.execute("UPDATE tasks SET finished_utc = ? WHERE run_id = ? AND status = 'claimed' AND error = ?",
                               (_utc(), run_id, _owner()))
        return cur.rowcount

    def _rollback(self) -> None:
        """Undo the open transaction, if one is open: an interruption (Ctrl-C, SIGTERM) may land after the
        COMMIT, and a failed ROLLBACK must not replace the exception being handled."""
        if self.con.in_transaction:
            try:
                self.con.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def claim_state(self, run_id: str, task_key: str) -> str:
        """``finished`` (done or failed), ``held`` (claimed by a live process other than this one) or ``free``
        (absent, superseded, or a void claim): what a run waiting on another run's task needs to know."""
        row = self.con.execute("SELECT status, error, finished_utc FROM tasks WHERE run_id = ? AND task_key = ?",
                               (run_id, task_key)).fetchone()
        if row is not None and row[0] in ("done", "failed"):
            return "finished"
        if row is not None and row[0] == "claimed" and row[1] != _owner() and not _claim_void(row[1], row[2]):
            return "held"
        return "free"

    def has_run(self, run_id: str) -> bool:
        return self.con.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None

    def update_manifest(self, run_id: str, **items) -> None:
        manifest = self.manifest(run_id)
        manifest.update(items)
        self.con.execute("UPDATE runs SET manifest = ? WHERE run_id = ?", (json.dumps(manifest, default=str), run_id))

    def manifest(self, run_id: str) -> dict:
        row = self.con.execute("SELECT manifest FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise InputError(f"unknown run {run_id!r}")
        if row[0] in (None, ""):  # every run stores one; _json would read an absent one as {}
            raise self._damaged(f"the manifest of run {run_id!r} is missing")
        return self._json(row[0], f"the manifest of run {run_id!r}")

    def runs(self) -> pd.DataFrame:
        """One row per run: id, creation time, label, preset, kind (:data:`RUN_KINDS`), task counts and
        the code that made it (package version, git commit, ``+dirty`` for an uncommitted tree)."""
        q = """SELECT r.run_id, r.created_utc, r.label, r.preset,
                      SUM(t.status = 'done') AS done, SUM(t.status = 'failed') AS failed, r.manifest
               FROM runs r LEFT JOIN tasks t ON t.run_id = r.run_id
               GROUP BY r.run_id ORDER BY r.created_utc, r.rowid"""
        df = pd.read_sql_query(q, self.con)
        df = df.fillna({"done": 0, "failed": 0}).astype({"done": int, "failed": int})
        kinds = self._kinds()
        df.insert(4, "kind", [kinds.get(r, "empty") for r in df.run_id])
        df["code"] = [_code(m) for m in df.pop("manifest")]
        return df

    def _kinds(self) -> dict[str, str]:
        """What each run holds: ``accuracy`` (finished sweep tasks), ``training`` (a training run's tasks
        or curves), ``timing`` (timings); runs with none of these are absent."""
        out: dict[str, str] = {}
        for (rid,) in self.con.execute("SELECT DISTINCT run_id FROM tasks WHERE status IN ('done', 'failed')"):
            out[rid] = "accuracy"  # finished tasks, even if every one failed (the report says why)
        for (rid,) in self.con.execute("SELECT DISTINCT run_id FROM curves UNION SELECT run_id FROM runs "
                                       "WHERE json_extract(manifest, '$.kind') = 'train'"):
            if rid in out or self.con.execute("SELECT 1 FROM curves WHERE run_id = ? LIMIT 1", (rid,)).fetchone():
                out[rid] = "training"
        for (rid,) in self.con.execute("SELECT DISTINCT run_id FROM timings"):
            out[rid] = "timing"
        return out

    def resolve(self, ref: str, kinds: Iterable[str] | None = None) -> str:
        """A run id from an exact id, a unique prefix, or ``latest``: the latest run of one of ``kinds``
        (:data:`RUN_KINDS`; all when None), i.e. the latest run the asking command can read.  An id that
        sbn-bench never writes (a path, control characters: an edited store) is refused, since ids name
        report folders and export files."""
        run_id = self._resolve(ref, kinds)
        if not isinstance(run_id, str) or not _STORED_ID.match(run_id) or ".." in run_id:
            raise self._damaged(f"run id {run_id!r} is not one sbn-bench writes (a path, or control characters)")
        return run_id

    def _damaged(self, what: str) -> InputError:
        """The one line for stored data that sbn-bench did not write (an edited or foreign-written store)."""
        return InputError(f"results database {self.path!r} holds damaged data: {what} (edited by hand or by "
                          f"another program?)")

    def _checked(self, df: pd.DataFrame, what: str, text=(), numbers=(), ints=()) -> pd.DataFrame:
        """``df`` read from table ``what`` with its ``text`` columns non-empty strings, its ``numbers`` floats
        (NULL is NaN) and its ``ints`` integers; anything else is :meth:`_damaged` (one line)."""
        for col in text:
            if not all(isinstance(v, str) for v in df[col]):
                raise self._damaged(f"{what}.{col} holds a missing or non-text value")
        for col in (*numbers, *ints):
            try:
                values = pd.to_numeric(df[col], errors="raise").astype(float)
            except (TypeError, ValueError):
                raise self._damaged(f"{what}.{col} holds a non-numeric value") from None
            if col in ints:
                if values.isna().any() or not values.map(float.is_integer).all():
                    raise self._damaged(f"{what}.{col} holds a missing or non-integer value")
                values = values.astype("int64")
            df[col] = values
        return df

    def _resolve(self, ref: str, kinds: Iterable[str] | None = None) -> str:
        ids = [r[0] for r in self.con.execute("SELECT run_id FROM runs ORDER BY created_utc, rowid")]
        if not isinstance(ref, str) or not ref.strip():
            raise InputError("name a run: an id, a unique prefix of one, or 'latest' (see 'sbn-bench runs')")
        if ref == "latest":
            if not ids:
                raise InputError(f"results database {self.path!r} holds no runs")
            if kinds is None:
                return ids[-1]
            kinds = tuple(kinds)
            have = self._kinds()
            fit = [i for i in ids if have.get(i) in kinds]
            if not fit:
                raise InputError(f"results database {self.path!r} holds no {' or '.join(kinds)} run with results "
                                 f"(see 'sbn-bench runs')")
            return fit[-1]
        if ref in ids:
            return ref
        matches = [i for i in ids if i.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise InputError(f"unknown run {ref!r} in {self.path!r} (see 'sbn-bench runs')")
        raise InputError(f"run prefix {ref!r} is ambiguous: {', '.join(matches[:5])}")

    # ---- tasks ---------------------------------------------------------------------------------
    def done_keys(self, run_id: str) -> set[str]:
        rows = self.con.execute("SELECT task_key FROM tasks WHERE run_id = ? AND status = 'done'", (run_id,))
        return {r[0] for r in rows}

    def write_task(self, run_id: str, task: dict, scores: Iterable[dict] = (), moments: dict | None = None,
                   curves: Iterable[dict] = ()) -> None:
        """Commit one task's row, score rows, moments and curve rows in a single transaction (replacing a failed try)."""
        key = task["task_key"]
        cur = self.con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for table in ("scores", "moments", "curves"):
                cur.execute(f"DELETE FROM {table} WHERE run_id = ? AND task_key = ?", (run_id, key))
            cols = TASK_COLUMNS + ["spec", "finished_utc"] + (["facts"] if self.version >= 2 else [])
            values = [task.get(c) for c in TASK_COLUMNS] + [json.dumps(task.get("spec", {}), sort_keys=True), _utc()]
            if self.version >= 2:
                values.append(json.dumps(task.get("facts") or {}, sort_keys=True, default=str))
            cur.execute(
                f"INSERT OR REPLACE INTO tasks (run_id, {', '.join(cols)}) VALUES ({', '.join('?' * (len(cols) + 1))})",
                [run_id] + values,
            )
            cur.executemany(
                "INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, key, s["problem"], s["estimator"], s["group"], s["metric"], int(s["M"]),
                  _num(s["value"]), _num(s.get("lo")), _num(s.get("hi"))) for s in scores],
            )
            cur.executemany(
                "INSERT INTO curves VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(run_id, key, c["problem"], c["estimator"], int(c["epoch"]), c["metric"], _num(c["value"]))
                 for c in curves],
            )
            for grp, (n, mean, m2) in (moments or {}).items():
                cur.execute(
                    "INSERT INTO moments VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, key, grp, int(n), np.asarray(mean, np.float64).tobytes(), np.asarray(m2, np.float64).tobytes()),
                )
            cur.execute("COMMIT")
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, sqlite3.Error):  # the CLI's line says what was lost
                exc.add_note("the task being written was rolled back")
            raise

    def supersede(self, run_id: str, keep: set[str]) -> int:
        """Mark this run's finished tasks whose keys are not in ``keep`` as ``superseded`` (made by other
        code or from other problem content); their rows stay in the store, hidden from reports and
        ``show``.  A task planned again (``keep`` holds its key) is restored.  Returns how many are
        superseded now."""
        cur = self.con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            kept = json.dumps(sorted(keep))  # one set-based UPDATE each way (json_each: SQLite's JSON1)
            cur.execute("UPDATE tasks SET status = 'superseded', error = status || '|' || COALESCE(error, '') "
                        "WHERE run_id = ? AND status IN ('done', 'failed') "
                        "AND task_key NOT IN (SELECT value FROM json_each(?))", (run_id, kept))
            # restored: the status and error kept as 'status|error' (or 'status' alone, as stores before it wrote)
            cur.execute("UPDATE tasks SET status = CASE WHEN instr(error, '|') > 0 THEN substr(error, 1, "
                        "instr(error, '|') - 1) ELSE error END, error = CASE WHEN instr(error, '|') > 0 THEN "
                        "substr(error, instr(error, '|') + 1) ELSE '' END "
                        "WHERE run_id = ? AND status = 'superseded' AND task_key IN (SELECT value FROM json_each(?))",
                        (run_id, kept))
            n = cur.execute("SELECT COUNT(*) FROM tasks WHERE run_id = ? AND status = 'superseded'",
                            (run_id,)).fetchone()[0]
            cur.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return n

    def moments(self, run_id: str, task_key: str) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
        rows = self.con.execute("SELECT grp, n, mean, m2 FROM moments WHERE run_id = ? AND task_key = ?", (run_id, task_key))
        return {g: (n, np.frombuffer(m, np.float64), np.frombuffer(v, np.float64)) for g, n, m, v in rows}

    def add_timings(self, run_id: str, rows: Iterable[dict]) -> None:
        rows = list(rows)
        with self.con:
            self.con.execute("BEGIN IMMEDIATE")
            self.con.executemany(
                f"INSERT INTO timings VALUES ({', '.join('?' * (len(TIMING_COLUMNS) + 2))})",
                [[run_id] + [_cell(r.get(c)) for c in TIMING_COLUMNS] + [json.dumps(r.get("extra", {}), default=str)]
                 for r in rows],
            )

    # ---- reading -------------------------------------------------------------------------------
    def tasks(self, run_id: str) -> pd.DataFrame:
        """One row per task; ``estimator_options`` (canonical JSON of every option) and
        ``estimator_origin`` come from the stored task spec (rows written before they were recorded:
        options rebuilt from the stored spec by the registry, origin empty)."""
        facts = "facts" if self.version >= 2 else "NULL AS facts"
        df = pd.read_sql_query(
            f"SELECT {', '.join(TASK_COLUMNS)}, spec, {facts} FROM tasks WHERE run_id = ? AND status NOT IN ('claimed', 'superseded') "
            "ORDER BY rowid", self.con,
            params=(run_id,)
        )
        df = self._checked(df, "tasks", text=("task_key", "problem", "estimator", "status"), ints=("draws",),
                           numbers=("seconds", "seconds_per_draw", "layer_evals", "head_evals", "backward_passes",
                                    "loss_evals_per_draw"))
        df["unbiased"] = df["unbiased"].astype(bool)
        df["error"] = df["error"].fillna("").astype(str)
        specs = [self._json(x, "tasks.spec") for x in df.pop("spec")]
        df["estimator_options"] = [options_json(sp["estimator_options"]) if "estimator_options" in sp
                                   else _legacy_options(est) for sp, est in zip(specs, df["estimator"])]
        df["estimator_origin"] = [sp.get("estimator_origin", "") for sp in specs]
        df["facts"] = [self._json(x, "tasks.facts") for x in df["facts"]]
        return df

    def _json(self, text, what: str) -> dict:
        """A stored JSON object (empty or NULL: ``{}``); anything else is :meth:`_damaged`."""
        if text is None or text == "" or (isinstance(text, float) and text != text):  # NULL (NaN in a float column)
            return {}
        try:
            value = json.loads(text)
        except (TypeError, ValueError):
            value = None
        if not isinstance(value, dict):
            raise self._damaged(f"{what} holds a value that is not a JSON object")
        return value

    def scores(self, run_id: str) -> pd.DataFrame:
        df = pd.read_sql_query(
            "SELECT task_key, problem, estimator, grp AS 'group', metric, M, value, lo, hi FROM scores "
            f"WHERE run_id = ? AND task_key NOT IN ({_SUPERSEDED}) ORDER BY rowid", self.con, params=(run_id, run_id)
        )
        return self._checked(df, "scores", text=("task_key", "problem", "estimator", "group", "metric"), ints=("M",),
                             numbers=("value", "lo", "hi"))

    def curves(self, run_id: str) -> pd.DataFrame:
        df = pd.read_sql_query(
            "SELECT task_key, problem, estimator, epoch, metric, value FROM curves WHERE run_id = ? "
            f"AND task_key NOT IN ({_SUPERSEDED}) ORDER BY rowid", self.con, params=(run_id, run_id),
        )
        return self._checked(df, "curves", text=("task_key", "problem", "estimator", "metric"), ints=("epoch",),
                             numbers=("value",))

    def timings(self, run_id: str) -> pd.DataFrame:
        df = pd.read_sql_query(
            f"SELECT {', '.join(TIMING_COLUMNS)} FROM timings WHERE run_id = ? ORDER BY rowid", self.con, params=(run_id,)
        )
        return self._checked(df, "timings", text=("kernel", "variant", "device"),
                             numbers=("items_per_s", "median_s", "iqr_s", "ratio", "pct_peak"))

    def load_run(self, ref: str):
        """Everything a report needs, as :class:`reports.results.RunResults` (``latest``: the latest run
        that holds results of any kind)."""
        run_id = self.resolve(ref, RUN_KINDS)
        manifest = self.manifest(run_id)
        manifest["run_id"] = run_id  # the stored id (timing runs and older runs do not repeat it in the manifest)
        return RunResults(manifest=manifest, tasks=self.tasks(run_id), scores=self.scores(run_id),
                          timings=self.timings(run_id), curves=self.curves(run_id))


_HOST = socket.gethostname()
#: a claim by a process on another host is void when its heartbeat (:meth:`Store.heartbeat`, every
#: :data:`HEARTBEAT_S`) is older than this: that process died, or its machine did
CLAIM_TTL_S = 10 * 60
HEARTBEAT_S = 60.0


def _code(manifest: str) -> str:
    """``version@commit[+dirty]`` from a run's manifest (what made the run)."""
    try:
        m = json.loads(manifest)
    except (TypeError, ValueError):
        return ""
    if not isinstance(m, dict):
        return ""
    commit = str(m.get("git_commit") or "unknown")
    return f"{m.get('package_version', '?')}@{commit[:10]}{'+dirty' if m.get('git_dirty') else ''}"


def _start_time(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or ``""`` where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()  # field 22; the name may hold spaces
    except (OSError, IndexError, UnicodeDecodeError):
        return ""


def _owner() -> str:
    """This process as a claim's owner: ``host:pid:start`` (read from ``/proc`` once per process)."""
    return _owner_of(os.getpid())


@functools.lru_cache(maxsize=None)
def _owner_of(pid: int) -> str:
    return f"{_HOST}:{pid}:{_start_time(pid)}"


def _claim_void(owner: str | None, when: str | None) -> bool:
    """Whether a claim no longer holds: its process is gone or its id now names another process (same
    host: the start time differs), or it is too old (another host)."""
    if not owner:  # a claim that names no process: nothing can hold it
        return True
    parts = owner.split(":")
    host, pid, start = (parts + [""])[:3] if len(parts) in (2, 3) else ("", "", "")
    if host == _HOST and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        now = _start_time(int(pid))
        return not start or (bool(now) and now != start)  # an old-style claim or a reused id: its process is gone
    try:
        age = (datetime.datetime.now(datetime.timezone.utc) - datetime.datetime.fromisoformat(when)).total_seconds()
    except (TypeError, ValueError):
        return True
    return abs(age) > CLAIM_TTL_S  # a heartbeat from the future (a skewed clock) does not hold a task for ever


def _legacy_options(spec: str) -> str:
    """Every option of a task stored before options were recorded (parsed once, here, at load)."""
    try:
        return options_json(registry.get(spec).options())
    except InputError:  # an estimator this version no longer has: the options as written
        return options_json(parse(spec).options)


def _num(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if np.isnan(v) else v


def _cell(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v
