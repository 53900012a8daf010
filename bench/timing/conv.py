r"""Convolutional kernels of ``sbn-bench time``: PSA's conv backward per layer, and whole-network draws.

- ``psa-conv`` — for every hidden layer pair of the conv network (default CIFAR_S1, ``docs/protocols.md#cifar``, at
  ``conv_batch`` = 16 points, one draw): PSA's flip-difference backward through that layer
  (:mod:`estimators.kernels.psa_conv`, :mod:`estimators.kernels.psa_conv_fused`) against the framework's conv
  backward of the same shape, i.e. ST's input gradient ``conv_transpose2d`` ($\delta\mapsto
  \partial f/\partial x$, the operation PSA's kernel replaces), measured interleaved.  Items are PSA
  *terms*, $N\,C_{in}K^2C_{out}H_oW_o$ per call (one (sample, input unit, output unit) pair each, one
  reciprocal each for the ratio form) — the multiply-adds of the conv backward.  Rows give terms/s,
  the ratio to the conv backward, ``ratio_layer_backward`` (both plus the identical weight gradient)
  and % of the reciprocal limit (CUDA: the device's special-function throughput; CPU: the measured
  eager ``reciprocal_`` rate, plus ``pct_div_limit``: % of the measured throughput of a compiled,
  cache-resident division-and-sum loop, the CPU's practical limit for one division per term, emitted
  as the ``div-limit`` row).  A ``total`` row sums the medians over the layers (the backward of the
  whole network's hidden layers).  Variants: ``eager`` (ratio convolution in eager torch), ``fused``
  (compiled row kernel), ``cuda`` (Triton; CUDA only), ``reference`` (unfold, materialised; only
  while a layer has at most ``reference_max_elems`` terms); ``auto`` marks the automatic choice.
- ``draw-conv`` — whole-network gradient draws per second on the conv network at
  ``conv_draw_batch`` = 64 points: PSA (``kernel=auto``) and deep ST against a deterministic
  forward + backward of the same network (mean-field units), measured interleaved.
"""

from __future__ import annotations

import warnings

import torch

from bench.timing.config import Context
from bench.timing.kernels import det_forward_backward
from bench.timing.measure import Timing, row
from estimators import registry
from estimators.kernels.psa_conv import conv_flip_backward, conv_flip_backward_reference
from estimators.kernels.psa_conv_fused import (
    conv_auto_choice,
    conv_flip_backward_auto,
    conv_flip_backward_cuda,
    conv_flip_backward_fused,
    select_conv_flip_backward,
)
from estimators.model.noise import get_noise
from reference.problems import build_problem

__all__ = ["run_psa_conv", "run_draw_conv", "conv_network", "CONV_KERNELS"]

CONV_KERNELS = ("psa-conv", "draw-conv")
VARIANT_FNS = {
    "eager": conv_flip_backward,
    "fused": conv_flip_backward_fused,
    "cuda": conv_flip_backward_cuda,
    "reference": conv_flip_backward_reference,
}
DRAW_ESTIMATORS = ("psa:kernel=auto", "st")


def conv_network(ctx: Context, points: int):
    """The configured conv network (``conv_net``, a problem spec) with ``points`` random data points."""
    spec = ctx.cfg.conv_net
    p = build_problem(spec + ("," if ":" in spec else ":") + f"points={points},seed={ctx.cfg.seed}")
    return p.to(dtype=ctx.dtype, device=ctx.device)


def _layer(ctx: Context, p, k: int):
    """Random inputs of layer pair ``k``: states of layer k, pre-activations of layer k+1, h, ST's delta."""
    g = ctx.generator(200 + k)
    x = torch.randint(0, 2, (1, p.batch_size, p.widths[k]), generator=g, device=ctx.device).to(ctx.dtype) * 2 - 1
    a = p.preact(k, p.enc(x))
    h = torch.randn(a.shape, generator=g, device=ctx.device, dtype=ctx.dtype)
    return x, a, h


def _variants(ctx: Context, terms: float) -> list[str]:
    out = []
    for v in ctx.cfg.psa_variants:
        if v not in VARIANT_FNS or (v == "cuda" and not ctx.cuda):
            continue
        if v == "reference" and terms > ctx.cfg.reference_max_elems:
            continue
        out.append(v)
    return out


def _div_limit(ctx: Context) -> tuple[float | None, list[dict]]:
    """CPU: divisions/s of a compiled ``sum_j a_i / b_j`` loop on L1/L2-resident operands (one division per term).

    Measured only when the compiled variant is timed (it needs the same compiler).
    """
    if ctx.cuda or "fused" not in ctx.cfg.psa_variants:
        return None, []
    g = ctx.generator(99)
    num = torch.rand(256, 1, 192, generator=g, dtype=ctx.dtype) + 0.5
    den = torch.rand(1, 256, 192, generator=g, dtype=ctx.dtype) + 0.5

    def body(n, d):
        return (n / d).sum(-1)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn = torch.compile(body, dynamic=False)
            fn(num, den)
            t = ctx.measure({"div": lambda: fn(num, den)}, rounds=1)["div"]
    except Exception:  # noqa: BLE001 - no compiler: no limit to compare with
        return None, []
    items = float(num.numel() * den.shape[1])
    return t.rate(items), [row("div-limit", "compiled a/b (L1)", ctx.device, ctx.cfg.dtype, "256x256x192", "div/s",
                               items, t, peak_kind="measured CPU division limit")]


def run_psa_conv(ctx: Context) -> list[dict]:
    div_rate, rows0 = _div_limit(ctx)
    p = conv_network(ctx, ctx.cfg.conv_batch)
    noise = get_noise("logistic")
    auto_fn = select_conv_flip_backward(ctx.device, noise, ctx.dtype)
    rows, totals, autos = rows0, {}, set()
    for k in range(1, p.depth):
        geom, W = p.conv[k], p.weights[k]
        if geom is None:
            continue
        x, a, h = _layer(ctx, p, k)
        terms = float(p.batch_size) * a.shape[-1] * geom.channels * geom.kernel**2
        fns = {"conv-bwd": lambda k=k, h=h: p.input_grad(k, h),
               "conv-bwd-dW": lambda k=k, h=h, x=x: p.param_grad(k, h, p.enc(x))}
        variants = _variants(ctx, terms)
        auto = _auto_name(auto_fn, x, W, geom, noise, p.flip_scale, ctx.dtype)
        autos.add(auto)
        for v in variants:
            fns[v] = (lambda f=VARIANT_FNS[v], x=x, a=a, W=W, h=h, geom=geom:
                      f(x, a, W, h, geom, noise, p.flip_scale))
        slow = {v: fns.pop(v) for v in ("reference",) if v in fns}
        t = ctx.measure(fns)
        if slow:  # the naive formula is far slower: timed alone
            t.update(ctx.measure(slow, rounds=1, warmup=1, max_single_s=min(ctx.cfg.max_single_s, 2.0)))
        shape = f"L{k + 1} B={p.batch_size} {geom.channels}x{geom.height}x{geom.width} k{geom.kernel}s{geom.stride}" \
                f"p{geom.padding} ->{W.shape[0]}"
        bwd, dW = t["conv-bwd"], t["conv-bwd-dW"]
        fp = "fp32" if ctx.dtype != torch.float64 else "fp64"
        rows.append(row("psa-conv", "conv-bwd", ctx.device, ctx.cfg.dtype, shape, "FLOP/s", 2 * terms, bwd,
                        pct_peak=ctx.pct(bwd.rate(2 * terms), fp)[0], peak_kind=ctx.pct(bwd.rate(2 * terms), fp)[1],
                        terms_per_s=bwd.rate(terms)))
        totals.setdefault("conv-bwd", [0.0, 0.0])
        totals["conv-bwd"][0] += bwd.median
        totals["conv-bwd"][1] += terms
        totals.setdefault("conv-bwd-dW", [0.0, 0.0])
        totals["conv-bwd-dW"][0] += dW.median
        for v in variants:
            tm = t[v]
            pct, kind = ctx.pct(tm.rate(terms), "recip")
            rows.append(row("psa-conv", v, ctx.device, ctx.cfg.dtype, shape, "terms/s", terms, tm,
                            ratio=tm.median / bwd.median, ratio_to="conv-bwd", pct_peak=pct, peak_kind=kind,
                            ratio_layer_backward=(tm.median + dW.median) / (bwd.median + dW.median),
                            pct_div_limit=100 * tm.rate(terms) / div_rate if div_rate else None,
                            auto=(v == auto) or None))
            totals.setdefault(v, [0.0, 0.0])
            totals[v][0] += tm.median
            totals[v][1] += terms
    if totals:
        rows.extend(_total_rows(ctx, p, totals, autos.pop() if len(autos) == 1 else "", div_rate))
    return rows


def _auto_name(auto_fn, x: torch.Tensor, W: torch.Tensor, geom, noise, flip_scale: float, dtype: torch.dtype) -> str:
    """The variant the automatic choice runs on this layer."""
    if auto_fn is conv_flip_backward_auto:
        auto_fn = conv_auto_choice(x, W, geom, noise, flip_scale, dtype)
    return next((k for k, f in VARIANT_FNS.items() if f is auto_fn), "")


def _total_rows(ctx: Context, p, totals: dict, auto: str, div_rate: float | None) -> list[dict]:
    base, terms = totals["conv-bwd"]
    shape = f"all hidden layers B={p.batch_size} {p.name}"
    out = []
    for v, (secs, n) in totals.items():
        if v == "conv-bwd-dW" or (v != "conv-bwd" and n != terms):  # a variant skipped on some layer: no total
            continue
        tm = Timing(median=secs, iqr=float("nan"), runs=0, first_call_s=float("nan"))
        if v == "conv-bwd":
            out.append(row("psa-conv-total", v, ctx.device, ctx.cfg.dtype, shape, "terms/s", terms, tm))
            continue
        pct, kind = ctx.pct(tm.rate(terms), "recip")
        dW = totals["conv-bwd-dW"][0]
        out.append(row("psa-conv-total", v, ctx.device, ctx.cfg.dtype, shape, "terms/s", terms, tm,
                       ratio=secs / base, ratio_to="conv-bwd", pct_peak=pct, peak_kind=kind,
                       ratio_layer_backward=(secs + dW) / (base + dW), auto=(v == auto) or None,
                       pct_div_limit=100 * tm.rate(terms) / div_rate if div_rate else None))
    return out


def run_draw_conv(ctx: Context) -> list[dict]:
    p = conv_network(ctx, ctx.cfg.conv_draw_batch)
    fns = {"det-fwd-bwd": lambda: det_forward_backward(p, 1)}
    for i, spec in enumerate(DRAW_ESTIMATORS):
        est, gen = registry.get(spec), ctx.generator(300 + i)
        fns[spec] = lambda est=est, gen=gen: est.estimate(p, 1, gen)
    t = ctx.measure(fns)
    base, st = t["det-fwd-bwd"].median, t["st"].median
    shape = f"D=1 B={p.batch_size} {p.name}"
    rows = [row("draw-conv", "det-fwd-bwd", ctx.device, ctx.cfg.dtype, shape, "draws/s", 1, t["det-fwd-bwd"])]
    for spec in DRAW_ESTIMATORS:
        rows.append(row("draw-conv", spec, ctx.device, ctx.cfg.dtype, shape, "draws/s", 1, t[spec],
                        ratio=t[spec].median / base, ratio_to="det-fwd-bwd", ratio_to_st=t[spec].median / st))
    return rows
