"""Sweeps: flags and TOML, resume, kill -9, executors (process pool, Dask on loopback), bad input."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from bench.cli import main
from bench.store import Store

SMALL = ["--problem", "random:widths=2-3-3,points=6,seed=1", "--problem", "toy-liu3",
         "--estimators", "reinforce,arm,concrete:tau=0.5", "--draws", "400", "--grid", "1,10,100", "--no-report"]


def _numbers(scores: pd.DataFrame) -> pd.Series:
    """Score values in a canonical order, without the wall-clock-dependent metric."""
    df = scores[scores.metric != "var_x_seconds"].sort_values(["task_key", "group", "metric", "M"])
    return df.value.reset_index(drop=True)


def _scores(db, run="latest"):
    with Store(db) as s:
        res = s.load_run(run)
    return res


def test_run_resume_and_show(tmp_path, capsys):
    db = str(tmp_path / "r.sqlite")
    assert main(["run", *SMALL, "--db", db]) == 0
    out = capsys.readouterr().out
    assert "6 tasks, 0 already stored, 6 computed" in out
    res = _scores(db)
    assert (res.tasks.status == "done").all() and len(res.tasks) == 6
    assert set(res.scores.group) == {"layer0", "layer1", "head", "all"}
    assert set(res.scores[res.scores.M > 0].M) == {1, 10, 100}
    assert res.manifest["config"]["draws"] == 400 and res.manifest["root_seed"] == 0
    assert main(["run", *SMALL, "--db", db]) == 0
    assert "6 already stored, 0 computed" in capsys.readouterr().out
    assert main(["show", "latest", "--db", db, "--metric", "rel_rmse", "--M", "10"]) == 0
    assert "reinforce" in capsys.readouterr().out
    assert main(["runs", "--db", db]) == 0
    assert main(["export", "latest", "--db", db, "--out", str(tmp_path / "x"), "--format", "json"]) == 0
    exported = pd.read_json(next(p for p in (tmp_path / "x").iterdir() if p.name.endswith("scores.json")))
    assert len(exported) == len(res.scores)


def test_toml_config_and_seeds_are_reproducible(tmp_path, capsys):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('problems = ["toy-arm4"]\nestimators = ["reinforce", "arm"]\ndraws = 300\ngrid = [1, 10]\nseed = 7\n')
    a, b = str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")
    assert main(["run", "--config", str(cfg), "--db", a, "--no-report"]) == 0
    assert main(["run", "--config", str(cfg), "--db", b, "--no-report"]) == 0
    sa, sb = _numbers(_scores(a).scores), _numbers(_scores(b).scores)
    pd.testing.assert_series_equal(sa, sb)
    assert _scores(a).manifest["run_id"].startswith("sweep-")


@pytest.mark.parametrize("argv, msg", [
    (["--preset", "nope"], "invalid choice"),
    (["--estimators", "frob"], "unknown estimator 'frob'"),
    (["--estimators", "concrete:tau=oops"], "must be a finite number > 0"),
    (["--problem", "nope"], "unknown problem"),
    (["--draws", "0"], "draws (N) must be a positive integer"),
    (["--draws", "10", "--grid", "1,20"], "M = 20 exceeds the number of draws N = 10"),
    (["--grid", "0,1"], "must be positive"),
    (["--reference", "exact", "--problem", "random:widths=2-14-14"], "needs about"),  # auto would use Monte Carlo
    (["--reference", "bogus"], "invalid choice"),
    (["--problem-file", "missing.npz"], "does not exist"),
])
def test_bad_input_exit_2_and_nothing_written(tmp_path, capsys, argv, msg):
    db = tmp_path / "r.sqlite"
    try:
        default = [] if "--estimators" in argv else ["--estimators", "reinforce"]  # a flag given twice is refused
        code = main(["run", "--db", str(db), "--no-report", *default, *argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1
    assert not db.exists()


def test_malformed_toml_reports_the_line(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('problems = ["toy-arm4"]\ndraws = = 3\n')
    assert main(["run", "--config", str(cfg), "--db", str(tmp_path / "r.sqlite")]) == 2
    assert "line 2" in capsys.readouterr().err
    cfg.write_text('problemz = ["toy-arm4"]\n')
    assert main(["run", "--config", str(cfg), "--db", str(tmp_path / "r.sqlite")]) == 2
    assert "unknown key 'problemz'" in capsys.readouterr().err


def test_corrupt_store_is_refused_by_run(tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    db.write_bytes(b"garbage" * 1000)
    assert main(["run", *SMALL, "--db", str(db)]) == 2
    assert db.read_bytes() == b"garbage" * 1000


def test_kill_9_loses_no_completed_task_and_rerun_resumes(tmp_path):
    db = tmp_path / "k.sqlite"
    argv = [sys.executable, "-m", "bench", "run", "--db", str(db), "--no-report", "--estimators", "reinforce,arm",
            "--draws", "3000", "--grid", "1,100"]
    for seed in range(4):
        argv += ["--problem", f"random:widths=3-5-5-5,points=40,seed={seed}"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
                done = con.execute("SELECT COUNT(*) FROM tasks WHERE status='done'").fetchone()[0]
                con.close()
            except sqlite3.OperationalError:
                continue
        if done >= 2:
            break
    assert proc.poll() is None, "the sweep finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    per_task = con.execute("SELECT t.task_key, COUNT(s.metric) FROM tasks t JOIN scores s USING (run_id, task_key) "
                           "GROUP BY t.task_key").fetchall()
    stored = len(per_task)
    con.close()
    assert 2 <= stored < 8
    assert len({n for _, n in per_task}) == 1  # every stored task has all its rows
    out = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    assert f"8 tasks, {stored} already stored, {8 - stored} computed" in out.stdout


def _dask_cluster():
    distributed = pytest.importorskip("distributed")
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                                    dashboard_address=":0")


def test_process_pool_and_dask_give_the_same_numbers(tmp_path, capsys):
    ref = str(tmp_path / "ref.sqlite")
    assert main(["run", *SMALL, "--db", ref]) == 0
    expected = _numbers(_scores(ref).scores)
    pool = str(tmp_path / "pool.sqlite")
    assert main(["run", *SMALL, "--db", pool, "--executor", "process", "--workers", "2"]) == 0
    pd.testing.assert_series_equal(_numbers(_scores(pool).scores), expected)
    with _dask_cluster() as cluster:
        dsk = str(tmp_path / "dask.sqlite")
        assert main(["run", *SMALL, "--db", dsk, "--executor", "dask", "--scheduler", cluster.scheduler_address]) == 0
    pd.testing.assert_series_equal(_numbers(_scores(dsk).scores), expected)


def test_unreachable_dask_scheduler_is_one_line(tmp_path, capsys):
    code = main(["run", *SMALL, "--db", str(tmp_path / "r.sqlite"), "--executor", "dask",
                 "--scheduler", "tcp://127.0.0.1:1"])
    assert code == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused before the store was created


def test_dask_local_cluster_executor(tmp_path, capsys):
    """``--executor dask-local`` starts its own loopback LocalCluster of worker processes."""
    pytest.importorskip("distributed")
    db = str(tmp_path / "dl.sqlite")
    argv = ["run", "--problem", "toy-arm4", "--estimators", "reinforce,arm", "--draws", "300", "--grid", "1,10",
            "--no-report", "--db", db]
    assert main([*argv, "--executor", "dask-local", "--workers", "2"]) == 0
    ref = str(tmp_path / "ref.sqlite")
    argv[-1] = ref
    assert main(argv) == 0
    pd.testing.assert_series_equal(_numbers(_scores(db).scores), _numbers(_scores(ref).scores))


def test_inprocess_tasks_report_draw_progress(tmp_path, monkeypatch):
    """In-process tasks drive a progress bar over their draws (tqdm on stderr; silent in non-terminals)."""
    import bench.sweep as sweep

    seen = []

    class Recorder:
        def __init__(self, total, desc, unit="task"):
            self.total, self.unit, self.n = total, unit, 0
            seen.append(self)

        def update(self, k=1):
            self.n += k

        def close(self):
            pass

    monkeypatch.setattr(sweep, "_progress", Recorder)
    db = str(tmp_path / "p.sqlite")
    assert main(["run", "--problem", "toy-arm4", "--estimators", "reinforce", "--draws", "300", "--chunk", "64",
                 "--grid", "1", "--no-report", "--db", db]) == 0
    draws = [r for r in seen if r.unit == "draw"]
    assert len(draws) == 1 and draws[0].n == draws[0].total == 300
    assert any(r.unit == "task" and r.n == 1 for r in seen)


def test_concurrent_runs_of_one_sweep_share_the_work(tmp_path):
    """Two processes run the same sweep on one store at once: every task is computed exactly once
    (each claims tasks in the store before computing them), and both finish with exit 0."""
    import re
    import subprocess
    import sys

    db = str(tmp_path / "shared.sqlite")
    argv = [sys.executable, "-m", "bench", "run", "--problem", "random:widths=2-3-3,points=4,seed=1",
            "--problem", "random:widths=2-3-3,points=4,seed=2", "--estimators", "st,psa,reinforce,arm,tanh,concrete",
            "-N", "4000", "--db", db, "--no-report"]
    procs = [subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    import time

    from bench.store import Store

    while all(p.poll() is None for p in procs):  # round seven: the first to finish exited while the other computed
        time.sleep(0.05)
    with Store(db) as st:
        first_done = st.load_run("latest").tasks
    assert len(first_done) == 12 and set(first_done["status"]) == {"done"}, "a run exited before the sweep was done"
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-500:] for _, e in outs]
    computed = [int(re.search(r"(\d+) computed", o).group(1)) for o, _ in outs]
    assert sum(computed) == 12, outs
    with Store(db) as st:
        tasks = st.load_run("latest").tasks
    assert len(tasks) == 12 and set(tasks["status"]) == {"done"}


def test_results_are_keyed_by_content_not_by_file_name(tmp_path, capsys):
    """Overwriting a problem file with other weights recomputes; the old scores are kept but hidden."""
    f = str(tmp_path / "p.npz")
    db = str(tmp_path / "r.sqlite")
    args = ["run", "--problem-file", f, "--estimators", "arm", "--draws", "200", "--grid", "1,10", "--no-report",
            "--db", db]
    assert main(["problem", "random:widths=2-3-3,points=4,seed=1", "--save", f]) == 0
    assert main(args) == 0
    assert "1 tasks, 0 already stored, 1 computed" in capsys.readouterr().out
    first = _scores(db)
    assert main(["problem", "random:widths=2-3-3,points=4,seed=2", "--save", f, "--force"]) == 0  # same name, other weights
    assert main(args) == 0
    cap = capsys.readouterr()
    assert "1 tasks, 0 already stored, 1 computed" in cap.out
    assert "1 stored task(s) of this run were made by other" in cap.err
    second = _scores(db)
    assert len(second.tasks) == 1 and second.tasks.task_key.iloc[0] != first.tasks.task_key.iloc[0]
    assert set(second.scores.task_key) == set(second.tasks.task_key)  # the old problem's scores are hidden
    assert not _numbers(second.scores).equals(_numbers(first.scores))
    with sqlite3.connect(db) as con:  # ... but not deleted
        assert con.execute("SELECT COUNT(*) FROM tasks WHERE status = 'superseded'").fetchone()[0] == 1
    assert main(["problem", "random:widths=2-3-3,points=4,seed=1", "--save", f, "--force"]) == 0  # back to the first content
    assert main(args) == 0
    assert "1 tasks, 1 already stored, 0 computed" in capsys.readouterr().out  # restored, not recomputed
    assert _numbers(_scores(db).scores).equals(_numbers(first.scores))


def test_changed_estimator_code_recomputes_with_the_same_random_stream(tmp_path, capsys, monkeypatch):
    """A new code identity is a new task key (recomputed), but the seed is the same: an unchanged
    estimator gives identical numbers."""
    from estimators import plugins, registry
    db = str(tmp_path / "r.sqlite")
    args = ["run", "--problem", "toy-liu3", "--estimators", "arm", "--draws", "200", "--grid", "1,10", "--no-report",
            "--db", db]
    assert main(args) == 0
    capsys.readouterr()
    first = _scores(db)
    registry.origin("arm")  # discovered; now as if the estimators' source had changed:
    monkeypatch.setitem(registry._ORIGINS, "arm", plugins.Origin("builtin", "sbn-bench", "0.1.0+src.0123456789ab"))
    assert main(args) == 0
    assert "1 tasks, 0 already stored, 1 computed" in capsys.readouterr().out
    second = _scores(db)
    assert "src.0123456789ab" in second.tasks.estimator_origin.iloc[0]
    assert second.tasks.seed.iloc[0] == first.tasks.seed.iloc[0]
    assert _numbers(second.scores).equals(_numbers(first.scores))


def test_a_problem_changed_between_planning_and_running_fails_its_task(tmp_path):
    from bench.config import SweepConfig
    from bench.tasks import plan_tasks, run_task
    from reference.problems import build_problem
    f = str(tmp_path / "p.npz")
    assert main(["problem", "random:widths=2-3,points=4,seed=1", "--save", f]) == 0
    cfg = SweepConfig(problems=(f,), estimators=("arm",), draws=50)
    tasks, _ = plan_tasks(cfg, {f: build_problem(f)}, ["arm"])
    assert main(["problem", "random:widths=2-3,points=4,seed=2", "--save", f, "--force"]) == 0
    row = run_task(tasks[0])["task"]
    assert row["status"] == "failed" and "changed after the sweep was planned" in row["error"]


def test_a_claim_whose_process_id_was_reused_or_ended_is_void():
    """Round seven: a claim naming a live but unrelated process (a reused id) held its task for ever."""
    import subprocess

    from bench import store

    me = store._owner()
    host, pid, start = me.split(":")
    assert not store._claim_void(me, None)
    assert store._claim_void(f"{host}:{pid}:{int(start) + 1}", None)  # the id now names another process
    assert store._claim_void(f"{host}:{pid}", None)  # an old-style claim of a live id: cannot tell, void
    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    assert store._claim_void(f"{host}:{child.pid}:{start}", None)  # the process is gone


def test_a_run_waits_for_a_task_another_run_holds_and_takes_it_over_when_that_run_dies(tmp_path, capsys):
    """The task is claimed by a live process (a stand-in for another run of the sweep); the run computes what
    it can, waits, and computes the held task itself once that process ends."""
    import subprocess
    import threading

    from bench import store as store_mod
    from bench.cli import main
    from bench.store import Store

    db = str(tmp_path / "w.sqlite")
    argv = ["run", "--problem", "random:widths=2-3,points=4", "--estimators", "st,psa", "-N", "40", "--no-report",
            "--cost-time", "0", "--db", db]
    assert main(argv) == 0  # creates the run: both tasks done
    with Store(db) as st:
        run_id = st.resolve("latest")
        key = st.load_run(run_id).tasks.task_key.iloc[0]
        st.con.execute("DELETE FROM scores WHERE task_key = ?", (key,))
        other = subprocess.Popen(["sleep", "2"])
        owner = f"{store_mod._HOST}:{other.pid}:{store_mod._start_time(other.pid)}"
        st.con.execute("UPDATE tasks SET status = 'claimed', error = ? WHERE task_key = ?", (owner, key))
    capsys.readouterr()
    threading.Thread(target=other.wait, daemon=True).start()  # reaped when it ends, so its id is gone
    assert main(argv) == 0
    cap = capsys.readouterr()
    assert "waiting for 1 task(s) another run of this sweep is computing" in cap.err
    assert "2 tasks, 1 already stored, 1 computed" in cap.out  # taken over here, after the holder ended
    with Store(db) as st:
        assert set(st.load_run(run_id).tasks.status) == {"done"}


def test_claims_from_another_host_live_on_their_heartbeat(tmp_path, monkeypatch):
    """A claim from another host is void once its heartbeat is older than CLAIM_TTL_S (it was 12 hours with no
    heartbeat: a crashed machine's tasks made every other run wait, or skip them, for half a day); a claim naming
    no owner is void; this process's heartbeat renews its own claims."""
    import datetime

    from bench import store as store_mod
    from bench.store import Store

    now = datetime.datetime.now(datetime.timezone.utc)
    fresh, stale = (now - datetime.timedelta(seconds=s) for s in (30, store_mod.CLAIM_TTL_S + 30))
    assert not store_mod._claim_void("elsewhere:123:456", fresh.isoformat())
    assert store_mod._claim_void("elsewhere:123:456", stale.isoformat())
    assert store_mod._claim_void("", fresh.isoformat()) and store_mod._claim_void(None, fresh.isoformat())
    with Store(str(tmp_path / "h.sqlite"), create=True) as st:
        st.create_run("r", {"run_id": "r"}, "h")
        assert st.claim("r", "k1", "p", "e")
        st.con.execute("UPDATE tasks SET finished_utc = ?", (stale.isoformat(),))
        assert st.heartbeat("r") == 1
        when = st.con.execute("SELECT finished_utc FROM tasks").fetchone()[0]
        assert datetime.datetime.fromisoformat(when) > fresh
