"""``sbn-bench train``: augmentation, metrics, learning-rate search, the training loop, the CLI and its store rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench.training.augment import flip_crop
from bench.cli import main
from bench.training.lr_search import PENALTY, search_lr
from bench.store import Store
from bench.training.metrics import batch_sums, ensemble_accuracy, evaluate, with_data
from bench.training.setups import build_train_problem
from bench.training.loop import TrainSettings, train
from estimators import registry
from estimators.errors import InputError
from estimators.model import sample_path
from reference.exact import exact
from reference.files import load_problem
from reference.problems import build_problem


# ---- augmentation ------------------------------------------------------------------------------
def test_flip_crop_is_a_flip_then_a_shifted_window_of_the_padded_image(make_gen):
    C, H, W, pad, B = 2, 5, 6, 2, 64
    x = torch.randn(B, C * H * W, generator=make_gen(0))
    out = flip_crop(x, (C, H, W), pad, make_gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    img = x.reshape(B, C, H, W)
    seen_flip, offsets = set(), set()
    for b in range(B):  # test-side brute force: which flip and offset explain each output?
        matches = []
        for flipped in (False, True):
            src = img[b].flip(-1) if flipped else img[b]
            padded = torch.nn.functional.pad(src, (pad, pad, pad, pad))
            for dy in range(2 * pad + 1):
                for dx in range(2 * pad + 1):
                    if torch.equal(padded[:, dy:dy + H, dx:dx + W].reshape(-1), out[b]):
                        matches.append((flipped, dy, dx))
        assert matches, f"image {b} is not a flipped/cropped copy"
        seen_flip.add(matches[0][0])
        offsets.add(matches[0][1:])
    assert seen_flip == {False, True} and len(offsets) > 10
    # 4-D input keeps its shape; pad 0 is a pure random flip
    out4 = flip_crop(img, (C, H, W), 0, make_gen(2))
    assert out4.shape == img.shape
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(out4, img))


# ---- evaluation metrics ------------------------------------------------------------------------
def test_metrics_of_a_deterministic_network_are_exact(make_gen):
    p = build_problem("random:widths=3-4-4,loss=softmax,classes=3,points=30,scale=1").to(dtype=torch.float64)
    # layer 1 ignores the input, later layers sum an odd number of +-50 terms: every |a| >= 50
    weights = (0 * p.weights[0],) + tuple(50 * w.sign() for w in p.weights[1:])
    big = p.replace(weights=weights, biases=tuple(50 * b.sign() for b in p.biases))
    s = batch_sums(big, 7, make_gen(0))
    path = sample_path(big, 1, make_gen(1))
    eta = big.head(big.enc(path.x[-1]))[0]
    acc = (eta.argmax(-1) == big.y).double().sum()
    torch.testing.assert_close(s[0], big.loss_fn.value(eta, big.y).sum())
    assert float(s[1]) == float(acc) == float(s[2])
    assert float(s[3]) < 1e-12  # saturated units carry no entropy
    zero = p.replace(weights=tuple(0 * w for w in p.weights), biases=tuple(0 * b for b in p.biases))
    ent = batch_sums(zero, 3, make_gen(2))[3] / zero.batch_size
    torch.testing.assert_close(ent, torch.tensor(math.log(2), dtype=torch.float64))  # fair coins: ln 2


def test_evaluated_loss_matches_the_exact_expected_loss(make_gen):
    """z-test; false-fail rate 6e-7 (|z| > 5); SE from the same number of independent paths."""
    p = build_problem("psa-2-5-5-5")
    k = 400
    got = evaluate(p, p.X, p.y, k, make_gen(0))
    per_point = p.loss_of(sample_path(p, k, make_gen(1)).x[-1])  # [k, B]: independent paths for the SE
    se = float(torch.sqrt((per_point.var(0) / k).sum()) / p.batch_size)
    z = (got["loss"] - exact(p).loss) / se
    assert se < 0.01 and abs(z) < 5, (got["loss"], exact(p).loss, se)
    assert 0 <= got["acc_1"] <= 1 and 0 <= got["acc_k"] <= 1


@pytest.mark.parametrize("spec", ["psa-2-5-5-5", "random:widths=3-4-4,loss=softmax,classes=3,points=40"])
def test_ensemble_accuracy_agrees_with_evaluate_on_the_same_paths(make_gen, spec):
    p = build_problem(spec)
    for k in (1, 6):
        acc = ensemble_accuracy(p, p.X, p.y, [k], make_gen(3))  # one chunk: the same k paths as evaluate draws
        ref = evaluate(p, p.X, p.y, k, make_gen(3))
        assert acc[k] == pytest.approx(ref["acc_k"], abs=1e-12)
    several = ensemble_accuracy(p, p.X, p.y, [4, 1, 16], make_gen(4))
    assert list(several) == [1, 4, 16] and all(0 <= v <= 1 for v in several.values())


# ---- learning-rate search ----------------------------------------------------------------------
def test_lr_search_finds_the_minimum_within_the_trial_budget():
    calls = []

    def objective(lr):
        calls.append(lr)
        return (math.log10(lr) + 2.5) ** 2 + 1.0

    res = search_lr(objective, trials=10)
    assert len(calls) == len(res.trials) <= 10
    assert all(-6 <= t <= 0 for t, _ in res.trials) and all(1e-6 <= c <= 1 for c in calls)
    assert res.log10_lr == pytest.approx(min(res.trials, key=lambda tv: tv[1])[0])
    assert abs(res.log10_lr + 2.5) < 0.1


def test_lr_search_respects_bounds_cap_and_penalises_divergence():
    res = search_lr(lambda lr: -math.log10(lr), trials=4)  # wants lr -> large: pinned at the upper bound
    assert len(res.trials) <= 4 and -6 <= res.log10_lr <= 0 and res.log10_lr > -1.5
    nan_above = search_lr(lambda lr: math.nan if lr > 1e-2 else -math.log10(lr), trials=8)
    assert nan_above.lr <= 1e-2
    assert all(v == PENALTY for t, v in nan_above.trials if t > -2)
    assert len(search_lr(lambda lr: 1.0, trials=1).trials) == 1
    with pytest.raises(InputError):
        search_lr(lambda lr: 1.0, trials=0)


# ---- the training loop -------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["psa", "reinforce"])
def test_training_lowers_the_exact_expected_loss(estimator):
    """Seeded, deterministic: 10 epochs of Nesterov SGD (lr 0.05, batch 20) on the PSA 2-D problem.

    The exact expected loss over the 200 training points must fall below its value at the start.
    """
    tp = build_train_problem("psa2d:val=20,test=20")
    net = tp.problem
    full = lambda q: with_data(q, tp.dataset.X_train, tp.dataset.y_train)  # noqa: E731
    res = train(net, tp.dataset, registry.get(estimator),
                TrainSettings(lr=0.05, epochs=10, batch=20, samples=2, evaluate=False), seeds=(1, 2, 3))
    before, after = exact(full(net)).loss, exact(full(net.with_group_params(res.params))).loss
    assert res.steps == 100 and res.diverged_at is None
    assert after < before - 0.01, (before, after)


def test_trajectory_does_not_depend_on_the_evaluation_sample_count():
    tp = build_train_problem("shapes:size=8,train=64,val=16,test=16,widths=8")
    est = registry.get("st")
    runs = [train(tp.problem.to(dtype=torch.float32), tp.dataset, est,
                  TrainSettings(lr=0.1, epochs=2, batch=16, samples=k, augment=True, crop_pad=1), (5, 6, 7))
            for k in (1, 4)]
    for a, b in zip(runs[0].params, runs[1].params):
        assert torch.equal(a, b)
    metrics = {r["metric"] for r in runs[1].rows}
    assert {"train_loss", "train_acc_k", "val_acc_1", "val_acc_k", "test_acc_k", "seconds"} <= metrics
    assert not any(m.startswith("test_acc_m") for m in metrics)  # no ensemble sizes asked for
    assert sorted({r["epoch"] for r in runs[1].rows}) == [0, 1, 2]


class _NaNEstimator:
    def estimate(self, problem, draws, generator):
        return {g: torch.full((draws, n), math.nan, dtype=problem.dtype)
                for g, n in zip(problem.group_names, problem.group_sizes)}


def test_divergence_stops_training_and_keeps_the_records():
    tp = build_train_problem("psa2d:val=10,test=10")
    res = train(tp.problem, tp.dataset, _NaNEstimator(), TrainSettings(lr=0.1, epochs=3, batch=50), (0, 0, 0))
    assert res.diverged_at == 1 and res.steps == 1
    assert {r["epoch"] for r in res.rows} == {0} and math.isnan(res.running_loss)


def test_initial_network_is_shared_and_equals_the_named_psa_problem():
    tp = build_train_problem("psa2d")
    ref = build_problem("psa-2-5-5-5")
    for a, b in zip(tp.problem.group_params(), ref.group_params()):
        assert torch.equal(a, b)
    with pytest.raises(InputError, match="--cifar-dir"):
        build_train_problem("cifar10-s1")
    with pytest.raises(InputError, match="no option"):
        build_train_problem("shapes:depth=3")


def test_batch_rescale_standardises_each_conv_channel_and_fc_unit(make_gen):
    from bench.training.setups import batch_rescale
    from reference.problems import build_problem as named_problem

    for spec in ("conv:input=2x6x6,channels=3-4,kernels=3-2,strides=1-2,paddings=1-0,points=40,scale=3",
                 "random:widths=5-7-6,points=40,scale=3"):
        p = named_problem(spec)
        q = batch_rescale(p, p.X)
        inp = p.X
        for k in range(q.depth):  # the mean-field forward of the rescaled network, recomputed here
            a = q.preact(k, inp)
            per = a.reshape(a.shape[0], q.weights[k].shape[0], -1)
            torch.testing.assert_close(per.mean((0, 2)), torch.zeros(per.shape[1], dtype=a.dtype), atol=1e-10, rtol=0)
            torch.testing.assert_close(per.std((0, 2), unbiased=False), torch.ones(per.shape[1], dtype=a.dtype))
            inp = q.enc(2 * q.noise_law.cdf(a) - 1)
        assert torch.equal(q.head_weight, p.head_weight)  # the head is not rescaled


def _tiny_cifar(root, per_batch: int = 8) -> None:
    import pickle

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                         b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]}, fh, protocol=2)


def test_cifar_s1_problem_has_the_papers_architecture(tmp_path):
    _tiny_cifar(tmp_path / "cifar-10-batches-py")
    tp = build_train_problem("cifar10-s1:init_points=4", cifar_dir=str(tmp_path))  # a small rescaling batch
    p = tp.problem
    assert p.is_conv and p.depth == 8 and p.n_out == 10 and p.loss == "softmax"
    assert sum(p.group_sizes) == 1_375_498 and sum(p.widths[1:]) == 221_280  # the counts of
    # ``docs/protocols.md#cifar-s1``
    assert [g.out_hw() for g in p.conv] == [(30, 30), (28, 28), (13, 13), (11, 11), (9, 9), (4, 4), (2, 2), (2, 2)]


def test_conv_networks_train_through_the_generic_loop():
    tp = build_train_problem("shapes-conv:size=8,train=48,val=16,test=16,channels=4-4")
    res = train(tp.problem.to(dtype=torch.float32), tp.dataset, registry.get("st"),
                TrainSettings(lr=0.1, epochs=1, batch=16, samples=2, augment=True, crop_pad=1, ensemble_sizes=(1, 4)),
                (1, 2, 3))
    assert res.steps == 3 and res.diverged_at is None
    assert not torch.equal(res.params[0], tp.problem.group_params()[0].float())
    assert {r["metric"] for r in res.rows} >= {"val_acc_k", "test_acc_m4", "train_entropy"}


# ---- CLI and store -----------------------------------------------------------------------------
TINY = ["train", "--recipe", "small", "--problem", "shapes:size=8,train=64,val=16,test=16,widths=8",
        "--estimator", "psa,st", "--epochs", "2", "--lr-search-trials", "2", "--lr-search-epochs", "1",
        "--batch", "32", "--samples", "3", "--no-report"]


def test_small_preset_cli_writes_curves_and_resumes(tmp_path, capsys):
    db = str(tmp_path / "r.sqlite")
    assert main(TINY + ["--db", db]) == 0
    assert "2 tasks, 0 already stored, 2 trained" in capsys.readouterr().out
    with Store(db) as st:
        rid = st.resolve("latest")
        curves, tasks = st.curves(rid), st.tasks(rid)
        assert st.manifest(rid)["kind"] == "train"
    assert list(tasks["status"]) == ["done", "done"] and list(tasks["estimator"]) == ["psa", "st"]
    assert (tasks["draws"] == 4).all()  # 2 epochs x 2 batches of 32
    for est in ("psa", "st"):
        c = curves[curves["estimator"] == est]
        assert set(c.loc[c["metric"] == "val_acc_k", "epoch"]) == {0, 1, 2}
        assert len(c[c["metric"] == "search_loss"]) == 2
        lr = float(c.loc[c["metric"] == "lr", "value"].iloc[0])
        assert 1e-6 <= lr <= 1 and math.log10(lr) in set(c.loc[c["metric"] == "search_log10_lr", "value"])
        assert np.isfinite(c["value"]).all()
        final = c[c["metric"].str.startswith("test_acc_m")]
        assert set(final["metric"]) == {f"test_acc_m{m}" for m in (1, 2, 4, 8, 16, 32, 64, 128)}
        assert set(final["epoch"]) == {2}
    # rerunning the same command computes nothing and leaves the rows as they were
    assert main(TINY + ["--db", db]) == 0
    assert "2 already stored, 0 trained" in capsys.readouterr().out
    with Store(db) as st:
        assert len(st.curves(rid)) == len(curves)


def test_interrupted_training_resumes_where_it_stopped(tmp_path, capsys, monkeypatch):
    import bench.training.plan as tt

    db = str(tmp_path / "r.sqlite")
    real, calls = tt.run_train_task, []

    def flaky(task, tp, ckdir=None, progress=None, tasks=None):
        calls.append(task["estimator"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(task, tp, ckdir, progress, tasks)

    monkeypatch.setattr(tt, "run_train_task", flaky)
    argv = TINY + ["--db", db, "--lr", "0.1"]
    assert main(argv) == 130
    monkeypatch.setattr(tt, "run_train_task", real)
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 already stored, 1 trained" in capsys.readouterr().out


def test_checkpoints_are_problem_files_that_run_scores(tmp_path, capsys):
    db, ck = str(tmp_path / "r.sqlite"), tmp_path / "ck"
    argv = ["train", "--problem", "psa2d:val=20,test=20", "--estimator", "reinforce", "--epochs", "2", "--lr", "0.03",
            "--optimizer", "momentum", "--batch", "10", "--dtype", "float64", "--samples", "2",
            "--checkpoint-epochs", "0,2", "--checkpoint-dir", str(ck), "--db", db,
            "--format", "html", "--report-dir", str(tmp_path / "report")]
    assert main(argv) == 0
    assert (tmp_path / "report" / "report.html").exists()  # the training run's report renders
    files = sorted(ck.rglob("chk-*.npz"))
    assert [f.name for f in files] == ["chk-0.npz", "chk-2.npz"]
    init, ref = load_problem(files[0]), build_problem("psa-2-5-5-5")
    assert torch.equal(init.X, ref.X)
    assert all(torch.equal(a, b) for a, b in zip(init.group_params(), ref.group_params()))
    assert not torch.equal(load_problem(files[1]).group_params()[0], ref.group_params()[0])
    capsys.readouterr()
    assert main(["run", "--problem-file", str(files[1]), "--estimators", "psa", "--draws", "20", "--grid", "1,10",
                 "--db", str(tmp_path / "s.sqlite"), "--no-report"]) == 0
    assert "1 computed" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [
    ["--estimator", "nope"],
    ["--problem", "nope"],
    ["--problem", "shapes:depth=2"],
    ["--problem", "cifar10-fc"],  # needs --cifar-dir
    ["--problem", "cifar10-fc", "--cifar-dir", "/nonexistent/cifar"],
    ["train", "--preset", "cifar-psa2020", "--device", "cpu"],  # alone: needs --cifar-dir
    ["train", "--preset", "cifar-psa2020", "--device", "cpu", "--cifar-dir", "/nonexistent"],
    ["--problem", "shapes-conv:strides=1-2-3"],  # two channel counts, three strides
    ["--epochs", "0"],
    ["--checkpoint-epochs", "9"],
    ["--problem", "psa2d", "--augment"],
    ["--lr", "-1"],
    ["--device", "tpu"],
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, extra):
    db = tmp_path / "r.sqlite"
    argv = (extra if extra[0] == "train" else TINY + extra) + ["--db", str(db)]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not db.exists()


def test_cifar_fc_trains_from_a_tiny_pickle_archive_with_augmentation(tmp_path, capsys):
    _tiny_cifar(tmp_path / "cifar-10-batches-py")
    db = str(tmp_path / "r.sqlite")
    argv = ["train", "--problem", "cifar10-fc:widths=8", "--cifar-dir", str(tmp_path), "--estimator", "st",
            "--epochs", "1", "--lr", "0.05", "--batch", "16", "--samples", "2", "--crop-pad", "4", "--db", db,
            "--no-report"]
    assert main(argv) == 0
    with Store(db) as st:
        rid = st.resolve("latest")
        tasks, curves = st.tasks(rid), st.curves(rid)
        config = st.manifest(rid)["config"]
    assert list(tasks["status"]) == ["done"] and int(tasks["draws"].iloc[0]) == 3  # 36 training images / 16
    assert config["augment"] is True and config["crop_pad"] == 4  # the preset's flip-and-crop, the flag's padding
    assert set(curves.loc[curves["metric"] == "test_acc_k", "epoch"]) == {0, 1}


class _Stub:
    """A stand-in estimator: real ST gradients, then NaN ("diverge") or an exception ("raise") from step 3."""

    name, unbiased, spec = "stub", False, "stub"

    def __init__(self, mode: str):
        self.mode, self.calls, self.inner = mode, 0, registry.get("st")

    def check(self, problem):
        return None

    def cost(self, problem):
        return self.inner.cost(problem)

    def estimate(self, problem, draws, generator):
        self.calls += 1
        if self.calls >= 3 and self.mode == "raise":
            raise RuntimeError("stub failure\nsecond line")
        if self.calls >= 3:
            return _NaNEstimator().estimate(problem, draws, generator)
        return self.inner.estimate(problem, draws, generator)


@pytest.mark.parametrize("mode", ["diverge", "raise"])
def test_task_outcomes_keep_the_curves_recorded_before_the_end(monkeypatch, mode):
    import bench.training.plan as tt
    from bench.training.recipes import TrainConfig

    tp = build_train_problem("psa2d:val=10,test=10")
    cfg = TrainConfig(problem="psa2d:val=10,test=10", estimators=("st",), epochs=3, lr=0.1, batch=100, samples=2,
                      dtype="float64")
    (task,) = tt.plan_train_tasks(cfg, ["st"])
    stub, fresh = _Stub(mode), _Stub(mode)
    monkeypatch.setattr(tt.registry, "get", lambda spec: stub)
    res = tt.run_train_task(task, tp)
    row, curves = res["task"], pd.DataFrame(res["curves"])
    epochs = set(curves.loc[curves["metric"] == "val_acc_k", "epoch"])
    if mode == "diverge":  # a result: done, marked, epochs 0 and 1 kept (steps 1-2 were epoch 1)
        assert row["status"] == "done" and row["error"].startswith("diverged in epoch 2")
        assert epochs == {0, 1} and row["draws"] == 3
        again = train(tp.problem, tp.dataset, fresh, TrainSettings(lr=0.1, epochs=3, batch=100, samples=2),
                      (0, 0, 0))
        assert again.diverged_at == 2 and math.isnan(again.running_loss)  # the search scores it as a failure
    else:  # a failure: one line, the curves of epochs 0 and 1 kept
        assert row["status"] == "failed" and "stub failure" in row["error"] and "\n" not in row["error"].strip()
        assert epochs == {0, 1}
