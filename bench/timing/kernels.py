r"""Kernel suites of ``sbn-bench time``: device peaks, sampling forward, estimator draws, exact reference.

Items per call (``docs/timing.md#throughput``):

- ``sampling`` — binary states, $D\,B\sum_{k\ge1}n_k$ per sampled forward pass; on CUDA the % is of
  memory bandwidth for the minimal bytes (read the input and weights, write the states); ratio to a
  deterministic forward (same products, $F$ instead of sampling);
- ``draw`` — gradient draws, $D$ per ``estimate`` call; ratio to a deterministic forward + backward
  of the same network (mean-field units $m=2F(a)-1$, one :func:`estimators.model.backprop`, per-draw
  gradients like every estimator's);
- ``exact`` — joint states, $B\,2^{\sum_kn_k}$ per call for both methods (the same work unit, so the
  ratio transfer/brute is the speed-up); on CUDA the % is of FP64 for the transfer method's analytic
  multiply-add count (x2 FLOPs, x3 for forward + backward, an estimate).
"""

from __future__ import annotations

import torch

from bench.sweep import expand_estimators
from bench.timing.config import Context
from bench.timing.measure import row
from estimators import registry
from estimators.errors import InputError
from estimators.families.mean_field import mean_field_grads, mean_field_pass
from estimators.model import sample_path
from reference.exact import check_feasible, exact
from reference.problems import build_problem, random_problem

__all__ = ["run_peaks", "run_sampling", "run_draws", "run_exact", "det_forward_backward", "network"]


def network(ctx: Context):
    p = random_problem(widths=ctx.cfg.net, points=ctx.cfg.batch, seed=ctx.cfg.seed)
    return p.to(dtype=ctx.dtype, device=ctx.device)


def det_forward_backward(p, draws: int) -> list[torch.Tensor]:
    """Deterministic forward + backward of the same network, per draw (the tanh estimator's pass
    computed for every draw, not once): the baseline a sampled draw is compared with."""
    return mean_field_grads(p, p.X.expand(draws, *p.X.shape))


def _det_forward(p, draws: int) -> torch.Tensor:
    return mean_field_pass(p, p.X.expand(draws, *p.X.shape), slopes=False)[2]


def run_peaks(ctx: Context) -> list[dict]:
    ctx.measured("copy")
    ctx.measured("gemm")
    ctx.measured("recip")
    return []


def _shape(p, draws: int) -> str:
    return f"D={draws} B={p.batch_size} {'-'.join(map(str, p.widths))}"


def run_sampling(ctx: Context) -> list[dict]:
    p, D = network(ctx), ctx.cfg.draws
    gen = ctx.generator(1)
    t = ctx.measure({"sample": lambda: sample_path(p, D, gen), "det": lambda: _det_forward(p, D)})
    states = D * p.batch_size * sum(p.widths[1:])
    esize = torch.finfo(p.dtype).bits // 8
    min_bytes = esize * (D * p.batch_size * (p.widths[0] + sum(p.widths[1:])) + sum(w.numel() for w in p.weights))
    pct, kind = ctx.pct(t["sample"].rate(min_bytes), "mem", measured=False) if ctx.cuda else (None, "")
    shape = _shape(p, D)
    return [
        row("sampling", "sample_path", ctx.device, ctx.cfg.dtype, shape, "states/s", states, t["sample"],
            ratio=t["sample"].median / t["det"].median, ratio_to="det-forward", pct_peak=pct, peak_kind=kind,
            bytes_per_s=t["sample"].rate(min_bytes),
            pct_of_measured_copy=ctx.pct_measured(t["sample"].rate(min_bytes), "mem") if ctx.cuda else None),
        row("sampling", "det-forward", ctx.device, ctx.cfg.dtype, shape, "states/s", states, t["det"]),
    ]


def _estimators(ctx: Context, p) -> list:
    specs = expand_estimators(ctx.cfg.estimators)  # as run: "*" adds every estimator not listed ("*,psa:kernel=fused")
    out = []
    for spec in specs:
        est = registry.get(spec)  # InputError for an unknown name: exit 2
        try:
            est.check(p)
        except InputError as exc:
            ctx.notes.append(f"draw: skipped {spec}: {exc}")
            continue
        out.append(est)
    return out


def run_draws(ctx: Context) -> list[dict]:
    p, D = network(ctx), ctx.cfg.draws
    ests = _estimators(ctx, p)
    fns = {"det-fwd-bwd": lambda: det_forward_backward(p, D)}
    for i, est in enumerate(ests):
        gen = ctx.generator(10 + i)
        fns[est.spec] = lambda est=est, gen=gen: est.estimate(p, D, gen)
    t = ctx.measure(fns)
    base = t["det-fwd-bwd"].median
    shape = _shape(p, D)
    rows = [row("draw", "det-fwd-bwd", ctx.device, ctx.cfg.dtype, shape, "draws/s", D, t["det-fwd-bwd"])]
    st = t.get("st")
    for est in ests:
        c = est.cost(p)
        rows.append(row("draw", est.spec, ctx.device, ctx.cfg.dtype, shape, "draws/s", D, t[est.spec],
                        ratio=t[est.spec].median / base, ratio_to="det-fwd-bwd",
                        ratio_to_st=t[est.spec].median / st.median if st else None,
                        layer_evals=c.layer_evals, head_evals=c.head_evals, backward_passes=c.backward_passes))
    return rows


def _transfer_macs(p) -> float:
    w, B, C = p.widths, p.batch_size, p.n_out
    macs = B * w[1] * (w[0] + 2 ** w[1])
    macs += sum(2 ** (w[k] + w[k + 1]) * (2 * w[k + 1] + B) for k in range(1, len(w) - 1))
    return float(macs + 2 ** w[-1] * (w[-1] * C + B))


def run_exact(ctx: Context) -> list[dict]:
    p = build_problem(ctx.cfg.exact_problem).to(dtype=torch.float64, device=ctx.device)
    fns = {}
    for method in ("transfer", "brute"):
        try:
            check_feasible(p, method)
        except InputError as exc:
            ctx.notes.append(f"exact: skipped {method}: {exc}")
            continue
        fns[method] = lambda method=method: exact(p, method)
    if not fns:
        return []
    t = ctx.measure(fns)
    joint = p.batch_size * 2.0 ** sum(p.widths[1:])
    shape = f"B={p.batch_size} {'-'.join(map(str, p.widths))}"
    rows = []
    for method, tm in t.items():
        flops = 6.0 * _transfer_macs(p) if method == "transfer" else None
        pct, kind = ctx.pct(tm.rate(flops), "fp64", measured=False) if (ctx.cuda and flops) else (None, "")
        ratio = tm.median / t["brute"].median if method == "transfer" and "brute" in t else None
        rows.append(row("exact", method, ctx.device, "float64", shape, "joint states/s", joint, tm, ratio=ratio,
                        ratio_to="brute" if ratio else "", pct_peak=pct, peak_kind=kind,
                        flop_per_s_estimate=tm.rate(flops) if flops else None))
    return rows
