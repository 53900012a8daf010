r"""PSA's FC flip-difference backward against a dense GEMM of the same shape, and its extra memory.

One layer pair with $R=D\cdot B$ rows, $n_{in}=n_{out}=w$: PSA's hard part has $R\,n_{in}n_{out}$
*terms* (one (row, i, j) triple each, one CDF / reciprocal each); the dense GEMM backward of the same
shape is ST's input gradient $g\,W$ (``[R, n_out] @ [n_out, n_in]``, the same number of
multiply-adds, one FMA each).  Rows:

- ``psa-fc`` / ``gemm`` — FLOP/s ($2R\,n_{in}n_{out}$) and % of FP32 peak (CUDA) or of the measured
  large GEMM (CPU); ``gemm-dW`` is the weight-gradient GEMM $g^\top x$ of the same layer (identical
  in PSA and ST), so ``ratio_layer_backward`` $=(t_{psa}+t_{dW})/(t_{gemm}+t_{dW})$ compares whole
  layer backward passes;
- ``psa-fc`` / variant — terms/s, ratio to that GEMM (interleaved measurement), and % of the
  reciprocal limit (CUDA: SMs x 16 x clock; CPU: the measured ``reciprocal_`` rate);
- ``psa-fc-mem`` — extra peak memory of one layer's backward: PSA's kernel against ST's
  ($\delta=g\odot F'$, $\delta W$), alone and with the (identical) weight gradient; untimed.

Variants: ``eager`` (:func:`estimators.kernels.psa_fc.flip_backward`), ``fused``
(``flip_backward_fused``, ``torch.compile``), ``ratio`` (blocked torch ratio form), ``cuda``
(Triton, CUDA only), ``reference`` (the naive materialising formula, only while it needs at most
``reference_max_elems`` elements per temporary).  ``auto`` marks the kernel
:func:`estimators.kernels.psa_fc_cuda.select_flip_backward` picks for the device.
"""

from __future__ import annotations

import torch

from bench.timing.config import Context
from bench.timing.measure import peak_extra_bytes, row
from estimators.kernels import psa_fc, psa_fc_cuda
from estimators.model import layer_grad
from estimators.model.noise import get_noise

__all__ = ["run_psa_fc", "run_psa_mem", "layer_inputs", "VARIANT_FNS"]

VARIANT_FNS = {
    "eager": psa_fc.flip_backward,
    "fused": psa_fc.flip_backward_fused,
    "ratio": psa_fc_cuda.flip_backward_ratio,
    "cuda": psa_fc_cuda.flip_backward_cuda,
    "reference": psa_fc.flip_backward_reference,
}


def layer_inputs(ctx: Context, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of one square FC layer pair: states, pre-activations, weights, h, ST's g and slope."""
    g = ctx.generator(100 + seed)
    R, dev, dt = ctx.cfg.batch * ctx.cfg.draws, ctx.device, ctx.dtype
    x = torch.randint(0, 2, (ctx.cfg.draws, ctx.cfg.batch, w), generator=g, device=dev).to(dt) * 2 - 1
    W = torch.randn(w, w, generator=g, device=dev, dtype=dt) / w**0.5
    a = x @ W.T + torch.randn(w, generator=g, device=dev, dtype=dt)
    h = torch.randn(ctx.cfg.draws, ctx.cfg.batch, w, generator=g, device=dev, dtype=dt)
    return {"x": x, "a": a, "W": W, "h": h, "g": h.reshape(R, w), "slope": torch.sigmoid(a).reshape(R, w)}


def _variants(ctx: Context, w: int) -> list[str]:
    out = []
    for v in ctx.cfg.psa_variants:
        if v == "cuda" and not ctx.cuda:
            continue
        if v == "reference" and ctx.cfg.batch * ctx.cfg.draws * w * w > ctx.cfg.reference_max_elems:
            ctx.notes.append(f"psa-fc: reference skipped at width {w} (materialises {ctx.cfg.batch * ctx.cfg.draws * w * w:.3g} elements)")
            continue
        out.append(v)
    return out


def _auto_name(ctx: Context, d: dict[str, torch.Tensor]) -> str:
    """The variant the automatic choice runs on this layer (on CPU it depends on the layer's size)."""
    noise = get_noise("logistic")
    chosen = psa_fc_cuda.select_flip_backward(ctx.device, noise, ctx.dtype)
    if chosen is psa_fc.flip_backward_auto:
        chosen = psa_fc.auto_choice(d["x"], d["a"], d["W"], noise, 2.0)
    return next((k for k, f in VARIANT_FNS.items() if f is chosen), "")


def run_psa_fc(ctx: Context) -> list[dict]:
    noise = get_noise("logistic")
    rows: list[dict] = []
    for w in ctx.cfg.widths:
        d = layer_inputs(ctx, w)
        auto = _auto_name(ctx, d)
        R = d["g"].shape[0]
        terms = float(R) * w * w
        x2 = d["x"].reshape(R, w)
        fns = {"gemm": lambda d=d: d["g"] @ d["W"], "gemm-dW": lambda d=d, x2=x2: d["g"].T @ x2}
        slow = {}
        for v in _variants(ctx, w):
            f = VARIANT_FNS[v]
            call = (lambda d=d, f=f: f(d["x"], d["a"], d["W"], d["h"], noise, 2.0))
            (slow if v == "reference" else fns)[v] = call
        t = ctx.measure(fns)
        if slow:  # the naive formula is far slower: timed alone, not interleaved
            t.update(ctx.measure(slow, rounds=1, warmup=1, max_single_s=min(ctx.cfg.max_single_s, 2.0)))
        shape = f"R={R} {w}x{w}"
        gemm = t["gemm"]
        pct, kind = ctx.pct(gemm.rate(2 * terms), "fp32" if ctx.dtype != torch.float64 else "fp64")
        rows.append(row("psa-fc", "gemm", ctx.device, ctx.cfg.dtype, shape, "FLOP/s", 2 * terms, gemm,
                        pct_peak=pct, peak_kind=kind, terms_per_s=gemm.rate(terms),
                        pct_of_measured_gemm=ctx.pct_measured(gemm.rate(2 * terms), "fp32") if ctx.cuda else None,
                        peak_extra_bytes=peak_extra_bytes(fns["gemm"], ctx.device)))
        dW = t["gemm-dW"]
        rows.append(row("psa-fc", "gemm-dW", ctx.device, ctx.cfg.dtype, shape, "FLOP/s", 2 * terms, dW,
                        pct_peak=ctx.pct(dW.rate(2 * terms), "fp32" if ctx.dtype != torch.float64 else "fp64")[0],
                        peak_kind=kind, terms_per_s=dW.rate(terms)))
        for v, tm in t.items():
            if v in ("gemm", "gemm-dW"):
                continue
            pct, kind = ctx.pct(tm.rate(terms), "recip")
            call = fns.get(v) or slow[v]
            rows.append(row("psa-fc", v, ctx.device, ctx.cfg.dtype, shape, "terms/s", terms, tm,
                            ratio=tm.median / gemm.median, ratio_to="gemm", pct_peak=pct, peak_kind=kind,
                            ratio_layer_backward=(tm.median + dW.median) / (gemm.median + dW.median),
                            auto=(v == auto) or None, peak_extra_bytes=peak_extra_bytes(call, ctx.device)))
    return rows


def run_psa_mem(ctx: Context) -> list[dict]:
    """Extra peak memory of one FC layer's backward: each PSA variant (not ``reference``) against ST."""
    noise = get_noise("logistic")
    names = [v for v in ctx.cfg.psa_variants if v != "reference" and (v != "cuda" or ctx.cuda)]
    rows = []
    for w in ctx.cfg.mem_widths:
        d = layer_inputs(ctx, w, seed=1)
        auto = _auto_name(ctx, d)
        R, inp = d["g"].shape[0], d["x"]
        esize = torch.finfo(ctx.dtype).bits // 8

        def st_kernel(d=d):
            return (d["g"] * d["slope"]) @ d["W"]

        def st_layer(d=d, inp=inp):
            delta = (d["g"] * d["slope"]).reshape(inp.shape)
            return layer_grad(delta, inp), delta @ d["W"]

        kernels = {"st": (st_kernel, st_layer)}
        for name in names:
            f = VARIANT_FNS[name]

            def k(d=d, f=f):
                return f(d["x"], d["a"], d["W"], d["h"], noise, 2.0)

            def lay(d=d, f=f, inp=inp):
                delta = d["x"] * noise.pdf(d["a"]) * d["h"]
                return layer_grad(delta, inp), f(d["x"], d["a"], d["W"], d["h"], noise, 2.0)

            kernels[name] = (k, lay)
        for name, (k, lay) in kernels.items():
            if name not in ("eager", "ratio"):
                k()  # warm-up (compilation, thread pools) outside the measured call
        peaks = {n: (peak_extra_bytes(k, ctx.device), peak_extra_bytes(lay, ctx.device)) for n, (k, lay) in kernels.items()}
        st_k, st_l = peaks["st"]
        shape = f"R={R} {w}x{w}"
        for name, (pk, pl) in peaks.items():
            psa = name != "st"
            ratio = pk / st_k if psa and pk is not None and st_k else None
            rows.append(row("psa-fc-mem", name, ctx.device, ctx.cfg.dtype, shape, "extra peak bytes", None, None,
                            ratio=ratio, ratio_to="st" if ratio else "", peak_extra_bytes=pk,
                            peak_extra_bytes_with_weight_grad=pl,
                            ratio_with_weight_grad=pl / st_l if psa and pl is not None and st_l else None,
                            naive_einsum_bytes=R * w * w * esize, auto=(name == auto) or None))
    return rows
