"""CLI basics: help, version, python -m bench, one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench import __version__
from bench.cli import main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sbn-bench {__version__}"
    assert main([]) == 0
    assert "run" in capsys.readouterr().out


def test_python_dash_m_bench():
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "sbn-bench" in out.stdout


@pytest.mark.parametrize("argv", [
    ["frobnicate"],
    ["exact", "--bogus"],
    ["exact", "--problem", "nope"],
    ["exact", "--problem", "random:widths=2-14-14"],
    ["problem", "missing.npz"],
    ["list", "things"],
])
def test_bad_input_is_one_line_and_exit_2(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("sbn-bench")


def test_exact_and_problem_commands(tmp_path, capsys):
    assert main(["exact", "--problem", "toy-psa1"]) == 0
    text = capsys.readouterr().out
    assert "exact expected loss" in text and "|grad| = 0.235934" in text  # |dE/da| of the spec's toy, 0.23593
    path = tmp_path / "p.npz"
    assert main(["problem", "psa-2-5-5-5", "--save", str(path)]) == 0
    assert path.exists()
    assert main(["exact", "--problem", str(path), "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out.split("saved to")[-1].split("\n", 1)[1])
    assert out["problem"] == "psa-2-5-5-5" and len(out["grads"]["layer0"]) == 15


def test_list_problems(capsys):
    assert main(["list", "problems"]) == 0
    assert "psa-2-5-5-5" in capsys.readouterr().out
