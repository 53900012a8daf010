"""The CI gate's committed baseline (``docs/gate.md#baseline``): one JSON file with the design, the run
manifest and, per (problem, estimator, group), the per-coordinate mean and variance (version 2), the
bias norm and its noise floor, the trace variance and its SE, N and the seed.

A missing, unreadable or malformed file, one of another version (version 1 stored norms only), one
made under another gate design (its digest differs), or one whose manifest says it was made from a
dirty tree (unless ``allow_dirty``) raises :class:`~estimators.errors.InputError` (exit code 2);
regenerate it with ``sbn-bench check --update-baseline`` from a clean commit.  Writes are atomic
(temporary file, then rename).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench.gate.design import DESIGN, Design, Measurement, Plan, detectable_bias, detectable_group_bias
from estimators.errors import InputError
from estimators.inputs import read_text_file

__all__ = ["DEFAULT_BASELINE", "FORMAT", "load_baseline", "write_baseline", "entry_of"]

FORMAT = "sbn-bench-gate-baseline"
VERSION = 2
DEFAULT_BASELINE = Path(__file__).resolve().parent / "baselines" / "ci.json"
_GROUP_KEYS = ("size", "n", "grad_norm", "bias_norm", "noise_floor", "trace_var", "trace_var_se")


def entry_of(meas: Measurement, plan: Plan) -> dict:
    """The baseline record of one measurement: per group the summaries and the per-coordinate mean and
    variance (what the ``bias`` check compares with)."""
    return {
        "problem": meas.problem,
        "estimator": meas.estimator,
        "unbiased_groups": list(meas.unbiased_groups),
        "n": meas.n,
        "seed": meas.seed,
        "seconds": round(meas.seconds, 4),
        "detectable_rel_bias": detectable_bias(meas, plan),
        "detectable_rel_bias_groups": detectable_group_bias(meas, plan),
        "groups": {name: gs.record() for name, gs in meas.groups.items()},
    }


def check_replaceable(path: str | Path) -> None:
    """``--update-baseline`` may replace nothing, or an sbn-bench gate baseline of any version: any other
    file at ``path`` (a results file, notes, a link to elsewhere) is refused before the suite runs."""
    p = Path(path)
    if not os.path.lexists(p):
        return
    if p.is_symlink() or not p.is_file():
        raise InputError(f"--update-baseline would replace {path}, which is a link or not a regular file; "
                         f"choose another --baseline")
    try:
        _read(p, any_version=True)
    except InputError:
        raise InputError(f"--update-baseline would replace {path}, which is not an sbn-bench gate baseline; remove "
                         f"it or choose another --baseline") from None


def _read(path: Path, any_version: bool = False) -> dict:
    if not path.exists():
        raise InputError(f"baseline {path} not found; create it with 'sbn-bench check --update-baseline'")
    try:
        text = read_text_file(str(path), "baseline", limit=256 * 2**20).decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"baseline {path} is not a text (JSON) file") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise InputError(f"baseline {path} nests its JSON too deeply to be a baseline") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"baseline {path} is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except ValueError as exc:  # a number of over 4300 digits: Python's limit on int() of a string
        raise InputError(f"baseline {path} is not a gate baseline: {' '.join(str(exc).split())[:120]}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path} is not an sbn-bench gate baseline (missing format {FORMAT!r})")
    if data.get("version") != VERSION and not any_version:
        raise InputError(f"baseline {path} has version {data.get('version')!r} (this sbn-bench reads version {VERSION}, "
                         f"with per-coordinate means); regenerate it with 'sbn-bench check --update-baseline'")
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
        for key in ("mean", "var"):
            vec = group.get(key)
            if not isinstance(vec, list) or len(vec) != group["size"] or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vec):
                return False
        if group["n"] < 1 or min(group["var"], default=0.0) < 0:
            return False
    return True


def load_baseline(path: str | os.PathLike, design: Design = DESIGN, allow_dirty: bool = False
                  ) -> dict[tuple[str, str], dict]:
    """Entries of the baseline at ``path`` keyed by ``(problem spec, estimator spec)``; a baseline made from a
    dirty tree (its manifest's ``git_dirty`` is true) is refused unless ``allow_dirty``."""
    path = Path(path)
    data = _read(path)
    manifest = data.get("manifest")
    if not allow_dirty and isinstance(manifest, dict) and manifest.get("git_dirty") is True:
        raise InputError(f"baseline {path} was made from a dirty tree (commit {manifest.get('git_commit')!r} plus "
                         f"uncommitted changes); regenerate it from a clean commit with 'sbn-bench check "
                         f"--update-baseline', or pass --allow-dirty-baseline")
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
                             f"{', '.join(_GROUP_KEYS)} as finite non-negative numbers, and mean and var lists of "
                             f"size finite numbers)")
        out[(entry["problem"], entry["estimator"])] = entry
    return out


_NUMBER_LIST = re.compile(r"\[\s+((?:-?[0-9][0-9.eE+-]*,\s+)*-?[0-9][0-9.eE+-]*)\s+\]")


def _dumps(data: dict) -> str:
    """Indented JSON with every list of numbers on one line (reviewable diffs, a small file)."""
    text = json.dumps(data, indent=1, allow_nan=False)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)


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
    try:  # named by the file asked for, not by the private one written first
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".baseline-", suffix=".json", dir=path.parent)
    except OSError as exc:
        raise InputError(f"baseline {str(path)!r} cannot be written: {(exc.strerror or str(exc)).lower()}") from None
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(_dumps(data) + "\n")
        os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600: keep the replaced file's mode, or the usual one
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _mode_for(path: Path) -> int:
    """The permission bits a rewritten ``path`` should keep: its own, or those of a new file under the umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
