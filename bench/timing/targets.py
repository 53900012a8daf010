"""The stdout side of ``sbn-bench time``: the timings table (text or Markdown) and the performance targets.

Targets (issue "timing harness"), each evaluated from rows measured side by side in one run,
never from absolute seconds:

- CPU, float32, widths 512–1024, batch 256: PSA's FC backward at most 12x a dense GEMM of the same
  shape (best non-reference variant);
- a full PSA draw at most 5x a full ST draw (4-layer width-512 FC network);
- PSA's FC backward needs at most 2x ST's extra peak memory (width 2048, batch 256);
- CUDA: PSA's FC backward reaches at least 40% of the reciprocal limit.
- (bench.timing.conv) CPU: PSA's conv backward at most 15x the conv backward per CIFAR_S1 layer at batch 16;
  CUDA: at least 40% of the reciprocal limit.

A target is reported for whatever sizes were measured; ``applies`` says whether they are the
sizes the target was stated for.
"""

from __future__ import annotations

import math

from estimators import registry
from estimators.errors import InputError

__all__ = ["evaluate_targets", "format_table", "format_targets", "si"]

_PREFIX = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]


def si(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for scale, p in _PREFIX:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {p}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def _secs(s: float | None) -> str:
    if s is None or math.isnan(s):
        return "-"
    return f"{s * 1e3:.3g} ms" if s >= 1e-3 else f"{s * 1e6:.3g} us"


def _cells(r: dict) -> list[str]:
    ex = r.get("extra", {})
    if r["items_per_s"] is None:
        rate = f"{si(ex.get('peak_extra_bytes'), 'B')} extra peak" if "peak_extra_bytes" in ex else "-"
    else:
        rate = f"{si(r['items_per_s'])} {r['unit']}"
    iqr = "-" if r["iqr_s"] is None or math.isnan(r["iqr_s"]) or not r["median_s"] else f"{100 * r['iqr_s'] / r['median_s']:.1f}%"
    if ex.get("single"):
        iqr = "single run"
    ratio = f"{r['ratio']:.3g}x {r['ratio_to']}" if r["ratio"] is not None else ""
    pct = f"{r['pct_peak']:.3g}% {r['peak_kind']}" if r["pct_peak"] is not None else ""
    variant = r["variant"] + (" (auto)" if ex.get("auto") else "")
    return [r["kernel"], variant, r["shape"], rate, _secs(r["median_s"]), iqr, ratio, pct]


HEADER = ["kernel", "variant", "shape", "throughput", "median", "IQR/med", "ratio", "% of peak"]


def format_table(rows: list[dict], markdown: bool = False) -> str:
    cells = [_cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(HEADER)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*HEADER), fmt.format(*("-" * w for w in widths))] + [fmt.format(*c) for c in cells]).rstrip()


def _is_default_psa(spec: str) -> bool:
    """Whether ``spec`` builds PSA with its default options (the draw target is stated for what users get)."""
    try:
        return registry.get(spec) == registry.get("psa")
    except InputError:
        return False


def _target(name: str, shape: str, variant: str, value: float | None, limit: float, op: str, applies: bool,
            why_not: str = "not the target's sizes", **also) -> dict:
    """One verdict; ``applies`` False (with ``why_not``) marks a measurement the target was not stated for."""
    met = None if value is None else (value <= limit if op == "<=" else value >= limit)
    return {"target": name, "shape": shape, "variant": variant, "value": value, "limit": limit, "op": op,
            "met": met, "applies": applies, "why_not": "" if applies else why_not, **also}


def evaluate_targets(rows: list[dict], cfg) -> list[dict]:
    cpu32 = not cfg.device.startswith("cuda") and cfg.dtype == "float32"
    out = []
    psa = [r for r in rows if r["kernel"] == "psa-fc" and r["ratio_to"] == "gemm" and r["variant"] != "reference"]
    for shape in dict.fromkeys(r["shape"] for r in psa):
        best = min((r for r in psa if r["shape"] == shape), key=lambda r: r["ratio"])
        w = int(shape.split()[-1].split("x")[0])
        if not cfg.device.startswith("cuda"):
            out.append(_target("PSA FC backward / dense GEMM (CPU)", shape, best["variant"], best["ratio"], 12.0, "<=",
                               cpu32 and 512 <= w <= 1024 and cfg.batch * cfg.draws == 256,
                               layer_backward_ratio=best.get("extra", {}).get("ratio_layer_backward")))
        else:
            top = max((r for r in psa if r["shape"] == shape and r["pct_peak"] is not None),
                      key=lambda r: r["pct_peak"], default=None)
            if top is not None:
                out.append(_target("PSA FC backward, % of reciprocal limit (GPU)", shape, top["variant"],
                                   top["pct_peak"], 40.0, ">=", cfg.dtype == "float32"))
    draws = {r["variant"]: r for r in rows if r["kernel"] == "draw"}
    if "st" in draws:
        sizes = cfg.net.count("-") == 4 and set(cfg.net.split("-")[1:]) == {"512"}
        for name, r in draws.items():
            if name.split(":")[0] == "psa" and r["median_s"]:
                default = _is_default_psa(name)  # other kernels/heads are listed for comparison
                out.append(_target("full PSA draw / full ST draw", r["shape"], name, r["median_s"] / draws["st"]["median_s"],
                                   5.0, "<=", sizes and default,
                                   "not the target's sizes" if not sizes else "a non-default PSA variant, for comparison"))
    for r in rows:
        if r["kernel"] == "psa-fc-mem" and r["ratio"] is not None:
            w = int(r["shape"].split()[-1].split("x")[0])
            out.append(_target("PSA backward extra peak memory / ST's", r["shape"], r["variant"], r["ratio"], 2.0, "<=",
                               w == 2048 and cfg.batch * cfg.draws == 256))
    out.extend(conv_targets(rows, cfg))  # psa-conv rows (CIFAR_S1 layers): <= 15x (CPU), >= 40% (GPU)
    return out


def conv_targets(rows: list[dict], cfg) -> list[dict]:
    """Issue targets: CPU, PSA conv backward <= 15x the conv backward per CIFAR_S1 layer at batch 16 (best
    non-reference variant, and the all-layer total); GPU: >= 40% of the reciprocal limit."""
    out = []
    if not any(r["kernel"] in ("psa-conv", "psa-conv-total") for r in rows):
        return out
    cuda = cfg.device.startswith("cuda")
    applies = cfg.conv_net.split(":")[0] == "cifar-s1" and cfg.conv_batch == 16 and cfg.dtype == "float32"
    for kernel in ("psa-conv", "psa-conv-total"):
        psa = [r for r in rows if r["kernel"] == kernel and r["ratio_to"] == "conv-bwd" and r["variant"] != "reference"]
        for shape in dict.fromkeys(r["shape"] for r in psa):
            cands = [r for r in psa if r["shape"] == shape]
            if not cuda:
                best = min(cands, key=lambda r: r["ratio"])
                out.append(_target("PSA conv backward / conv backward (CPU)", shape, best["variant"], best["ratio"],
                                   15.0, "<=", applies))
            else:
                top = max((r for r in cands if r["pct_peak"] is not None), key=lambda r: r["pct_peak"], default=None)
                if top is not None:
                    out.append(_target("PSA conv backward, % of reciprocal limit (GPU)", shape, top["variant"],
                                       top["pct_peak"], 40.0, ">=", applies))
    return out


def format_targets(targets: list[dict]) -> str:
    lines = []
    for t in targets:
        verdict = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        why = t.get("why_not") or "not the target's sizes"
        scope = "" if t["applies"] else f" ({why})"
        value = "-" if t["value"] is None else f"{t['value']:.3g}"
        layer = f" (whole layer backward incl. dW: {t['layer_backward_ratio']:.3g}x)" if t.get("layer_backward_ratio") else ""
        lines.append(f"target {t['target']} [{t['shape']}, {t['variant']}]: {value} {t['op']} {t['limit']:g} -> "
                     f"{verdict}{scope}{layer}")
    return "\n".join(lines)
