"""Figures per problem: estimators split into readable figures, the PSA paper's methods first in psa2020 runs."""

from __future__ import annotations

import re

from reports import build_report, plots
from reports.paper_values import METHOD_SPECS

EXTRA = ("disarm", "muprop", "adf", "st-tanh", "local-expectation")


def test_few_estimators_share_one_figure(synthetic_run):
    run = synthetic_run()
    assert plots.estimator_groups(run, "toy-a") == [("", ["psa", "st", "reinforce", "tanh"])]


def test_many_estimators_are_split_in_run_order(synthetic_run):
    names = tuple(f"est{i}" for i in range(plots.ESTIMATORS_PER_FIGURE + 3))
    run = synthetic_run(problems=("toy-a",), estimators=names, failed=(("toy-a", "est9", "boom"),), timings=False)
    groups = plots.estimator_groups(run, "toy-a")
    half = (len(names) + 1) // 2  # 11 in two figures: 6 and 5, not 8 and 3
    assert [g[1] for g in groups] == [list(names[:half]), list(names[half:])]
    assert [g[0] for g in groups] == ["estimators (1 of 2)", "estimators (2 of 2)"]


def test_no_figure_holds_a_lone_estimator():
    n = plots.ESTIMATORS_PER_FIGURE
    for count in range(1, 4 * n + 2):
        chunks = plots.balanced_chunks(list(range(count)), n)
        assert sum(chunks, []) == list(range(count))  # all, in order
        assert max(map(len, chunks)) <= n and max(map(len, chunks)) - min(map(len, chunks)) <= 1
        assert count == 1 or min(map(len, chunks)) >= 2, (count, chunks)
    assert [len(c) for c in plots.balanced_chunks(list(range(17)), n)] == [6, 6, 5]  # was 8, 8, 1 (tanh alone)


def test_psa2020_run_shows_the_papers_methods_first_in_legend_order(synthetic_run, tmp_path):
    paper = list(METHOD_SPECS.values())
    shuffled = tuple(reversed(paper))
    ests = shuffled[:3] + EXTRA + shuffled[3:]
    ests = tuple("concrete:tau=1.0" if e == "concrete" else e for e in ests)  # the same method, spelled out
    run = synthetic_run(problems=("psa-2-5-5-5@chk-100",), estimators=ests, failed=(), timings=False,
                        manifest={**synthetic_run().manifest, "run_id": "r-p", "preset": "psa2020"})
    groups = plots.estimator_groups(run, "psa-2-5-5-5@chk-100")
    assert groups[0] == ("the PSA paper's methods", ["concrete:tau=1.0" if e == "concrete" else e for e in paper])
    assert groups[1] == ("other estimators", list(EXTRA))
    out = build_report([run], tmp_path, formats=("html",))
    html = out["html"].read_text(encoding="utf-8")
    figs = set(re.findall(r'id="(f-r-p_psa-2-5-5-5_chk-100_layers0_est\d)"', html))
    assert figs == {"f-r-p_psa-2-5-5-5_chk-100_layers0_est0", "f-r-p_psa-2-5-5-5_chk-100_layers0_est1"}
    fig = plots.layer_figure(run, "psa-2-5-5-5@chk-100", ["layer0"], plots.styles(run), only=groups[1][1],
                             title=groups[1][0])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert set(EXTRA) <= set(legend) and not set(paper) & set(legend)
    assert fig._suptitle.get_text().endswith("other estimators")
    fig = plots.layer_figure(run, "psa-2-5-5-5@chk-100", ["layer0"], plots.styles(run), only=groups[0][1])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [lab for lab in legend if lab in groups[0][1]] == groups[0][1]  # the paper's legend order


def test_monte_carlo_runs_plot_their_mean_square_cosine(synthetic_run):
    """A Monte Carlo score has ``cos_ms`` (the mean cosine has no unbiased estimate without g); its cosine
    panels showed "no data"."""
    run = synthetic_run(problems=("toy-a",), failed=(), timings=False)
    exact_fig = plots.layer_figure(run, "toy-a", ["layer0"], plots.styles(run))
    run.scores = run.scores.assign(metric=run.scores["metric"].replace({"cos_mean": "cos_ms"}))
    fig = plots.layer_figure(run, "toy-a", ["layer0"], plots.styles(run))
    bottom = fig.axes[1]
    assert bottom.get_ylabel() == "mean-square cosine (Monte Carlo)" and len(bottom.lines) == len(exact_fig.axes[1].lines) > 0
    assert exact_fig.axes[1].get_ylabel() == "cosine to true gradient"
