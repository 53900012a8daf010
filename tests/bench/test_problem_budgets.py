"""A problem's own budget (``problem_budgets``): the sweep's draws and Monte Carlo reference budget, replaced for
single problems (``bench/config.py``, ``docs/monte-carlo.md#budget``)."""

from __future__ import annotations

import pytest

from bench.config import SWEEP_PRESETS, SweepConfig, load_toml
from estimators.errors import InputError

SMALL = "random:widths=2-3-3,points=4,seed=1"
OTHER = "random:widths=2-3-3,points=4,seed=2"


def _cfg(**kw):
    base = dict(problems=(SMALL, OTHER), estimators=("st",), draws=64, reference_seconds=240.0,
                reference_precision=0.02)
    return SweepConfig(**{**base, **kw})


def test_for_problem_replaces_the_sweeps_values_key_by_key():
    c = _cfg(problem_budgets={OTHER: {"draws": 256, "reference_seconds": 480}})
    assert (c.for_problem(SMALL).draws, c.for_problem(SMALL).reference_budget()) == \
        (64, {"seconds": 240.0, "precision": 0.02})
    assert (c.for_problem(OTHER).draws, c.for_problem(OTHER).reference_budget()) == \
        (256, {"seconds": 480.0, "precision": 0.02})  # seconds replaced, the sweep's precision kept
    assert c.for_problem(OTHER).problem_budgets == {}
    # a number of reference draws replaces the time budget and, being exact, its early end
    assert _cfg(problem_budgets={OTHER: {"reference_draws": 100}}).for_problem(OTHER).reference_budget() \
        == {"draws": 100}
    assert _cfg(problem_budgets={OTHER: {"reference_precision": 0.1}}).for_problem(OTHER).reference_budget() \
        == {"seconds": 240.0, "precision": 0.1}
    seconds_only = SweepConfig(problems=(SMALL,), estimators=("st",), reference_draws=64,
                               problem_budgets={SMALL: {"reference_seconds": 5.0}})
    assert seconds_only.for_problem(SMALL).reference_budget() == {"seconds": 5.0}


def test_run_identity_is_unchanged_without_budgets_and_changes_with_them():
    plain = _cfg()
    assert "problem_budgets" not in plain.as_dict()  # absent unless set: run identities planned before it stay
    one = _cfg(problem_budgets={OTHER: {"draws": 256}})
    assert one.as_dict()["problem_budgets"] == {OTHER: {"draws": 256}} and one.hash != plain.hash
    assert _cfg(problem_budgets={OTHER: {"draws": 128}}).hash != one.hash


@pytest.mark.parametrize("budgets, message", [
    ({"psa-2-5-5-5": {"draws": 100}}, "names 'psa-2-5-5-5', which is not a problem of the sweep"),
    ({OTHER: {}}, "must be a non-empty table"),
    ({OTHER: 5}, "must be a non-empty table"),
    ({OTHER: {"seed": 3}}, "unknown key 'seed'"),
    ({OTHER: {"draws": 2.5}}, "'draws' has the wrong type (float)"),
    ({OTHER: {"draws": True}}, "'draws' has the wrong type (bool)"),
    ({OTHER: {"reference_seconds": "long"}}, "'reference_seconds' has the wrong type (str)"),
    ({OTHER: {"draws": 1}}, f"problem_budgets for {OTHER!r}: draws (N) must be at least 2"),
    ({OTHER: {"reference_draws": 10}}, "reference draws must be at least 32"),
    ({OTHER: {"reference_precision": 1.5}}, "from 1e-6 to below 1; got 1.5"),
    ({OTHER: {"reference_seconds": 1e9}}, "reference seconds must be at most 86400"),
    ({OTHER: {"reference_draws": 64, "reference_seconds": 5}}, "either reference_draws or reference_seconds"),
    ({OTHER: {"draws": 32}}, "M = 64 exceeds the number of draws N = 32"),  # the sweep's grid goes up to 64
])
def test_bad_budgets_are_one_line_errors(budgets, message):
    with pytest.raises(InputError) as err:
        _cfg(grid=(1, 64), problem_budgets=budgets)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_precision_without_seconds_in_a_budget_is_refused():
    with pytest.raises(InputError, match="give reference seconds too"):
        SweepConfig(problems=(SMALL,), estimators=("st",), problem_budgets={SMALL: {"reference_precision": 0.1}})


def test_toml_tables_load_and_are_checked(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(f'problems = ["{SMALL}", "{OTHER}"]\nestimators = ["st"]\nreference_seconds = 30\n\n'
                 f'[problem_budgets."{OTHER}"]\ndraws = 128\nreference_seconds = 60\n')
    c = SweepConfig(**load_toml(str(f)))
    assert c.for_problem(OTHER).draws == 128 and c.for_problem(OTHER).reference_budget() == {"seconds": 60.0}
    assert c.for_problem(SMALL).draws == 2000
    f.write_text(f'problems = ["{SMALL}"]\nestimators = ["st"]\nproblem_budgets = ["{SMALL}"]\n')
    with pytest.raises(InputError, match="key 'problem_budgets' has the wrong type"):
        load_toml(str(f))
    f.write_text(f'problems = ["{SMALL}"]\nestimators = ["st"]\n[problem_budgets."{SMALL}"]\ndraws = "many"\n')
    with pytest.raises(InputError, match="'draws' has the wrong type"):
        SweepConfig(**load_toml(str(f)))


def _build(argv):
    from bench.cli import build_parser
    from bench.commands.run import build_config

    return build_config(build_parser().parse_args(["run"] + argv))


DEEP = next(p for p in SWEEP_PRESETS["scaling-large"]["problems"] if p.count("-64") == 8)


def test_scaling_large_gives_its_depth_eight_network_its_own_budget():
    c = _build(["--preset", "scaling-large"])
    deep, other = c.for_problem(DEEP), c.for_problem(c.problems[0])
    assert deep.draws > other.draws and deep.reference_budget()["seconds"] > other.reference_budget()["seconds"]
    assert deep.reference_budget()["precision"] == other.reference_budget()["precision"]


def test_flags_set_their_value_for_every_problem_and_budgets_follow_their_problems():
    c = _build(["--preset", "scaling-large", "--draws", "100"])  # -N is for every problem: the preset's go
    assert {c.for_problem(p).draws for p in c.problems} == {100}
    c = _build(["--preset", "scaling-large", "--reference-seconds", "30"])
    assert {c.for_problem(p).reference_budget()["seconds"] for p in c.problems} == {30.0}
    assert c.for_problem(DEEP).draws > c.draws  # the other key of its budget stays
    c = _build(["--preset", "scaling-large", "--reference-draws", "64"])
    assert {tuple(c.for_problem(p).reference_budget().items()) for p in c.problems} == {(("draws", 64),)}
    c = _build(["--preset", "scaling-large", "--reference-precision", "0.1"])
    assert c.for_problem(DEEP).reference_budget() == {"seconds": SWEEP_PRESETS["scaling-large"]["problem_budgets"][DEEP]
                                                      ["reference_seconds"], "precision": 0.1}
    assert _build(["--preset", "scaling-large", "--problem", SMALL]).problem_budgets == {}
    kept = _build(["--preset", "scaling-large", "--problem", SMALL, "--problem", DEEP])
    assert list(kept.problem_budgets) == [DEEP]


def test_a_config_files_budgets_for_problems_a_flag_replaced_are_noted(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text(f'problems = ["{SMALL}"]\nestimators = ["st"]\n[problem_budgets."{SMALL}"]\ndraws = 128\n')
    c = _build(["--config", str(f), "--problem", OTHER])
    assert c.problem_budgets == {} and "problem_budgets of 1 problem(s) not in this sweep have no effect" \
        in capsys.readouterr().err
    # a file that names no problems of its own may give budgets for the problems the flags name
    f.write_text(f'estimators = ["st"]\n[problem_budgets."{SMALL}"]\ndraws = 128\n')
    assert _build(["--config", str(f), "--problem", SMALL]).for_problem(SMALL).draws == 128


def test_a_sweep_runs_each_problem_with_its_own_budget_and_resumes(tmp_path, capsys):
    from bench.cli import main
    from bench.store import Store

    db = str(tmp_path / "r.sqlite")
    f = tmp_path / "s.toml"
    f.write_text(f'problems = ["{SMALL}", "{OTHER}"]\nestimators = ["st", "psa"]\ndraws = 64\nreference = "mc"\n'
                 f'reference_draws = 64\ncost_time = 0\n[problem_budgets."{OTHER}"]\ndraws = 96\n'
                 f'reference_draws = 128\n')
    argv = ["run", "--config", str(f), "--db", db, "--no-report"]
    assert main(argv) == 0
    with Store(db) as st:
        (run_id,) = list(st.runs()["run_id"])
        tasks = st.tasks(run_id)
    draws = {(t.problem, t.estimator): t.draws for t in tasks.itertuples()}
    assert draws == {(SMALL, "st"): 64, (SMALL, "psa"): 64, (OTHER, "st"): 96, (OTHER, "psa"): 96}
    refs = {t.problem: t.facts["reference"] for t in tasks.itertuples()}
    assert refs[SMALL]["budget"]["draws"] == 64 and refs[OTHER]["budget"]["draws"] == 128
    assert refs[OTHER]["draws"] >= 128
    capsys.readouterr()
    assert main(argv) == 0  # the same sweep again: every task is found in the store
    assert "4 tasks, 4 already stored, 0 computed" in capsys.readouterr().out


def _refused(tmp_path, capsys, problem: str, budget: str, message: str) -> None:
    """A Monte Carlo sweep of SMALL and ``problem``, whose own budget is ``budget`` (TOML lines), is refused with
    one line holding ``message`` and writes no store."""
    from bench.cli import main

    f = tmp_path / "s.toml"
    f.write_text(f'problems = ["{SMALL}", "{problem}"]\nestimators = ["st"]\ndraws = 64\nreference = "mc"\n'
                 f'[problem_budgets."{problem}"]\n{budget}\n')
    db = tmp_path / "r.sqlite"
    assert main(["run", "--config", str(f), "--db", str(db), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert message in err and not db.exists()


def test_too_few_draws_for_a_monte_carlo_problem_name_it(tmp_path, capsys):
    _refused(tmp_path, capsys, OTHER, "draws = 16",
             f"16 draws per task of {OTHER}: a Monte Carlo score needs at least 32")


def test_reference_draws_of_one_problem_that_cannot_finish_are_refused(tmp_path, capsys):
    _refused(tmp_path, capsys, "random:widths=16-128-128-128,points=16,init=fanin", "reference_draws = 1000000000",
             "1000000000 reference draws per problem could need up to")


def test_a_budget_of_an_exactly_scored_problem_is_noted(tmp_path, capsys):
    from bench.cli import main

    f = tmp_path / "s.toml"
    f.write_text(f'problems = ["{SMALL}"]\nestimators = ["st"]\ndraws = 64\ncost_time = 0\n'
                 f'[problem_budgets."{SMALL}"]\nreference_draws = 64\n')
    assert main(["run", "--config", str(f), "--db", str(tmp_path / "r.sqlite"), "--no-report"]) == 0
    assert f"problem {SMALL}: its own reference budget has no effect" in capsys.readouterr().err


def test_the_documented_sweep_files_load_with_their_budgets():
    """The TOML sweeps shown in the README and in docs/monte-carlo.md are valid and give the problem named in
    their ``problem_budgets`` table its own draws."""
    import re
    import textwrap
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = 0
    for doc in ("README.md", "docs/monte-carlo.md"):
        for block in re.findall(r"^( *)```toml\n(.*?)^\1```", (root / doc).read_text(), re.S | re.M):
            data = tomllib.loads(textwrap.dedent(block[1]))
            if "problem_budgets" not in data:
                continue
            c = SweepConfig(**data)
            for spec, own in c.problem_budgets.items():
                assert c.for_problem(spec).draws == own["draws"] != c.draws
            found += 1
    assert found == 2


def test_a_file_with_budgets_but_no_problems_is_one_line(tmp_path, capsys):
    from bench.cli import main

    f = tmp_path / "s.toml"
    f.write_text(f'estimators = ["st"]\n[problem_budgets."{SMALL}"]\ndraws = 128\n')
    assert main(["run", "--config", str(f), "--db", str(tmp_path / "r.sqlite"), "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the sweep has no problems" in err[0], err
