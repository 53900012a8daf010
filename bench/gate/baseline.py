"""The CI gate's committed baseline: one JSON file with the design, the run manifest and, per
(problem, estimator, group), the bias norm and its noise floor, the trace variance and its SE, N
and the seed.

A missing, unreadable or malformed file, or one made under another gate design (its digest
differs), raises :class:`~estimators.errors.InputError` (exit code 2); regenerate it with
``sbn-bench check --update-baseline``.  Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench.gate.design import DESIGN, Design, Measurement, Plan, detectable_bias, detectable_group_bias
from estimators.errors import InputError

__all__ = ["DEFAULT_BASELINE", "FORMAT", "load_baseline", "write_baseline", "entry_of"]

FORMAT = "sbn-bench-gate-baseline"
VERSION = 1
DEFAULT_BASELINE = Path(__file__).resolve().parent / "baselines" / "ci.json"
_GROUP_KEYS = ("size", "n", "grad_norm", "bias_norm", "noise_floor", "trace_var", "trace_var_se")


def entry_of(meas: Measurement, plan: Plan) -> dict:
    """The baseline record of one measurement (summaries only, no per-coordinate vectors)."""
    return {
        "problem": meas.problem,
        "estimator": meas.estimator,
        "unbiased": meas.unbiased,
        "n": meas.n,
        "seed": meas.seed,
        "seconds": round(meas.seconds, 4),
        "detectable_rel_bias": detectable_bias(meas, plan) if meas.unbiased else None,
        "detectable_rel_bias_groups": detectable_group_bias(meas, plan) if meas.unbiased else None,
        "groups": {name: gs.summary() for name, gs in meas.groups.items()},
    }


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"baseline {path} not found; create it with 'sbn-bench check --update-baseline'") from None
    except OSError as exc:
        raise InputError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"baseline {path} is not a text (JSON) file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"baseline {path} is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path} is not an sbn-bench gate baseline (missing format {FORMAT!r})")
    if data.get("version") != VERSION:
        raise InputError(f"baseline {path} has version {data.get('version')!r}; this sbn-bench reads version {VERSION}")
    return data


def _valid_entry(entry: object) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("groups"), dict) or not entry["groups"]:
        return False
    if not isinstance(entry.get("problem"), str) or not isinstance(entry.get("estimator"), str):
        return False
    for group in entry["groups"].values():
        if not isinstance(group, dict):
            return False
        for key in _GROUP_KEYS:
            value = group.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                return False
    return True


def load_baseline(path: str | os.PathLike, design: Design = DESIGN) -> dict[tuple[str, str], dict]:
    """Entries of the baseline at ``path`` keyed by ``(problem spec, estimator spec)``."""
    path = Path(path)
    data = _read(path)
    if data.get("design_digest") != design.digest():
        raise InputError(f"baseline {path} was made under another gate design (digest {data.get('design_digest')!r}, "
                         f"now {design.digest()!r}); regenerate it with 'sbn-bench check --update-baseline'")
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise InputError(f"baseline {path} has no list of entries")
    out = {}
    for i, entry in enumerate(entries):
        if not _valid_entry(entry):
            raise InputError(f"baseline {path}: entry {i} is malformed (needs problem, estimator and per-group "
                             f"{', '.join(_GROUP_KEYS)} as finite non-negative numbers)")
        out[(entry["problem"], entry["estimator"])] = entry
    return out


def write_baseline(path: str | os.PathLike, measurements: list[Measurement], plan: Plan, manifest: dict,
                   design: Design = DESIGN, keep: dict[tuple[str, str], dict] | None = None) -> Path:
    """Write the baseline atomically; ``keep`` holds old entries to carry over (not re-measured)."""
    path = Path(path)
    fresh = {(m.problem, m.estimator): entry_of(m, plan) for m in measurements}
    merged = {**(keep or {}), **fresh}
    data = {
        "format": FORMAT,
        "version": VERSION,
        "design": asdict(design),
        "design_digest": design.digest(),
        "plan": asdict(plan),
        "manifest": manifest,
        "entries": [merged[k] for k in sorted(merged)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".baseline-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, allow_nan=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
