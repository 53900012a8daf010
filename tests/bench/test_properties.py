"""Property-based tests (Hypothesis, derandomised: the same examples on every run) over the inputs a
user controls: estimator and problem spec strings, sweep TOML files and problem archives.

The property: any input is either accepted or refused with one :class:`InputError` line (exit code
2 through the CLI) — never another exception, never a traceback — and a refused input writes nothing.
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.commands import run as run_command
from bench.cli import build_parser
from estimators import registry
from estimators.errors import InputError
from reference.files import load_problem
from reference.problems import build_problem

SETTINGS = settings(max_examples=150, derandomize=True, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NAMES = registry.names() + ["psa", "random", "conv", "toy-psa1", "psa-2-5-5-5", "nope", ""]
KEYS = ["tau", "head", "kernel", "baseline", "decay", "K", "value", "shared", "point", "widths", "points", "scale",
        "seed", "classes", "loss", "noise", "encoding", "input", "channels", "kernels", "strides", "paddings", "x"]
VALUES = st.one_of(
    st.integers(-10**20, 10**20).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["plain", "flip-mixed", "eager", "ema", "none", "True", "1e300", "-0", "2-3-3", "2-0-3",
                     "1x4x4", "0x4x4", "softmax", "gaussian", "01", "'x'", "[1,2]", "{}", "(", "==", ""]),
    st.text(max_size=8),
)
OPTION = st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}")
SPEC = st.one_of(
    st.tuples(st.sampled_from(NAMES), st.lists(OPTION, max_size=4)).map(
        lambda t: t[0] + (":" + ",".join(t[1]) if t[1] else "")),
    st.text(max_size=40),
)


@SETTINGS
@given(SPEC)
def test_any_estimator_spec_builds_or_is_refused_in_one_line(spec):
    try:
        est = registry.get(spec)
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert est.name in registry.names()


@SETTINGS
@given(SPEC)
def test_any_problem_spec_builds_or_is_refused_in_one_line(spec):
    if "/" in spec or spec.endswith(".npz"):
        return  # files are the next test's subject
    try:
        p = build_problem(spec)
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert p.batch_size >= 1 and min(p.widths) >= 1


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if not (isinstance(v, float) and not math.isfinite(v)) else ("nan" if v != v else
                                                                                   ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


TOML_KEYS = ["problems", "estimators", "draws", "grid", "chunk", "device", "dtype", "exact_method",
             "memory_budget_gib", "seed", "name", "other"]
TOML_VALUE = st.one_of(
    st.integers(-(2**64), 2**64), st.floats(), st.booleans(),
    st.sampled_from(["psa-2-5-5-5", "random:widths=2-3-3,points=4", "cpu", "cuda", "float64", "x", "../x", ""]),
    st.lists(st.one_of(st.integers(-5, 10**12), st.sampled_from(["psa", "st", "psa-2-5-5-5", "*", "nope:x=1"])),
             max_size=4),
)


@SETTINGS
@given(st.dictionaries(st.sampled_from(TOML_KEYS), TOML_VALUE, max_size=6), st.binary(max_size=16))
def test_any_toml_sweep_is_accepted_or_refused_without_writing(tmp_path, table, junk):
    folder = tmp_path / f"t{abs(hash((tuple(table.items()).__repr__(), junk))) % 10**9}"
    folder.mkdir()
    path = folder / "sweep.toml"
    text = "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items())
    path.write_bytes(text.encode("utf-8", "surrogatepass") + junk)
    args = build_parser().parse_args(["run", "--config", str(path), "--db", str(folder / "r.sqlite")])
    try:
        cfg = run_command.build_config(args)
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert cfg.draws >= 1
    assert sorted(os.listdir(folder)) == ["sweep.toml"]


ARRAY_NAMES = ["W1", "b1", "W2", "b2", "W3", "W_head", "b_head", "X", "y", "encoding", "noise", "loss", "conv1", "junk"]


@st.composite
def archives(draw):
    out = {}
    for name in draw(st.lists(st.sampled_from(ARRAY_NAMES), max_size=10, unique=True)):
        kind = draw(st.sampled_from(["f8", "i8", "bool", "U", "c16", "f4", "0d"]))
        shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3)))
        if kind == "U":
            out[name] = np.array(draw(st.sampled_from(["pm1", "01", "softmax", "logistic", "x"])))
        elif kind == "0d":
            out[name] = np.array(draw(st.floats(allow_nan=True)))
        else:
            vals = draw(st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, 1e300]))
            with np.errstate(invalid="ignore", over="ignore"):
                out[name] = np.full(shape, vals).astype(kind)
    return out


@SETTINGS
@given(archives())
def test_any_problem_archive_loads_or_is_refused_in_one_line(tmp_path, arrays):
    path = tmp_path / f"a{abs(hash(repr(sorted((k, v.shape, str(v.dtype)) for k, v in arrays.items())))) % 10**9}.npz"
    np.savez(path, **arrays)
    try:
        p = load_problem(path)
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert p.batch_size >= 1


def test_the_generators_reach_both_outcomes():
    """The strategies are not vacuous: they produce accepted and refused inputs alike."""
    ok = bad = 0
    for spec in ["psa:kernel=eager", "psa:kernel=x", "random:widths=2-3-3,points=4", "random:points=0"]:
        try:
            registry.get(spec) if spec.startswith("psa") else build_problem(spec)
            ok += 1
        except InputError:
            bad += 1
    assert ok and bad


@pytest.mark.parametrize("argv", [["run", "--config", "x.toml"], ["validate", "st", "--checks", ""]])
def test_parser_accepts_the_commands_the_properties_use(argv):
    assert isinstance(build_parser().parse_args(argv), argparse.Namespace)
