"""Checkpoint training of the psa2020 protocol (``docs/protocols.md#checkpoints``): the step is the
suite's REINFORCE on the sampled path, the update is the published recipe, the cache is versioned,
and the trained network learns."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from estimators import registry
from estimators.model import sample_path
from reference import checkpoints as C
from reference.exact import exact_loss
from reference.problems import build_problem

pytestmark = pytest.mark.usefixtures("one_thread")


def test_path_from_uniforms_is_the_sampled_path(make_gen):
    """The same uniforms give the same states as ``sample_path``, so REINFORCE's gradients agree exactly."""
    p = build_problem("psa-2-5-5-5").subset(slice(0, 10))
    ref = sample_path(p, 1, make_gen(3))
    mine = C.path_from_uniforms(p, [u[0] for u in ref.u])
    for a, b in zip(ref.x, mine.x):
        assert torch.equal(a, b)
    est = registry.get("reinforce")
    for g_ref, g in zip(est.from_path(p, ref), est.from_path(p, mine)):
        assert torch.equal(g_ref, g)


def test_first_step_is_sgd_with_the_published_learning_rate():
    """One epoch on 10 points is one step from zero velocity: theta - 0.03 * (REINFORCE draw on the stream's path)."""
    p = build_problem("psa-2-5-5-5").subset(slice(95, 105))  # both classes
    rng = np.random.default_rng(7)
    perm = torch.as_tensor(rng.permutation(10))
    batch = p.subset(perm)
    uniforms = [torch.from_numpy(rng.random((10, n))) for n in p.widths[1:]]
    g = registry.get("reinforce").from_path(batch, C.path_from_uniforms(batch, uniforms))
    trained = C.train_reinforce(p, epochs=1, seed=7)
    for before, after, grad in zip(p.group_params(), trained.group_params(), g):
        assert torch.allclose(after, before - C.LR * grad[0], rtol=0, atol=1e-15)
        assert not torch.equal(after, before)


def test_cache_key_carries_the_training_version(tmp_path):
    """Checkpoints of an older training (no version in the directory name) are never found."""
    old = tmp_path / "psa-2-5-5-5-00000000"
    path = C.checkpoint_path(str(tmp_path), "psa-2-5-5-5", 100)
    assert f"-v{C.TRAINING_VERSION}-" in path
    assert not path.startswith(str(old))
    assert C.checkpoint_path(str(tmp_path), "psa-2-5-5-5", 100, seed=1) != path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cache = str(tmp_path_factory.mktemp("chk"))
    try:
        C.ensure_checkpoints(cache, build_problem("psa-2-5-5-5"), "psa-2-5-5-5")
    finally:
        torch.set_num_threads(before)
    return cache


@pytest.mark.slow
def test_psa_checkpoints_learn(trained):
    """The published recipe learns: the exact expected loss at chk-2000 is well below log 2 = 0.693.

    The paper's network reaches about 0.41 (the issue's re-run of the authors' code: 0.411); a
    re-trained one has other random streams, so the threshold is 0.5 (0.09 of margin above 0.41, 0.19
    below log 2).  Trainings measured with this code: seed 0 stays on the plateau (0.694), seed 1
    reaches 0.469; the old training's chk-2000 was 0.6935, so this test fails on it.
    """
    net = build_problem("psa-2-5-5-5@chk-2000", cache_dir=trained)
    loss = float(exact_loss(net))
    assert loss < 0.5, loss
    first = float(exact_loss(build_problem("psa-2-5-5-5@chk-1", cache_dir=trained)))
    assert first > 0.69  # chk-1 is still near the start: the checkpoints are not all the end of training
    rec = C.training_record(trained, "psa-2-5-5-5")
    assert rec["checkpoints"]["2000"]["exact_loss"] == pytest.approx(loss, rel=1e-12)
    assert len(rec["curve"]["exact_loss"]) == 2001
    assert rec["tried"][-1]["seed"] == rec["seed"] and rec["tried"][-1]["final_exact_loss"] < C.LEFT_PLATEAU
    assert all(t["final_exact_loss"] >= C.LEFT_PLATEAU for t in rec["tried"][:-1])


@pytest.mark.slow
def test_checkpoint_facts_are_json_and_match_the_network(trained):
    facts = C.checkpoint_facts(trained, "psa-2-5-5-5@chk-100")
    json.dumps(facts)  # storable as the task's facts
    net = build_problem("psa-2-5-5-5@chk-100", cache_dir=trained)
    chk = facts["checkpoint"]
    assert chk["epoch"] == 100 and chk["training_version"] == C.TRAINING_VERSION
    assert chk["exact_loss"] == pytest.approx(float(exact_loss(net)), rel=1e-12)
    assert chk["weight_norms"]["layer1"]["weight"] == pytest.approx(float(net.weights[1].norm()), rel=1e-12)
    assert chk["weight_norms"]["head"]["max_abs_weight"] == pytest.approx(float(net.head_weight.abs().max()))
    assert len(facts["training"]["curve"]) == 101
    assert facts["training"]["curve"][-1] == pytest.approx(chk["exact_loss"], abs=1e-6)
    assert C.checkpoint_facts(trained, "psa-2-5-5-5") == {}
    assert os.path.exists(os.path.join(os.path.dirname(C.checkpoint_path(trained, "psa-2-5-5-5", 1)), "training.json"))
    assert not math.isnan(facts["training"]["curve"][0])
