"""Results store: round trip, one transaction per task, refusal of corrupt or foreign databases."""

from __future__ import annotations

import sqlite3

import pytest

from bench.store import APPLICATION_ID, SCHEMA_VERSION, Store
from estimators.errors import InputError


def _task(key, status="done"):
    return dict(task_key=key, problem="p", estimator="e", estimator_name="e", unbiased=True, device="cpu",
                dtype="float64", draws=10, seed=1, status=status, error="", seconds=0.1, seconds_per_draw=0.01,
                layer_evals=3, head_evals=1, backward_passes=1, loss_evals_per_draw=1, spec={"x": 1})


def _score(key, metric="rel_rmse", M=1, value=0.5):
    return dict(task_key=key, problem="p", estimator="e", group="layer0", metric=metric, M=M, value=value, lo=0.4, hi=0.6)


def test_round_trip(tmp_path):
    db = tmp_path / "r.sqlite"
    with Store(db, create=True) as s:
        s.create_run("run-a", {"git_commit": "abc"}, "h1", preset="quick")
        s.write_task("run-a", _task("k1"), [_score("k1"), _score("k1", "trace_var", 0, 2.0)], {"layer0": (10, [1.0, 2.0], [0.5, 0.5])})
        s.add_timings("run-a", [dict(kernel="psa-fc", variant="ratio", device="cpu", dtype="float32", shape="256x512x512",
                                    unit="terms", items_per_s=1e9, median_s=0.01, iqr_s=0.001, ratio=3.0,
                                    ratio_to="gemm", pct_peak=float("nan"), peak_kind="")])
    with Store(db) as s:
        assert s.resolve("latest") == "run-a" and s.resolve("run") == "run-a"
        res = s.load_run("run-a")
        assert res.manifest["git_commit"] == "abc"
        assert list(res.tasks.task_key) == ["k1"] and bool(res.tasks.unbiased.iloc[0])
        assert len(res.scores) == 2 and res.scores.M.tolist() == [1, 0]
        assert res.timings.kernel.tolist() == ["psa-fc"]
        n, mean, m2 = s.moments("run-a", "k1")["layer0"]
        assert n == 10 and mean.tolist() == [1.0, 2.0]
        assert s.done_keys("run-a") == {"k1"}


def test_a_failing_write_leaves_no_partial_rows(tmp_path):
    db = tmp_path / "r.sqlite"
    with Store(db, create=True) as s:
        s.create_run("r", {}, "h")
        bad = [_score("k1"), {"problem": "p"}]  # second row is malformed: KeyError mid-transaction
        with pytest.raises(KeyError):
            s.write_task("r", _task("k1"), bad)
        assert s.done_keys("r") == set()
        assert s.con.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 0
        s.write_task("r", _task("k1", "failed"), [])
        s.write_task("r", _task("k1"), [_score("k1")])  # a retry replaces the failed attempt
        assert s.tasks("r").status.tolist() == ["done"]


def test_unknown_and_ambiguous_runs(tmp_path):
    db = tmp_path / "r.sqlite"
    with Store(db, create=True) as s:
        s.create_run("quick-1", {}, "h")
        s.create_run("quick-2", {}, "h2")
        with pytest.raises(InputError, match="unknown run 'zzz'"):
            s.resolve("zzz")
        with pytest.raises(InputError, match="ambiguous"):
            s.resolve("quick")
    with pytest.raises(InputError, match="does not exist"):
        Store(tmp_path / "missing.sqlite")


def test_corrupt_file_is_refused_and_left_untouched(tmp_path):
    db = tmp_path / "junk.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    before = db.read_bytes()
    with pytest.raises(InputError, match="not a readable sbn-bench results database"):
        Store(db, create=True)
    assert db.read_bytes() == before


def test_other_schema_version_is_refused_and_left_untouched(tmp_path):
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE runs (x)")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.execute(f"PRAGMA application_id = {APPLICATION_ID}")  # a store of a later sbn-bench
    con.commit()
    con.close()
    before = db.read_bytes()
    with pytest.raises(InputError, match="schema version"):
        Store(db, create=True)
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.sqlite"]  # no -wal / -shm beside it


def _as_version_1(db):
    """Turn a store into one made by the version-1 schema (no ``tasks.facts`` column)."""
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE tasks DROP COLUMN facts")
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()


def test_a_version_1_store_is_upgraded_in_place_and_keeps_its_results(tmp_path):
    db = tmp_path / "v1.sqlite"
    with Store(db, create=True) as s:
        s.create_run("run-a", {}, "h1")
        s.write_task("run-a", _task("k1"), [_score("k1")])
    _as_version_1(db)
    with Store(db) as s:
        assert s.version == SCHEMA_VERSION == 2
        assert s.tasks("run-a")["facts"].tolist() == [{}]  # the old row, no measured facts
        s.write_task("run-a", dict(_task("k2"), facts={"cost": {"median_s": 0.5}}), [_score("k2")])
        assert s.tasks("run-a")["facts"].tolist() == [{}, {"cost": {"median_s": 0.5}}]
        assert len(s.scores("run-a")) == 2
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_a_version_1_store_that_cannot_be_written_is_read_as_it_is(tmp_path, monkeypatch):
    db = tmp_path / "v1.sqlite"
    with Store(db, create=True) as s:
        s.create_run("run-a", {}, "h1")
        s.write_task("run-a", _task("k1"), [_score("k1")])
    _as_version_1(db)
    import bench.store as store_mod
    monkeypatch.setattr(store_mod.os, "access", lambda path, mode: False)  # as if read-only (root ignores chmod)
    with Store(db) as s:
        assert s.version == 1 and s.tasks("run-a")["facts"].tolist() == [{}]
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 1  # not upgraded
    con.close()


def test_a_foreign_database_is_named_foreign_and_left_untouched(tmp_path):
    db = tmp_path / "other.sqlite"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("CREATE TABLE things (x)")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # the same number means nothing
    con.commit()
    con.close()
    before = db.read_bytes()
    with pytest.raises(InputError, match="not an sbn-bench results store"):
        Store(db, create=True)
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]


_CREATE = """
import os, sys, time
from bench.store import Store
path, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go):  # every process has imported everything: they start together
    time.sleep(0.001)
Store(path, create=True).close()
"""


def test_concurrent_creation_of_one_store_is_atomic(tmp_path):
    """Four processes create the same new store at once: all succeed, one schema, no stray files."""
    import subprocess
    import sys
    import time

    path, go = str(tmp_path / "new.sqlite"), tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _CREATE, path, str(go)], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    time.sleep(3.0)
    go.write_text("")
    results = [(pr.returncode, err) for pr in procs for _, err in [pr.communicate(timeout=120)]]
    assert [rc for rc, _ in results] == [0] * 4, [err[-300:] for _, err in results]
    go.unlink()
    with Store(path) as st:
        assert st.runs().empty
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == ["new.sqlite"]


def test_a_read_only_store_is_refused_for_writing_and_left_untouched(tmp_path, monkeypatch, capsys):
    """As root, chmod does not make a file read-only, so the permission check is simulated: a run
    refuses the store with one line before computing anything; reading commands still work."""
    from bench.cli import main
    db = tmp_path / "r.sqlite"
    with Store(db, create=True) as s:
        s.create_run("run-a", {}, "h1")
        s.write_task("run-a", _task("k1"), [_score("k1")])
    before = db.read_bytes()
    import bench.store as store_mod
    real = store_mod.os.access
    monkeypatch.setattr(store_mod.os, "access", lambda p, mode: False if str(p) == str(db) else real(p, mode))
    assert main(["run", "--problem", "toy-liu3", "--estimators", "arm", "-N", "10", "--no-report", "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is read-only" in err[0]
    assert main(["runs", "--db", str(db)]) == 0 and "run-a" in capsys.readouterr().out
    assert db.read_bytes() == before


def test_supersede_hides_and_restores_tasks_with_their_status_and_error(tmp_path):
    db = tmp_path / "r.sqlite"
    with Store(db, create=True) as s:
        s.create_run("r", {}, "h")
        s.write_task("r", _task("k1"))
        s.write_task("r", dict(_task("k2", "failed"), error="ValueError: boom | at x.py:3"))
        s.write_task("r", _task("k3"))
        assert s.supersede("r", {"k3"}) == 2
        assert set(s.tasks("r").task_key) == {"k3"}
        assert s.supersede("r", {"k1", "k2", "k3"}) == 0
        t = s.tasks("r").set_index("task_key")
        assert t.loc["k1", "status"] == "done" and t.loc["k1", "error"] == ""
        assert t.loc["k2", "status"] == "failed" and t.loc["k2", "error"] == "ValueError: boom | at x.py:3"
        # a row superseded by an earlier version (error = the old status alone) is restored too
        s.con.execute("UPDATE tasks SET status = 'superseded', error = 'done' WHERE task_key = 'k1'")
        s.con.commit()
        assert s.supersede("r", {"k1", "k2", "k3"}) == 0 and s.tasks("r").set_index("task_key").loc["k1", "status"] == "done"
