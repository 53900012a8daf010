"""build_report end to end: table files, bad input, no torch, speed, and the ``sbn-bench report`` command."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from bench.store import Store
from reports import ReportError, RunResults, build_report


def test_table_files(small_report):
    tdir = small_report["tables"]
    stems = sorted({p.stem for p in tdir.iterdir()})
    assert stems == sorted(["r20240101-abc_manifest", "r20240101-abc_failed", "r20240101-abc_tasks",
                            "r20240101-abc_toy-a_ranking", "r20240101-abc_toy-b_ranking", "r20240101-abc_timings",
                            "r20240101-abc_toy-a_cost", "r20240101-abc_toy-b_cost"])
    for stem in stems:
        assert {p.suffix for p in tdir.glob(stem + ".*")} == {".csv", ".md", ".tex"}
    ranking = pd.read_csv(tdir / "r20240101-abc_toy-b_ranking.csv")
    assert list(ranking["estimator"]) == ["psa", "tanh", "st", "reinforce"]
    assert ranking["status"].iloc[-1].startswith("failed:") and pd.isna(ranking["rank"].iloc[-1])


def test_tables_only(tmp_path, synthetic_run):
    paths = build_report([synthetic_run()], tmp_path, formats=())
    assert set(paths) == {"tables"} and not (tmp_path / "report.html").exists()


def test_two_runs_one_report(tmp_path, synthetic_run):
    from reports.build import _titles
    from reports.results import validate
    from reports.sections import run_sections

    small = dict(problems=("toy-a",), estimators=("psa", "st"), failed=(), timings=False)
    first = synthetic_run(**small)
    second = synthetic_run(**small, manifest={**first.manifest, "run_id": "r-second", "preset": "psa2020"})
    assert _titles([first, second])[0] == "sbn-bench report: 2 runs"
    sections = run_sections([validate(first), validate(second)])
    titles = [s.title for s in sections]
    assert titles[0] == "Run r20240101-abc" and "Run r-second" in titles
    assert titles.count("Problem toy-a") == 2 and titles.count("Comparison with the PSA paper") == 1
    anchors = [s.anchor for s in sections]
    assert len(anchors) == len(set(anchors))  # one page, no clashing ids
    # a psa2020 run without the paper's checkpoints says so instead of showing empty tables
    psa = sections[titles.index("Comparison with the PSA paper")]
    assert any("none of the paper's checkpoint problems" in getattr(b, "text", "") for b in psa.blocks)
    paths = build_report([first, second], tmp_path, formats=())
    assert (paths["tables"] / "r-second_toy-a_ranking.csv").exists()
    assert (paths["tables"] / "r20240101-abc_toy-a_ranking.csv").exists()


def test_bad_input(tmp_path, synthetic_run):
    run = synthetic_run()
    empty = RunResults(run.manifest, run.tasks.iloc[0:0], run.scores.iloc[0:0], run.timings.iloc[0:0])
    with pytest.raises(ReportError, match="run r20240101-abc is empty"):
        build_report([empty], tmp_path / "a")
    with pytest.raises(ReportError, match="no runs"):
        build_report([], tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_all_tasks_failed(tmp_path, synthetic_run):
    """A run where every task failed still renders, with every task shown as failed."""
    ests = ("psa", "st")
    run = synthetic_run(problems=("toy-a",), estimators=ests, failed=[("toy-a", e, "boom") for e in ests],
                        timings=False)
    paths = build_report([run], tmp_path, formats=("html",))
    html = paths["html"].read_text(encoding="utf-8")
    assert html.count("failed: boom") >= 4 and "No timings were recorded" in html
    assert "no data" in html  # the empty panels say so


def test_training_run_gets_training_sections_only(tmp_path, synthetic_run):
    """A run with curves and no score rows: the training section, no empty accuracy sections."""
    run = synthetic_run(problems=("shapes",), estimators=("psa",), failed=(), timings=False)
    curves = pd.DataFrame([dict(task_key=run.tasks["task_key"][0], problem="shapes", estimator="psa", epoch=e,
                                metric=m, value=v)
                           for m, vals in (("val_acc_k", [0.1, 0.5, 0.7]), ("train_loss", [2.3, 1.9, 1.4]))
                           for e, v in enumerate(vals)] +
                          [dict(task_key=run.tasks["task_key"][0], problem="shapes", estimator="psa", epoch=0,
                                metric="lr", value=0.01)])
    run = RunResults(run.manifest, run.tasks, run.scores.iloc[0:0], run.timings, curves)
    html = build_report([run], tmp_path, formats=("html",))["html"].read_text(encoding="utf-8")
    assert "Training" in html and "shapes: training curves" in html
    assert "accuracy per parameter group" not in html and "estimators ranked" not in html
    assert "No timings were recorded" not in html


def test_no_torch_and_cross_process_determinism(tmp_path, synthetic_run, small_report):
    """``import reports`` and a whole build import neither torch, bench nor estimators, and the bytes match."""
    run_file = tmp_path / "run.pkl"
    run_file.write_bytes(pickle.dumps(synthetic_run()))
    code = textwrap.dedent(f"""
        import pickle, sys
        import reports
        from reports import build_report
        run = pickle.loads(open({str(run_file)!r}, "rb").read())
        build_report([run], {str(tmp_path / "sub")!r})
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "bench", "estimators", "reference"))
        print("IMPORTED", bad)
    """)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONHASHSEED": "12345"}  # another hash seed than pytest's
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "IMPORTED []" in out.stdout
    for kind in ("html", "pdf"):
        assert (tmp_path / "sub" / f"report.{kind}").read_bytes() == small_report[kind].read_bytes(), kind


def test_typical_run_renders_in_seconds(psa_report):
    """2 problems x 7 estimators x 4 groups x 36 M values, HTML and PDF: seconds of CPU, not minutes
    (about 6 s on the project's 2-core machines; 3 problems take about 8 s)."""
    assert psa_report["cpu_s"] < 40.0


# ---- the CLI over a real store -----------------------------------------------------------------


@pytest.fixture
def store_db(tmp_path, synthetic_run):
    run = synthetic_run(estimators=("psa", "reinforce"), timings=False)
    path = tmp_path / "results.sqlite"
    with Store(path, create=True) as store:
        store.create_run("r20240101-abc", run.manifest, "cafe", preset="smoke")
        for task in run.tasks.to_dict("records"):
            rows = run.scores[run.scores["task_key"] == task["task_key"]].to_dict("records")
            store.write_task("r20240101-abc", task, rows)
        store.create_run("r-empty", {**run.manifest, "run_id": "r-empty", "created_utc": "2023-01-01T00:00:00Z"},
                         "beef")
    return path


def _main(argv, capsys):
    from bench.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr()


def test_cli_report(tmp_path, store_db, capsys):
    out = tmp_path / "rep"
    code, io = _main(["report", "latest", "--db", str(store_db), "--out", str(out), "--format", "html"], capsys)
    assert code == 0, io.err
    assert f"report (html): {out / 'report.html'}" in io.out
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "0123456789abcdef" in html and "failed: CUDA error: out of memory &lt;oops&gt;" in html
    assert not (out / "report.pdf").exists()


@pytest.mark.parametrize("argv, message", [
    (["report", "nope"], "unknown run 'nope'"),
    (["report", "r-empty"], "run r-empty is empty"),
    (["report", "latest", "--format", "docx"], "unknown report format 'docx'"),
    (["report", "latest", "--db", "missing.sqlite"], "does not exist"),
    (["report"], "required"),
])
def test_cli_bad_input(tmp_path, store_db, capsys, argv, message):
    argv = argv + (["--db", str(store_db)] if "--db" not in argv and len(argv) > 1 else [])
    argv = argv + ["--out", str(tmp_path / "x")]
    if "missing.sqlite" in argv:
        argv[argv.index("missing.sqlite")] = str(tmp_path / "missing.sqlite")
    code, io = _main(argv, capsys)
    assert code == 2
    assert len(io.err.strip().splitlines()) == 1 and "Traceback" not in io.err and message in io.err
    assert not (tmp_path / "x").exists()


def test_table_files_keep_the_dots_of_problem_specs(tmp_path, synthetic_run):
    """Two problems that differ after a dot get two sets of table files (no name is cut at the dot)."""
    run = synthetic_run(problems=("random:scale=1.0", "random:scale=1.5"), estimators=("psa",), failed=(),
                        timings=False)
    build_report([run], tmp_path, formats=())
    names = {p.name for p in (tmp_path / "tables").iterdir()}
    assert any("scale_1.0_ranking.csv" in n for n in names) and any("scale_1.5_ranking.csv" in n for n in names)


def test_an_interrupted_report_leaves_the_earlier_one_whole(tmp_path, synthetic_run, monkeypatch):
    """Round seven: Ctrl-C while the PDF was drawn left new tables beside an old report.html, and no
    report.html at all on a first run; the report is now written aside and moved into place at the end."""
    import reports.build as build

    build_report([synthetic_run()], tmp_path, formats=("html",))
    before = {p.name: p.read_bytes() for p in (tmp_path / "tables").iterdir()} | {
        "report.html": (tmp_path / "report.html").read_bytes()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "write_pdf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_report([synthetic_run(seed=1)], tmp_path, formats=("html", "pdf"))  # other numbers
    after = {p.name: p.read_bytes() for p in (tmp_path / "tables").iterdir()} | {
        "report.html": (tmp_path / "report.html").read_bytes()}
    assert after == before and not (tmp_path / "report.pdf").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report-")] == []
