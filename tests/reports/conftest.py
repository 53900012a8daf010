"""Synthetic stored runs for the report tests (no sweep, no torch): tidy rows built from a bias/variance model.

Each (problem, estimator, group) has a gradient norm |g|, a relative bias b and a relative sd s of
one draw; then rel_rmse(M) = sqrt(b^2 + s^2/M), the empirical RMSE is that times a small seeded
wobble, and cosines are 1/sqrt(1 + rmse^2) with a band. The ``psa2020`` variant is built from the
paper's published values scaled by known factors, so the comparison's ratios are known exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reports.results import RunResults
from reports.paper_values import GROUPS, M_GRID, METHOD_SPECS, METHODS, VALUES

PSA_GRID = [m * 10**k for k in range(4) for m in range(1, 10)]  # 1..9, 10..90, 100..900, 1000..9000
RMSE_FACTOR, COS_SHIFT = 1.1, -0.01
# relative bias, relative sd of one draw, unbiased, seconds per draw, loss evals per draw
MODELS = {
    "psa": (0.05, 0.4, False, 2e-4, 1.0),
    "st": (0.3, 0.5, False, 1e-4, 1.0),
    "reinforce": (0.0, 9.0, True, 5e-5, 1.0),
    "arm": (0.0, 2.0, True, 1e-4, 2.0),
    "concrete:tau=0.1": (0.02, 5.0, False, 1e-4, 1.0),
    "tanh": (0.4, 0.0, False, 3e-5, 1.0),
}
MANIFEST = {"run_id": "r20240101-abc", "created_utc": "2024-01-01T00:00:00Z", "label": "synthetic",
            "preset": "smoke", "command": "sbn-bench run --preset smoke", "git_commit": "0123456789abcdef",
            "git_dirty": False, "package_version": "0.1.0", "config_hash": "cafe", "root_seed": 42,
            "python": "3.11.9", "torch": "2.13.0", "numpy": "2.4", "device": "cpu", "device_name": "Test CPU",
            "cpu_model": "Synthetic Xeon", "threads": 2, "config": {"draws": 2000, "problems": ["a", "b"]}}


def _task(problem, est, i, status="done", error="", draws=2000):
    b, s, unbiased, spd, evals = MODELS.get(est, (0.1, 1.0, False, 1e-4, 1.0))
    return {"task_key": f"{problem}|{est}|{i}", "problem": problem, "estimator": est,
            "estimator_name": est.split(":")[0], "unbiased": unbiased, "device": "cpu", "dtype": "float32",
            "draws": draws, "seed": 1000 + i, "status": status, "error": error, "seconds": spd * draws,
            "seconds_per_draw": spd, "layer_evals": 3.0, "head_evals": 1.0, "backward_passes": 1.0,
            "loss_evals_per_draw": evals, "estimator_options": _OPTIONS.get(est, "{}"), "estimator_origin": ""}


#: the stored options of the paper's methods as a store records them (every option; here the defining ones)
_OPTIONS = {METHOD_SPECS[m]: json.dumps(opts, sort_keys=True) for m, (_, opts) in METHODS.items()}
_OPTIONS["concrete:tau=1.0"] = _OPTIONS["concrete"]  # a store records every option: both spellings carry tau=1.0


def _rows(task, group, metric, ms, values, lo=None, hi=None):
    lo = np.full(len(ms), np.nan) if lo is None else lo
    hi = np.full(len(ms), np.nan) if hi is None else hi
    return [(task["task_key"], task["problem"], task["estimator"], group, metric, int(m), float(v), float(a), float(c))
            for m, v, a, c in zip(ms, values, lo, hi)]


def _model_scores(task, groups, ms, rng):
    b, s, _, spd, evals = MODELS.get(task["estimator"], (0.1, 1.0, False, 1e-4, 1.0))
    rows, sq = [], {"g": 0.0, "b": 0.0, "v": 0.0}
    ms = np.asarray(ms, float)
    for gi, group in enumerate(groups):
        g = 1.0 + 0.5 * gi
        bg, sg = b * (1 + 0.2 * gi), s * (1 + 0.1 * gi)
        sq["g"] += g**2
        sq["b"] += (bg * g) ** 2
        sq["v"] += (sg * g) ** 2
        rm = np.sqrt(bg**2 + sg**2 / ms)
        rows += _rows(task, group, "rel_rmse", ms, rm)
        rows += _rows(task, group, "rel_rmse_emp", ms, rm * (1 + 0.05 * rng.standard_normal(len(ms))))
        cos = 1 / np.sqrt(1 + rm**2)
        rows += _rows(task, group, "cos_mean", ms, cos)
        rows += _rows(task, group, "cos_q15", ms, cos - 0.1 * rm / (1 + rm))
        rows += _rows(task, group, "cos_q85", ms, np.minimum(cos + 0.1 * rm / (1 + rm), 1.0))
        tv = (sg * g) ** 2
        rows += _rows(task, group, "grad_norm", [0], [g])
        rows += _rows(task, group, "rel_bias", [0], [bg], [bg - 0.01], [bg + 0.01])
        rows += _rows(task, group, "trace_var", [0], [tv])
        rows += _rows(task, group, "noise_floor", [0], [np.sqrt(tv / task["draws"])])
    gn = np.sqrt(sq["g"])
    ball, sall = np.sqrt(sq["b"]) / gn, np.sqrt(sq["v"]) / gn
    rm = np.sqrt(ball**2 + sall**2 / ms)
    rows += _rows(task, "all", "rel_rmse", ms, rm)
    rows += _rows(task, "all", "cos_mean", ms, 1 / np.sqrt(1 + rm**2))
    for metric, v in (("grad_norm", gn), ("rel_bias", ball), ("trace_var", sq["v"]),
                      ("noise_floor", np.sqrt(sq["v"] / task["draws"])), ("snr", 1 / max(sall, 1e-9)),
                      ("var_x_seconds", sq["v"] * spd), ("var_x_loss_evals", sq["v"] * evals)):
        rows += _rows(task, "all", metric, [0], [v])
    return rows


def make_run(problems=("toy-a", "toy-b"), estimators=("psa", "st", "reinforce", "tanh"),
             groups=("layer0", "layer1", "head"), ms=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
             failed=(("toy-b", "reinforce", "CUDA error: out of memory <oops>"),), timings=True,
             manifest=None, seed=0) -> RunResults:
    """A synthetic stored run; ``failed`` lists (problem, estimator, error) tasks that failed (no scores)."""
    rng = np.random.default_rng(seed)
    bad = {(p, e): err for p, e, err in failed}
    tasks, rows = [], []
    for problem in problems:
        for i, est in enumerate(estimators):
            err = bad.get((problem, est))
            task = _task(problem, est, i, "failed" if err else "done", err or "")
            tasks.append(task)
            if not err:
                rows += _model_scores(task, groups, ms, rng)
    cols = ["task_key", "problem", "estimator", "group", "metric", "M", "value", "lo", "hi"]
    tim = pd.DataFrame(columns=["kernel", "variant", "device", "dtype", "shape", "unit", "items_per_s", "median_s",
                                "iqr_s", "ratio", "ratio_to", "pct_peak", "peak_kind"])
    if timings:
        tim = pd.DataFrame([
            ("sample_forward", "eager", "cpu", "float32", "B=200,w=2-5-5-5", "states", 4.1e7, 1.2e-3, 5e-5, np.nan, "",
             np.nan, ""),
            ("psa_terms", "eager", "cpu", "float32", "B=200,n=5", "terms", 2.0e8, 3.0e-4, 2e-5, 3.5, "gemm", 12.0,
             "measured"),
            ("draw:psa", "eager", "cpu", "float32", "2-5-5-5", "draws", 5.0e3, 2.0e-4, 1e-5, 2.1, "fwd+bwd", np.nan,
             ""),
            ("draw:reinforce", "eager", "cpu", "float32", "2-5-5-5", "draws", 2.0e4, 5.0e-5, 4e-6, 0.5, "fwd+bwd",
             np.nan, ""),
        ], columns=tim.columns)
    return RunResults(dict(MANIFEST if manifest is None else manifest), pd.DataFrame(tasks),
                      pd.DataFrame(rows, columns=cols), tim)


def synthetic_curve(epochs: int) -> list[float]:
    """A made-up training curve: exact loss 0.41 + 0.31 exp(-epoch / 300), epochs 0..``epochs``."""
    return [round(0.41 + 0.31 * float(np.exp(-e / 300)), 6) for e in range(epochs + 1)]


def checkpoint_facts(problem: str) -> dict:
    """The training facts a task on ``BASE@chk-E`` stores (``reference.checkpoints.checkpoint_facts``), made up."""
    base, _, tail = problem.partition("@")
    if not tail:
        return {}
    epoch = int(tail[4:])
    norms = {g: {"weight": 1.0 + i + epoch / 100, "bias": 0.5, "max_abs_weight": 0.9 + epoch / 1000}
             for i, g in enumerate(GROUPS)}
    curve = synthetic_curve(epoch)
    return {"checkpoint": {"base": base, "epoch": epoch, "seed": 1, "exact_loss": curve[-1], "weight_norms": norms,
                           "training_version": 2},
            "training": {"recipe": {"lr": 0.03}, "curve_kind": "exact", "curve": curve}}


def make_psa2020_run(failed=(("psa-2-5-5-5@chk-2000", "arm", "worker died"),)) -> RunResults:
    """A psa2020-shaped run (3 checkpoints x the paper's 7 methods x 4 groups x 36 M, 20000 draws).

    On chk-100 and chk-2000 the empirical relative RMSE is the paper's value x ``RMSE_FACTOR`` and the
    mean cosine the paper's value + ``COS_SHIFT`` on the paper's M grid (log-log interpolated between).
    """
    probs = ("psa-2-5-5-5@chk-1", "psa-2-5-5-5@chk-100", "psa-2-5-5-5@chk-2000")
    run = make_run(probs, tuple(METHOD_SPECS.values()), GROUPS, PSA_GRID, failed, timings=False,
                   manifest={**MANIFEST, "run_id": "r-psa2020", "preset": "psa2020"}, seed=1)
    run.tasks["facts"] = [checkpoint_facts(p) for p in run.tasks["problem"]]
    s = run.scores
    for method, spec in METHOD_SPECS.items():
        for chk in ("chk-100", "chk-2000"):
            for metric, target in (("rel_rmse", "rel_rmse_emp"), ("cos_mean", "cos_mean")):
                for group, vals in zip(GROUPS, VALUES[(chk, metric)][method]):
                    sel = ((s["problem"] == f"psa-2-5-5-5@{chk}") & (s["estimator"] == spec) & (s["group"] == group)
                           & (s["metric"] == target))
                    grid = np.log(np.asarray(M_GRID[metric], float))
                    m = np.log(s.loc[sel, "M"].to_numpy(float))
                    if metric == "rel_rmse":
                        s.loc[sel, "value"] = RMSE_FACTOR * np.exp(np.interp(m, grid, np.log(vals)))
                    else:
                        cos = np.interp(m, grid, vals) + COS_SHIFT
                        s.loc[sel, "value"] = cos
                        for q, sign in (("cos_q15", -1), ("cos_q85", 1)):
                            band = ((s["problem"] == f"psa-2-5-5-5@{chk}") & (s["estimator"] == spec)
                                    & (s["group"] == group) & (s["metric"] == q))
                            s.loc[band, "value"] = np.clip(cos + sign * 0.5 * (1 - cos), -1, 1)
    return run


@pytest.fixture(scope="session")
def synthetic_run():
    """Factory: ``synthetic_run(**overrides)`` -> a fresh synthetic RunResults."""
    return make_run


@pytest.fixture(scope="session")
def psa2020_run():
    """Factory: ``psa2020_run(failed=...)`` -> a fresh psa2020-shaped RunResults."""
    return make_psa2020_run


@pytest.fixture(scope="session")
def small_report(tmp_path_factory, synthetic_run):
    """The synthetic run rendered once (HTML and PDF) for the tests that only read the result."""
    from reports import build_report

    out = tmp_path_factory.mktemp("small_report")
    return build_report([synthetic_run()], out)


@pytest.fixture(scope="session")
def psa_report(tmp_path_factory, psa2020_run):
    """The paper's two tabulated checkpoints (2 problems x 7 estimators x 4 groups x 36 M values) rendered once;
    ``cpu_s`` is the CPU time of the build."""
    import time

    from reports import build_report

    run = psa2020_run()
    keep = run.tasks["problem"] != "psa-2-5-5-5@chk-1"
    run.tasks, run.scores = run.tasks[keep], run.scores[run.scores["problem"] != "psa-2-5-5-5@chk-1"]
    out = tmp_path_factory.mktemp("psa_report")
    t0 = time.process_time()
    paths = build_report([run], out)
    return {**paths, "cpu_s": time.process_time() - t0}
