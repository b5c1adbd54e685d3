"""The multi-seed, equal-budget study (issue 14): its driver, its statistics and its report."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy import stats

from analysis import study as report
from conftest import ROOT, cli_env
from runners import study as driver

SMALL = ["experiment=study_cpu", "data.size=2000", "model.emb_size=16", "model.hidden_size=16", "train.epochs=1",
         "train.bptt=10", "logger=none", "study.schemes=[naive]", "study.cells=[lstm]", "study.rates=[0.2,0.5]",
         "study.seeds=[1,2]"]


def run_study(tmp_path, cache_dir, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "runners.study", *SMALL, f"paths.output_dir={tmp_path / 'out'}",
           f"paths.cache_dir={cache_dir}", "--jobs", "2", "--no-progress", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)


# --- statistics -------------------------------------------------------------------------


def test_the_interval_and_the_paired_test_are_scipys():
    a = np.array([101.0, 98.5, 103.2, 99.9, 100.4])
    b = np.array([110.0, 108.1, 111.9, 107.0, 112.3])
    low, high = report.t_interval(a)
    assert (low, high) == pytest.approx(stats.t.interval(0.95, 4, loc=a.mean(), scale=stats.sem(a)))
    r = report.paired(pd.Series(a, index=range(1, 6)), pd.Series(b, index=range(1, 6)))
    assert r["diff"] == pytest.approx((a - b).mean())
    assert r["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert (r["pairs"], r["wins"]) == (5, 5)
    s = report.summarise(a)
    assert (s["n"], s["mean"], s["sd"]) == (5, pytest.approx(a.mean()), pytest.approx(a.std(ddof=1)))


def test_pairs_are_matched_by_seed_and_a_diverged_seed_leaves_only_its_pair_out():
    a = pd.Series([100.0, 90.0, 95.0], index=[3, 1, 2])        # seed 4 diverged: absent
    b = pd.Series([99.0, 100.0, 104.0, 120.0], index=[1, 2, 3, 4])
    r = report.paired(a, b)
    assert r["pairs"] == 3
    assert r["diff"] == pytest.approx(np.mean([90 - 99, 95 - 100, 100 - 104]))


def _runs(rows):
    return pd.DataFrame(rows, columns=["scheme", "cell", "dropout", "seed", "status", "best_val_ppl", "test_ppl"])


def test_a_diverged_run_is_counted_as_diverged_and_never_wins():
    rows = []
    for seed in (1, 2, 3):
        rows.append(("none", "gru", 0.5, seed, "finished", 200.0 + seed, 210.0 + seed))
        rows.append(("naive", "gru", 0.4, seed, "finished", 180.0 + seed, 190.0 + seed))
        # the lowest perplexities, but one seed blew up: it cannot be the cell's best
        rows.append(("state_dropout", "gru", 0.1, seed, "finished" if seed < 3 else "diverged",
                     150.0, 150.0 if seed < 3 else None))
    table = report.headline(_runs(rows))
    by_scheme = table.set_index("scheme")
    assert by_scheme.loc["state_dropout", "diverged"] == 1 and by_scheme.loc["state_dropout", "finished"] == 2
    assert by_scheme.loc["naive", "best"] and not by_scheme.loc["state_dropout", "best"]
    md = report.headline_markdown(table)
    assert "2/3 (1 diverged)" in md and "**naive**" in md
    paired = report.paired_table(_runs(rows))
    state_vs_none = paired[(paired.scheme == "state_dropout") & (paired.against == "none")].iloc[0]
    assert state_vs_none.pairs == 2


def test_a_scheme_the_suite_does_not_ship_is_in_the_tables_and_the_rate_figure(tmp_path):
    """Issue 16: a new registry scheme needs no change in the study's report: its rows follow the
    shipped schemes in the paired table, and the rate figure draws it in the reports' colour for it."""
    from analysis.plotting import SCHEME_COLOURS, scheme_colour

    new = "a_brand_new"  # sorts before every shipped name: coming after them is the order rule, not the alphabet
    rows, trials = [], []
    for seed in (1, 2, 3):
        rows.append(("none", "gru", 0.5, seed, "finished", 200.0 + seed, 210.0 + seed))
        rows.append(("naive", "gru", 0.4, seed, "finished", 180.0 + seed, 190.0 + seed))
        rows.append((new, "gru", 0.2, seed, "finished", 170.0 + seed, 185.0 - seed))
    for scheme, base in (("naive", 180.0), (new, 170.0)):
        for rate in (0.2, 0.4):
            trials.append((scheme, "gru", rate, 0, "finished", base + 10 * rate, None))
    runs = _runs(rows)
    head = report.headline(runs)
    assert head.scheme.tolist() == [new, "naive", "none"]  # best first: the new scheme wins here
    assert head.set_index("scheme").loc[new, "best"]
    paired = report.paired_table(runs)
    assert paired[["scheme", "against"]].values.tolist() == [["naive", "none"], ["naive", new], [new, "none"]]
    assert f"| gru | **{new}** |" in report.render_tables(runs)["headline.md"]

    paths = report.rate_figure(_runs(trials), runs, tmp_path)
    svg = next(p for p in paths if p.suffix == ".svg").read_text()
    colour = scheme_colour(new)
    assert colour not in SCHEME_COLOURS.values() and colour in svg and new in svg


# --- the driver -------------------------------------------------------------------------


def test_a_configuration_without_a_study_or_with_a_bad_one_is_one_line(tmp_path):
    for args, expected in ((["experiment=zaremba_small"], "defines no study; choose a preset that does: "
                                                          "experiment=study_cpu"),
                           (["experiment=study_cpu", "study.rates=[0.2,1.5]"], "study.rates must be"),
                           (["experiment=study_cpu", "study.schemes=[nope]"], "study.schemes has 'nope'; choose from"),
                           (["experiment=study_cpu", "study.seeds=[0,1]"], "without study.tuning_seed")):
        proc = subprocess.run([sys.executable, "-m", "runners.study", *args], cwd=ROOT, env=cli_env(tmp_path),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().startswith("error: ") and expected in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (ROOT / "outputs" / "studies" / "nope").exists()


@pytest.mark.parametrize("preset", ["study_cpu", "study_ptb_medium"])
def test_a_study_compares_every_registry_scheme_unless_it_lists_its_own(preset):
    """Issue 16: the presets list no schemes, so a scheme added to the registry joins the study."""
    from benchmark.engine import SCHEMES

    spec = driver.StudySpec.from_config(driver.compose([f"experiment={preset}"]))
    assert spec.schemes == tuple(s for s in SCHEMES if s != "none") == driver.default_schemes()
    mine = driver.StudySpec.from_config(driver.compose([f"experiment={preset}", "study.schemes=[moon,naive]"]))
    assert mine.schemes == ("moon", "naive")


@pytest.mark.slow
def test_one_command_tunes_reruns_the_best_rate_with_seeds_reports_and_resumes(tmp_path, cache_dir):
    proc = run_study(tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "out" / "studies" / "study_cpu"

    # The search: every grid rate once, in a resumable SQLite study, seed 0.
    trials = driver.finished_trials(root / "tune" / "naive-lstm", "naive", "lstm")
    assert sorted(t.params["dropout"] for t in trials) == [0.2, 0.5]
    summaries = [json.loads(p.read_text()) for p in (root / "tune" / "naive-lstm").glob("*/summary.json")]
    assert sorted(s["seed"] for s in summaries) == [0, 0]
    best = min(summaries, key=lambda s: s["best_val_ppl"])

    # The seeded runs: none and the best rate, seeds 1 and 2.
    seeded = {(s["scheme"], s["seed"]): s for s in
              (json.loads(p.read_text()) for p in (root / "seeds").glob("*/*/summary.json"))}
    assert set(seeded) == {("none", 1), ("none", 2), ("naive", 1), ("naive", 2)}
    assert seeded[("naive", 1)]["dropout"] == best["dropout"]

    # The report.
    out = root / "report"
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4 and set(runs.status) == {"finished"}
    assert (out / "ppl_vs_rate.png").stat().st_size > 0 and (out / "ppl_vs_rate.pdf").is_file()
    assert "\\toprule" in (out / "headline.tex").read_text()
    record = json.loads((root / "study.json").read_text())
    assert record["machine"]["vector"] and record["wall_s"] > 0 and record["invocations"] == 1

    # Interrupted: one seeded run lost. The same command redoes that run alone, with the same
    # result (a seed fixes it), and asks the finished search for nothing.
    lost = next((root / "seeds" / "naive-lstm").glob("*-s2"))
    before = json.loads((lost / "summary.json").read_text())
    import shutil

    shutil.rmtree(lost)
    proc = run_study(tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((lost / "summary.json").read_text())
    assert again["test_ppl"] == pytest.approx(before["test_ppl"], rel=1e-6)
    assert len(driver.finished_trials(root / "tune" / "naive-lstm", "naive", "lstm")) == 2
    log = (root / "logs" / "tune-naive-lstm.log").read_text()
    assert log.count("$ python run.py") == 1  # the search did not run again
    assert json.loads((root / "study.json").read_text())["invocations"] == 2


def test_an_interrupted_trial_is_asked_again(tmp_path):
    """A trial left RUNNING by an interruption has no result: the resumed search counts it as to do."""
    sweep = tmp_path / "tune" / "naive-lstm"
    sweep.mkdir(parents=True)
    study = optuna.create_study(study_name=driver.study_name("naive", "lstm"), storage=driver.storage_url(sweep))
    done = study.ask()
    done.suggest_categorical("dropout", [0.2, 0.5])
    study.tell(done, 123.0)
    study.ask()  # interrupted: never told
    assert len(driver.finished_trials(sweep, "naive", "lstm")) == 1
    spec = driver.StudySpec("s", ("naive",), ("lstm",), (0.2, 0.5), 0, (1, 2))
    task = driver.Task("tune", "naive", "lstm", sweep)
    assert "hydra.sweeper.n_trials=1" in driver.command(task, spec, [], 1)


# --- the published results --------------------------------------------------------------


def test_a_number_edited_by_hand_is_caught(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    rows = [("none", "lstm", 0.5, s, "finished", 150.0 + s, 160.0 + s) for s in (1, 2, 3)]
    rows += [("naive", "lstm", 0.4, s, "finished", 140.0 + s, 150.0 + 2 * s) for s in (1, 2, 3)]
    _runs(rows).to_csv(results / "runs.csv", index=False)
    pd.DataFrame([{"scheme": "naive", "cell": "lstm", "dropout": 0.4, "seed": 0, "status": "finished",
                   "best_val_ppl": 141.0}]).to_csv(results / "trials.csv", index=False)
    record = {"name": "demo", "study": {"rates": [0.4], "seeds": [1, 2, 3], "tuning_seed": 0},
              "command": "python -m runners.study experiment=demo", "jobs": 2, "wall_s": 60.0,
              "machine": {"cpu": "cpu", "vector": "AVX2", "cores": 2, "torch": "2", "device": "cpu"}}
    (results / "study.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- demo:headline -->\nold\n<!-- /demo:headline -->\nrest\n"
                      "<!-- demo:paired -->\n<!-- /demo:paired -->\n")
    report.render(results, readme)
    assert report.check(results, readme) == []
    assert "rest" in readme.read_text() and "old" not in readme.read_text()

    page = (results / "README.md").read_text()
    (results / "README.md").write_text(page.replace("154.0 ± 2.0", "153.0 ± 2.0"))
    assert report.check(results, readme) == ["README.md"]
    (results / "README.md").write_text(page)
    table = (results / "headline.md").read_text()
    (results / "headline.md").write_text(table.replace("154.0 ± 2.0", "153.0 ± 2.0"))
    assert report.check(results, readme) == ["headline.md"]
    readme.write_text(readme.read_text().replace("162.0 ± 1.0", "160.0 ± 1.0"))
    assert report.check(results, readme) == ["headline.md", str(readme)]
