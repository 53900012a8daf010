"""``latest`` means the latest run the command can read; training runs are shown and exported; the
README's train-then-score example works as written; ``runs`` says what made each run."""

from __future__ import annotations

import json
import os

import pandas as pd

from bench.cli import main
from bench.store import Store

SWEEP = ["run", "--problem", "toy-liu3", "--estimators", "arm", "-N", "100", "--grid", "1,10", "--no-report"]
TIMING = ["time", "--kernels", "sampling", "--net", "6-6-6", "--batch", "4", "--min-time", "0.005", "--rounds", "1"]
TRAIN = ["train", "--estimator", "st", "--problem", "psa2d", "--epochs", "2", "--checkpoint-epochs", "1,2",
         "--lr", "0.03", "--no-report"]


def test_latest_skips_runs_the_command_cannot_read(tmp_path, capsys):
    db = str(tmp_path / "r.sqlite")
    assert main([*SWEEP, "--db", db]) == 0
    sweep_id = Store(db).resolve("latest")
    assert main([*TIMING, "--db", db]) == 0
    capsys.readouterr()
    with Store(db) as s:
        runs = s.runs()
        timing_id = s.resolve("latest")
    assert runs.kind.tolist() == ["accuracy", "timing"] and timing_id != sweep_id
    assert runs.code.str.match(r"^\S+@\S+").all()  # version@commit of the code that made each run
    assert main(["show", "latest", "--db", db]) == 0  # the latest run with scores, not the timing run
    assert f"run {sweep_id}" in capsys.readouterr().out
    out = tmp_path / "x"
    assert main(["export", "latest", "--db", db, "--out", str(out)]) == 0  # the latest run: the timing run
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{timing_id}.manifest.json", f"{timing_id}.timings.csv"]  # no empty tables written
    assert main(["show", timing_id, "--db", db]) == 2
    assert "no scored tasks" in capsys.readouterr().err


def test_latest_on_a_store_with_only_an_empty_run_is_one_line(tmp_path, capsys):
    db = str(tmp_path / "r.sqlite")
    with Store(db, create=True) as s:
        s.create_run("r-1", {}, "h")
    assert main(["show", "latest", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "holds no accuracy or training run" in err and len(err.strip().splitlines()) == 1


def test_training_runs_are_shown_exported_and_their_checkpoints_scored_as_documented(tmp_path, capsys,
                                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*TRAIN, "--checkpoint-dir", "chk/", "--db", "r.sqlite"]) == 0
    out = capsys.readouterr().out
    assert os.path.exists("chk/chk-1.npz") and os.path.exists("chk/chk-2.npz")  # where the README says
    assert "chk/chk-2.npz" in out
    assert main(["show", "latest", "--db", "r.sqlite"]) == 0
    shown = capsys.readouterr().out
    assert "training" in shown and "st" in shown
    assert main(["export", "latest", "--db", "r.sqlite", "--out", "ex"]) == 0
    curves = pd.read_csv(next(p for p in (tmp_path / "ex").iterdir() if p.name.endswith(".curves.csv")))
    assert set(curves.epoch) >= {1, 2} and len(curves) > 4  # the per-epoch curves, not an empty file
    assert main(["run", "--problem-file", "chk/chk-2.npz", "--estimators", "psa,st", "-N", "50", "--grid", "1",
                 "--no-report", "--db", "r.sqlite"]) == 0
    owner = json.loads((tmp_path / "chk" / "checkpoints.json").read_text())
    assert owner["estimator"] == "st"


def test_a_checkpoint_folder_of_another_training_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*TRAIN, "--checkpoint-dir", "chk", "--db", "r.sqlite"]) == 0
    before = (tmp_path / "chk" / "chk-2.npz").read_bytes()
    capsys.readouterr()
    assert main([*TRAIN[:-3], "--lr", "0.01", "--no-report", "--checkpoint-dir", "chk", "--db", "r.sqlite"]) == 2
    assert "holds the checkpoints of another training" in capsys.readouterr().err
    assert (tmp_path / "chk" / "chk-2.npz").read_bytes() == before
    assert main([*TRAIN, "--checkpoint-dir", "chk", "--db", "r.sqlite"]) == 0  # the same training: resumes
