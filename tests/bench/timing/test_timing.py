"""``sbn-bench time`` and its measuring primitives, at tiny sizes (the numbers themselves are not checked)."""

from __future__ import annotations

import json
import math
import time
import types

import pytest
import torch

from bench.cli import main
from bench.store import Store
from bench.timing.measure import measure, measure_interleaved, peak_extra_bytes
from bench.timing.targets import evaluate_targets, format_table, format_targets

TINY = ["time", "--widths", "16,24", "--batch", "8", "--net", "6-8-8", "--mem-widths", "24",
        "--estimators", "st,psa,reinforce", "--exact-problem", "random:widths=2-3-3,points=4",
        "--psa-variants", "eager,ratio,reference", "--min-time", "0.02", "--rounds", "2"]


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny JSON run of every kernel (shared: the command is the slow part)."""
    db = tmp_path_factory.mktemp("timing") / "t.sqlite"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(TINY + ["--db", str(db), "--json"])
    text = buf.getvalue()
    assert "NaN" not in text  # strict JSON
    return code, json.loads(text), db


def test_json_rows_are_stored_with_manifest(tiny_run):
    code, out, db = tiny_run
    assert code == 0
    kernels = {r["kernel"] for r in out["rows"]}
    assert {"copy", "gemm", "recip", "sampling", "draw", "psa-fc", "psa-fc-mem", "exact"} <= kernels
    with Store(db) as store:
        stored = store.timings(out["run_id"])
        manifest = store.manifest(out["run_id"])
    assert len(stored) == len(out["rows"])
    assert list(stored["kernel"]) == [r["kernel"] for r in out["rows"]]
    for key in ("threads", "matmul_precision", "device_name", "peaks", "targets", "torch"):
        assert key in manifest
    assert manifest["kind"] == "timing" and manifest["config"]["batch"] == 8
    assert manifest["threads"] == out["rows"][0]["extra"]["threads"]


def test_rows_are_consistent(tiny_run):
    _, out, _ = tiny_run
    rows = out["rows"]
    for r in rows:
        if r["median_s"] is not None:
            assert r["median_s"] > 0 and r["items_per_s"] > 0
            assert r["iqr_s"] is None or r["iqr_s"] >= 0  # null: a single run
    psa = [r for r in rows if r["kernel"] == "psa-fc"]
    for shape in {r["shape"] for r in psa}:
        gemm = next(r for r in psa if r["shape"] == shape and r["variant"] == "gemm")
        terms = int(shape.split()[0][2:]) * int(shape.split()[-1].split("x")[0]) ** 2
        assert gemm["items_per_s"] * gemm["median_s"] == pytest.approx(2 * terms)
        dW = next(r for r in psa if r["shape"] == shape and r["variant"] == "gemm-dW")
        for r in psa:
            if r["shape"] == shape and not r["variant"].startswith("gemm"):
                assert r["ratio"] == pytest.approx(r["median_s"] / gemm["median_s"]) and r["ratio_to"] == "gemm"
                assert r["items_per_s"] * r["median_s"] == pytest.approx(terms)
                layer = (r["median_s"] + dW["median_s"]) / (gemm["median_s"] + dW["median_s"])
                assert r["extra"]["ratio_layer_backward"] == pytest.approx(layer)
    draws = {r["variant"]: r for r in rows if r["kernel"] == "draw"}
    assert {"det-fwd-bwd", "st", "psa", "reinforce"} <= set(draws)
    assert draws["psa"]["extra"]["ratio_to_st"] == pytest.approx(draws["psa"]["median_s"] / draws["st"]["median_s"])
    exact = {r["variant"]: r for r in rows if r["kernel"] == "exact"}
    assert exact["transfer"]["ratio"] == pytest.approx(exact["transfer"]["median_s"] / exact["brute"]["median_s"])
    mem = {r["variant"]: r for r in rows if r["kernel"] == "psa-fc-mem"}
    assert mem["eager"]["ratio"] == pytest.approx(mem["eager"]["extra"]["peak_extra_bytes"] / mem["st"]["extra"]["peak_extra_bytes"])
    names = {t["target"] for t in out["targets"]}
    assert any("dense GEMM" in n for n in names) and any("ST draw" in n for n in names)
    assert not any(t["applies"] for t in out["targets"])  # tiny sizes are not the targets' sizes


def test_table_prints(tmp_path, capsys):
    code, cap = _run(TINY + ["--kernels", "psa-fc,sampling", "--db", str(tmp_path / "t.sqlite")], capsys)
    assert code == 0
    lines = cap.out.splitlines()
    assert lines[0].split()[:3] == ["kernel", "variant", "shape"]
    assert any(line.startswith("psa-fc") and "x gemm" in line for line in lines)
    assert any(line.startswith("target PSA FC backward / dense GEMM") for line in lines)
    code, cap = _run(TINY + ["--kernels", "sampling", "--markdown", "--no-store"], capsys)
    md = [line for line in cap.out.splitlines() if line.startswith("|")]
    assert code == 0 and len(md) == 4 and all(line.count("|") == 9 for line in md)  # header, rule, 2 rows


@pytest.mark.parametrize("extra, needs_no_cuda", [
    (["--kernels", "bogus"], False),
    (["--widths", "a,b"], False),
    (["--widths", "0"], False),
    (["--batch", "-1"], False),
    (["--estimators", "nope"], False),
    (["--estimators", "psa:head=sideways"], False),
    (["--psa-variants", "turbo"], False),
    (["--net", "8"], False),
    (["--dtype", "float16"], False),
    (["--device", "tpu"], False),
    (["--clock", "cpu", "--threads", "2"], False),
    (["--threads", "0"], False),
    (["--device", "cuda"], True),
    (["--gpu-suite"], True),
])
def test_bad_options_exit_2_and_write_nothing(extra, needs_no_cuda, tmp_path, capsys):
    if needs_no_cuda and torch.cuda.is_available():
        pytest.skip("CUDA is present")
    db = tmp_path / "t.sqlite"
    code, cap = _run(TINY + extra + ["--db", str(db)], capsys)
    assert code == 2
    assert len(cap.err.strip().splitlines()) == 1 and "Traceback" not in cap.err
    assert not db.exists()


def test_no_store_writes_nothing_and_cpu_clock(tmp_path, capsys):
    db = tmp_path / "t.sqlite"
    before = torch.get_num_threads()
    code, cap = _run(TINY + ["--kernels", "sampling", "--no-store", "--db", str(db), "--json", "--clock", "cpu",
                             "--threads", "1"], capsys)
    out = json.loads(cap.out)
    assert code == 0 and out["run_id"] is None and not db.exists()
    assert all(r["extra"]["threads"] == 1 for r in out["rows"]) and torch.get_num_threads() == before


def test_measure_and_single_runs():
    t = measure(lambda: time.sleep(0.002), min_run_time=0.02)
    assert 0.002 <= t.median < 0.5 and t.runs >= 1 and not t.single and t.iqr >= 0
    t = measure(lambda: time.sleep(0.03), min_run_time=0.02, max_single_s=0.01)
    assert t.single and t.runs == 1 and t.median >= 0.03 and math.isnan(t.iqr)
    calls = []

    def compiles_first():  # a slow first call (compilation) must not make the function a single run
        time.sleep(0.05 if not calls else 0.001)
        calls.append(1)

    t = measure(compiles_first, min_run_time=0.02, max_single_s=0.01)
    assert not t.single and t.first_call_s >= 0.05 and 0.001 <= t.median < 0.05
    ts = measure_interleaved({"a": lambda: time.sleep(0.001), "b": lambda: time.sleep(0.004)}, min_run_time=0.04, rounds=2)
    assert ts["a"].median < ts["b"].median and ts["b"].median >= 0.004


def test_peak_extra_bytes_sees_the_peak_not_the_sum():
    n = 2**20  # 4 MiB of float32

    def sequential():  # two temporaries, one after the other: the peak is one of them
        for _ in range(2):
            t = torch.ones(n)
            del t

    def together():
        a, b = torch.ones(n), torch.ones(n)
        return a.sum() + b.sum()

    one, two = peak_extra_bytes(sequential), peak_extra_bytes(together)
    assert 4 * n <= one < 4 * n + 2**16
    assert 8 * n <= two < 8 * n + 2**16


def test_targets_met_and_missed():
    cfg = types.SimpleNamespace(device="cpu", dtype="float32", batch=256, draws=1, net="256-512-512-512-512")
    rows = [
        dict(kernel="psa-fc", variant="eager", shape="R=256 512x512", ratio=13.0, ratio_to="gemm", pct_peak=None, median_s=1.3),
        dict(kernel="psa-fc", variant="fused", shape="R=256 512x512", ratio=6.0, ratio_to="gemm", pct_peak=None, median_s=0.6),
        dict(kernel="psa-fc", variant="eager", shape="R=256 1024x1024", ratio=20.0, ratio_to="gemm", pct_peak=None, median_s=2.0),
        dict(kernel="draw", variant="st", shape="s", ratio=1.0, ratio_to="", pct_peak=None, median_s=0.1),
        dict(kernel="draw", variant="psa", shape="s", ratio=9.0, ratio_to="", pct_peak=None, median_s=0.6),
        dict(kernel="draw", variant="psa:kernel=eager", shape="s", ratio=9.0, ratio_to="", pct_peak=None, median_s=2.0),
        dict(kernel="psa-fc-mem", variant="eager", shape="R=256 2048x2048", ratio=1.5, ratio_to="st", pct_peak=None, median_s=None),
    ]
    targets = evaluate_targets(rows, cfg)
    eager = [t for t in targets if t["variant"] == "psa:kernel=eager"]  # listed for comparison, not the subject
    assert len(eager) == 1 and eager[0]["met"] is False and not eager[0]["applies"]
    assert "a non-default PSA variant, for comparison" in format_targets(eager)
    got = {(t["target"].split()[1], t["shape"]): t for t in targets if t not in eager}
    assert got[("FC", "R=256 512x512")]["met"] and got[("FC", "R=256 512x512")]["variant"] == "fused"
    assert got[("FC", "R=256 1024x1024")]["met"] is False
    assert got[("PSA", "s")]["value"] == pytest.approx(6.0) and got[("PSA", "s")]["met"] is False
    assert got[("backward", "R=256 2048x2048")]["met"] and all(t["applies"] for t in got.values())
    assert format_table([]).startswith("kernel")


def test_det_forward_backward_is_the_gradient_of_the_deterministic_network():
    from bench.timing.kernels import det_forward_backward
    from reference.problems import random_problem

    for encoding in ("pm1", "01"):
        p = random_problem(widths="3-4-5", points=6, encoding=encoding, seed=2)
        leaves = [g.clone().requires_grad_(True) for g in p.group_params()]
        q = p.with_group_params(leaves)
        inp = q.X
        for k in range(q.depth):
            inp = q.enc(2 * q.noise_law.cdf(q.preact(k, inp)) - 1)
        loss = q.loss_fn.value(q.head(inp), q.y).mean()
        want = torch.autograd.grad(loss, leaves)
        got = det_forward_backward(p, draws=2)
        for g, w in zip(got, want):
            assert g.shape == (2, w.numel())
            torch.testing.assert_close(g, w.expand(2, -1), rtol=1e-10, atol=1e-12)


def test_cuda_peaks_from_properties(monkeypatch):
    """An H100 SXM5 (132 SMs, 1980 MHz, HBM3 2619 MHz x 5120 bit) reproduces its datasheet peaks."""
    from bench.timing import peaks

    props = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132,
                                  clock_rate=1980000, memory_clock_rate=2619000, memory_bus_width=5120, uuid="x")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda idx: props)
    monkeypatch.setattr(peaks, "_nvml", lambda idx, uuid: {})
    pk = peaks.device_peaks("cuda")
    assert pk.fp32_flops == pytest.approx(67e12, rel=0.01)  # datasheet: 67 TFLOPS FP32
    assert pk.fp64_flops == pytest.approx(34e12, rel=0.02)  # datasheet: 34 TFLOPS FP64 (non-tensor)
    assert pk.mem_bw == pytest.approx(3.35e12, rel=0.01)  # datasheet: 3.35 TB/s
    assert pk.recip_per_s == pytest.approx(4.2e12, rel=0.02) and pk.sources["clock"].startswith("device properties")
    props.clock_rate, props.memory_clock_rate = 0, 0  # no clocks reported: the datasheet table by name
    pk = peaks.device_peaks("cuda")
    assert pk.clock_hz == 1980e6 and pk.mem_bw == 3.35e12 and "table" in pk.sources["clock"]
    props.name = "NVIDIA H100 PCIe"
    assert peaks.device_peaks("cuda").clock_hz == 1755e6
