"""``sbn-bench time --kernels psa-conv,draw-conv`` at tiny sizes (the numbers themselves are not checked)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from bench.cli import main
from bench.timing.config import DEFAULT_KERNELS, KERNELS, TimeConfig
from bench.timing.targets import conv_targets
from estimators.errors import InputError

NET = "conv:input=2x9x9,channels=3-4-2,kernels=3-3-1,strides=1-2-1,paddings=0-1-0"
TINY = ["time", "--kernels", "psa-conv,draw-conv", "--conv-net", NET, "--conv-batch", "2", "--conv-draw-batch", "3",
        "--psa-variants", "eager,reference", "--min-time", "0.02", "--rounds", "2", "--no-store", "--json"]


@pytest.fixture(scope="module")
def tiny_rows():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            code = main(TINY)
    finally:
        torch.set_num_threads(before)
    return code, json.loads(buf.getvalue())


def test_conv_rows_and_targets(tiny_rows):
    code, out = tiny_rows
    assert code == 0
    rows = out["rows"]
    layers = [r for r in rows if r["kernel"] == "psa-conv"]
    # two hidden layer pairs (L2, L3), each: the framework's conv backward, eager and reference
    assert {(r["shape"].split()[0], r["variant"]) for r in layers} == {
        (L, v) for L in ("L2", "L3") for v in ("conv-bwd", "eager", "reference")}
    for r in layers:
        assert r["items_per_s"] > 0 and r["median_s"] > 0
        if r["variant"] != "conv-bwd":
            assert r["ratio_to"] == "conv-bwd" and r["ratio"] > 0
            assert r["extra"]["ratio_layer_backward"] > 0
    # the L2 layer (3x7x7 input, k3 s2 p1, 4 output channels, 2 points) has 2*4*4*4*3*9 terms
    l2 = next(r for r in layers if r["shape"].startswith("L2") and r["variant"] == "eager")
    assert l2["items_per_s"] * l2["median_s"] == pytest.approx(2 * 4 * 4 * 4 * 3 * 9)
    totals = {r["variant"]: r for r in rows if r["kernel"] == "psa-conv-total"}
    assert set(totals) == {"conv-bwd", "eager", "reference"}
    per_layer = sum(r["median_s"] for r in layers if r["variant"] == "eager")
    assert totals["eager"]["median_s"] == pytest.approx(per_layer)
    draws = {r["variant"]: r for r in rows if r["kernel"] == "draw-conv"}
    assert set(draws) == {"det-fwd-bwd", "psa:kernel=auto", "st"}
    assert draws["st"]["ratio_to"] == "det-fwd-bwd" and draws["psa:kernel=auto"]["extra"]["ratio_to_st"] > 0
    targets = [t for t in out["targets"] if "conv" in t["target"]]
    assert len(targets) == 3 and not any(t["applies"] for t in targets)  # L2, L3, total; not CIFAR sizes


def test_conv_kernels_are_opt_in_and_validated():
    assert "psa-conv" in KERNELS and "draw-conv" in KERNELS
    assert not {"psa-conv", "draw-conv"} & set(DEFAULT_KERNELS)
    assert TimeConfig().kernels == DEFAULT_KERNELS
    with pytest.raises(InputError):
        TimeConfig(kernels=("psa-conv",), conv_net="random:widths=2-3-3")
    with pytest.raises(InputError):
        TimeConfig(kernels=("psa-conv",), conv_batch=0)


def test_bad_conv_net_exits_2(capsys):
    try:
        code = main(["time", "--kernels", "psa-conv", "--conv-net", "random:widths=2-3", "--no-store"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert "convolutional" in capsys.readouterr().err


def test_conv_targets_pick_the_best_variant():
    def r(variant, ratio, shape="L2 B=16"):
        return {"kernel": "psa-conv", "variant": variant, "ratio": ratio, "ratio_to": "conv-bwd", "shape": shape,
                "pct_peak": None}

    cfg = TimeConfig()
    rows = [r("eager", 90.0), r("fused", 12.0), r("reference", 1.0)]
    (t,) = conv_targets(rows, cfg)
    assert t["variant"] == "fused" and t["met"] and t["applies"]
    (t,) = conv_targets([r("eager", 90.0), r("fused", 16.0)], cfg)
    assert t["met"] is False
    assert conv_targets([], cfg) == []
