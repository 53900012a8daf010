"""A sweep on a checkpoint problem stores the checkpoint's training facts with each task (``docs/protocols.md#checkpoints``)."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")


def test_checkpoint_tasks_store_training_facts(tmp_path):
    """toy-relax1 (one point, one unit) trains its 2000 epochs in seconds; its loss (about 0.25) is off the plateau."""
    db = str(tmp_path / "r.sqlite")
    args = ["run", "--problem", "toy-relax1@chk-100", "--problem", "toy-relax1", "--estimators", "st,reinforce",
            "--draws", "50", "--grid", "1,10", "--no-report", "--db", db]
    assert main(args) == 0
    with Store(db) as s:
        tasks = s.load_run("latest").tasks
    assert (tasks["status"] == "done").all() and len(tasks) == 4
    for problem, facts in zip(tasks["problem"], tasks["facts"]):
        if problem == "toy-relax1":
            assert "checkpoint" not in facts and "training" not in facts  # only what every task records
            continue
        json.dumps(facts)
        chk = facts["checkpoint"]
        assert chk["base"] == "toy-relax1" and chk["epoch"] == 100 and chk["seed"] == 0
        assert 0.0 < chk["exact_loss"] < 1.0 and set(chk["weight_norms"]) == {"layer0", "head"}
        curve = facts["training"]["curve"]
        assert len(curve) == 101 and curve[-1] == pytest.approx(chk["exact_loss"], abs=1e-6)
