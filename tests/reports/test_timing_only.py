"""A timing run (no tasks, only timings) renders; a run with neither is refused."""

from __future__ import annotations

import pandas as pd
import pytest

from reports.build import build_report
from reports.results import TASK_COLUMNS, SCORE_COLUMNS, ReportError, RunResults


def _run(timings: pd.DataFrame) -> RunResults:
    return RunResults(manifest={"run_id": "time-1", "git_commit": "abc", "device_name": "cpu"},
                      tasks=pd.DataFrame(columns=list(TASK_COLUMNS)), scores=pd.DataFrame(columns=list(SCORE_COLUMNS)),
                      timings=timings)


def test_timing_only_run_renders(tmp_path):
    timings = pd.DataFrame([dict(kernel="psa-fc", variant="eager", device="cpu", dtype="float32", shape="256x512x512",
                                 unit="terms", items_per_s=2.5e9, median_s=0.0268, iqr_s=0.001, ratio=20.0,
                                 ratio_to="gemm", pct_peak=80.0, peak_kind="reciprocal")])
    paths = build_report([_run(timings)], tmp_path, formats=("html",))
    html = paths["html"].read_text()
    assert "psa-fc" in html and "256x512x512" in html


def test_run_without_tasks_or_timings_is_refused(tmp_path):
    with pytest.raises(ReportError, match="no tasks and no timings"):
        build_report([_run(pd.DataFrame())], tmp_path, formats=("html",))
