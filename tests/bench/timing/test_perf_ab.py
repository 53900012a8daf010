"""bench.timing.perf_ab: the base-against-candidate timing gate (paired medians, alternating rounds)."""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from bench.timing.perf_ab import compare, format_report, main, medians


def test_compare_judges_the_median_paired_ratio():
    base = [{"a": 1.0, "b": 1.0, "c": 1.0, "old": 1.0}] * 3
    cand = [{"a": 1.2, "b": 1.05, "c": 0.5, "new": 1.0}, {"a": 1.25, "b": 1.04, "c": 0.5, "new": 1.0},
            {"a": 0.9, "b": 1.5, "c": 0.5, "new": 1.0}]  # one noisy round each for a and b
    rows = {r["name"]: r for r in compare(base, cand, max_slowdown=10)}
    assert rows["a"]["regression"] and rows["a"]["ratio"] == pytest.approx(1.2)
    assert not rows["b"]["regression"] and rows["b"]["ratio"] == pytest.approx(1.05)
    assert not rows["c"]["regression"]  # improvements never fail
    assert rows["old"]["note"] == "only in base" and rows["new"]["note"] == "only in candidate"
    text = format_report(list(rows.values()), 10)
    assert "SLOWER" in text and text.count("SLOWER") == 1


def test_medians_reads_pytest_benchmark_json():
    report = {"benchmarks": [{"name": "t", "fullname": "tests/perf/x.py::t", "stats": {"median": 0.5}},
                             {"name": "skipped", "stats": None}]}
    assert medians(report) == {"tests/perf/x.py::t": 0.5}


def _tree(root, sleep_ms):
    (root / "estimators").mkdir(exist_ok=True)
    (root / "bench").mkdir(exist_ok=True)
    (root / "tests" / "perf").mkdir(parents=True, exist_ok=True)
    (root / "estimators" / "__init__.py").write_text("")
    (root / "bench" / "__init__.py").write_text(f"DELAY = {sleep_ms / 1000}\n")
    (root / "tests" / "perf" / "test_sleep.py").write_text(textwrap.dedent("""
        import time
        import bench

        def test_sleep(benchmark):
            benchmark.pedantic(time.sleep, args=(bench.DELAY,), rounds=3, iterations=1)
    """))


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                   check=True, capture_output=True)


@pytest.mark.parametrize("cand_ms,rounds,expected", [(20, 2, 1), (1, 1, 0)], ids=["slower", "faster"])
def test_end_to_end_on_a_temporary_repository(tmp_path, capsys, cand_ms, rounds, expected):
    """A base commit sleeping 4 ms per call against a working tree sleeping 20 ms (fails) or 1 ms (passes).
    Sleeps make the timings immune to CPU load."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _tree(repo, 4)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "base")
    _tree(repo, cand_ms)
    code = main(["--repo", str(repo), "--base-ref", "HEAD", "--rounds", str(rounds), "--keep", str(tmp_path / "out"),
                 "--", "tests/perf", "-p", "no:cacheprovider", "-q"])
    out = capsys.readouterr().out
    assert code == expected, out
    assert "test_sleep" in out and len(list((tmp_path / "out").glob("*.json"))) == 2 * rounds


def test_bad_ref_is_exit_2(tmp_path, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    assert main(["--repo", str(repo), "--base-ref", "no-such-ref"]) == 2
    assert capsys.readouterr().err.startswith("perf-ab: error:")
