"""The fair study (issue 22): its statistics against hand-checked cases, its tables, its driver.

Statistics: the exact sign-flip test and Holm's adjustment against small cases worked out by
hand; the best scheme is chosen on validation even where test says otherwise. Tables: rates as
given, p as ``<0.001`` or three significant digits, readable headers, a check that catches an
edited number. Driver: the two-rate grid, every setting, resumable, one command.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy import stats

from analysis import stats as st
from analysis import publish
from analysis import study_tables as tables
from conftest import ROOT, cli_env
from runners import study as driver
from runners import study_spec, study_trials

SMALL = ["experiment=study_cpu", "data.size=2000", "model.emb_size=16", "model.hidden_size=16", "train.epochs=1",
         "train.bptt=10", "logger=none", "study.schemes=[naive,moon]", "study.cells=[lstm]", "study.rates_ff=[0.2,0.5]",
         "study.rates_rec=[0.3]", "study.seeds=[1,2]", "study.mc_samples=2", "~study.settings",
         '+study.settings={small:[],deep:["model.num_layers=2"]}']


def run_study(tmp_path, cache_dir, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "runners.study", *SMALL, f"paths.output_dir={tmp_path / 'out'}",
           f"paths.cache_dir={cache_dir}", "--jobs", "2", "--no-progress", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)


# --- statistics: hand-checked cases ------------------------------------------------------


def test_the_sign_flip_test_is_exact_on_cases_worked_by_hand():
    # d = 1, 2, 3: of the 8 sign assignments only all-plus and all-minus reach |mean| >= 2
    assert st.sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    # |d| = 1, 2, 3, 4 with observed sum 6: flipping a subset S gives 10 - 2 sum(S); |.| >= 6 for
    # sum(S) <= 2 ({}, {1}, {2}) or >= 8 ({1,3,4}, {2,3,4}, {1,2,3,4}): 6 of 16
    assert st.sign_flip_p([1.0, -2.0, 3.0, 4.0]) == pytest.approx(6 / 16)
    # 12 seeds all won: the smallest two-sided p the test can give, 2 / 2^12
    assert st.sign_flip_p(np.arange(1.0, 13.0)) == pytest.approx(2 / 4096)
    assert math.isnan(st.sign_flip_p([0.0, 0.0, 0.0]))


def test_holm_on_a_case_worked_by_hand_and_nan_outside_the_family():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.06
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = st.holm([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)


def test_paired_gives_scipys_t_test_the_exact_test_and_wins():
    a = np.array([101.0, 98.5, 103.2, 99.9, 100.4])
    b = np.array([110.0, 108.1, 111.9, 107.0, 112.3])
    r = st.paired(pd.Series(a, index=range(1, 6)), pd.Series(b, index=range(1, 6)))
    assert r["diff"] == pytest.approx((a - b).mean())
    assert r["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert r["p_exact"] == pytest.approx(2 / 32)  # won on every seed: the exact test's floor at n = 5
    assert (r["diff_low"], r["diff_high"]) == pytest.approx(stats.t.interval(0.95, 4, loc=(a - b).mean(),
                                                                             scale=stats.sem(a - b)))
    assert (r["pairs"], r["wins"]) == (5, 5)


def test_pairs_are_matched_by_seed_and_a_diverged_seed_leaves_only_its_pair_out():
    a = pd.Series([100.0, 90.0, 95.0], index=[3, 1, 2])        # seed 4 diverged: absent
    b = pd.Series([99.0, 100.0, 104.0, 120.0], index=[1, 2, 3, 4])
    r = st.paired(a, b)
    assert r["pairs"] == 3 and r["diff"] == pytest.approx(np.mean([90 - 99, 95 - 100, 100 - 104]))


def test_kendall_tau_is_scipys():
    assert st.kendall_tau([1, 2, 3, 4], [1, 2, 3, 4])[0] == pytest.approx(1.0)
    assert st.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1])[0] == pytest.approx(-1.0)


# --- tables -----------------------------------------------------------------------------

SEEDS = range(1, 9)


def _runs(spec: dict[tuple[str, str, str], tuple[float, float, float, float]], settings=("small",)) -> pd.DataFrame:
    """``{(setting, cell, scheme): (val, test, step, rate_ff)}``: val + seed, test + step * seed."""
    rows = []
    for setting in settings:
        for (s, cell, scheme), (val, test, step, rate_ff) in spec.items():
            if s != setting:
                continue
            for seed in SEEDS:
                rows.append({"setting": setting, "scheme": scheme, "cell": cell, "seed": seed, "status": "finished",
                             "rate_ff": rate_ff if scheme != "none" else math.nan,
                             "rate_rec": 0.3 if scheme not in ("none", "naive") else math.nan,
                             "best_val_ppl": val + seed, "test_ppl": test + step * seed,
                             "mc_test_ppl": (test + step * seed - 1.0) if scheme != "none" else math.nan})
    return pd.DataFrame(rows, columns=tables.RUN_COLUMNS)


def test_the_best_scheme_is_chosen_on_validation_never_on_test():
    # moon has the lowest test perplexity, variational the lowest validation perplexity
    runs = _runs({("small", "lstm", "none"): (200, 210, 1, 0), ("small", "lstm", "naive"): (150, 160, 1, 0.5),
                  ("small", "lstm", "variational"): (140, 155, 1, 0.3), ("small", "lstm", "moon"): (145, 150, 1, 0.3)})
    assert tables.best_on_validation(runs) == {("small", "lstm"): "variational"}
    head = tables.headline(runs)
    assert head.scheme.tolist()[0] == "moon"  # ranked by test ...
    assert head.set_index("scheme").best_on_val.to_dict() == {"moon": False, "variational": True, "naive": False,
                                                              "none": False}  # ... chosen on validation
    pairs = tables.paired_table(runs)
    assert set(pairs[pairs.why == "best"].against) == {"variational"}
    assert "| small | lstm | **variational** |" in tables.render_tables(runs)["headline.md"]


def test_holm_runs_over_each_settings_family_and_claims_use_it():
    spec = {}
    for setting in ("small", "deep"):
        spec.update({(setting, "lstm", "none"): (200, 210, 1, 0), (setting, "lstm", "naive"): (150, 160, 1, 0.5),
                     (setting, "lstm", "variational"): (140, 150, 1, 0.3)})
    runs = _runs(spec, settings=("small", "deep"))
    runs.loc[(runs.setting == "deep") & (runs.scheme == "variational") & (runs.seed == 3), "test_ppl"] += 25.0
    pairs = tables.paired_table(runs)
    for setting, family in pairs.groupby("setting"):
        assert family.p_holm.tolist() == pytest.approx(st.holm(family.p_exact.tolist()))
    small = pairs[pairs.setting == "small"].set_index(["scheme", "against"])
    # three comparisons, each won on all 8 seeds: exact p 2/256, Holm x3
    assert small.loc[("variational", "naive"), "p_holm"] == pytest.approx(3 * 2 / 256)
    alive = tables.survival(pairs).set_index(["scheme", "against"])
    assert alive.loc[("naive", "none"), "holds"]
    assert not alive.loc[("variational", "naive"), "holds"]  # one lost seed in `deep` breaks it there
    assert alive.loc[("variational", "naive"), "verdict_small"] == "better"


def test_rank_stability_is_kendalls_tau_between_the_settings_rankings():
    spec = {}
    for setting, order in (("small", (150, 160, 170)), ("deep", (170, 160, 150))):
        for scheme, test in zip(("naive", "variational", "moon"), order):
            spec[(setting, "gru", scheme)] = (test, test, 0.5, 0.3)
    ranks = tables.rank_stability(_runs(spec, settings=("small", "deep")))
    assert ranks.kendall_tau.tolist() == pytest.approx([-1.0])
    assert ranks.iloc[0]["ranking_small"] == "naive < variational < moon"


def test_formats_rates_as_given_p_values_and_readable_latex():
    runs = _runs({("small", "lstm", "none"): (200, 210, 1, 0), ("small", "lstm", "naive"): (150, 160, 1, 0.55),
                  ("small", "lstm", "moon"): (160, 170, 2, 0.25)})
    files = tables.render_tables(runs, {"ff": [0.25, 0.4, 0.55], "rec": [0.1, 0.3, 0.5]})
    assert "| 0.55† |" in files["headline.md"] and "| 0.25† |" in files["headline.md"]  # on the grid's ends
    assert "| 0.3 |" in files["headline.md"]  # rec 0.3: inside the grid
    assert tables.render_tables(runs)["headline.md"].count("†") == 0
    assert " 0.55$^\\dagger$ & " in files["headline.tex"] and "0.6" not in files["headline.tex"]
    assert "\\toprule" in files["paired.tex"] and "p (Holm)" in files["paired.tex"] and "_" not in files["paired.tex"]
    assert "$\\pm$" in files["headline.tex"] and "±" not in files["headline.tex"]
    assert "$<$0.001" in files["paired.tex"] and "<0.001" not in files["paired.tex"].replace("$<$", "")
    assert tables.fmt_p(0.000311) == "<0.001" and tables.fmt_p(0.0234567) == "0.0235" and tables.fmt_p(0.15) == "0.150"
    assert {"p_t", "p_exact", "p_holm"} <= set(pd.read_csv(pd.io.common.StringIO(files["paired.csv"])).columns)


def test_group_rates_come_from_the_plan_a_run_ran():
    plan = {"sites": {"x": {"rate": 0.5, "group": "ff"}, "c": {"rate": 0.3, "group": "rec"},
                      "out": {"rate": 0.5, "group": "ff"}}}
    assert tables.group_rates(json.dumps(plan)) == {"rate_ff": 0.5, "rate_rec": 0.3}
    naive = tables.group_rates(json.dumps({"sites": {"x": {"rate": 0.5, "group": "ff"}}}))
    assert naive["rate_ff"] == 0.5 and math.isnan(naive["rate_rec"])
    assert all(math.isnan(v) for v in tables.group_rates(json.dumps({"sites": {}})).values())


def _publish(tmp_path, runs: pd.DataFrame):
    results = tmp_path / "demo"  # its README blocks are demo:answer and demo:headline
    results.mkdir()
    runs.to_csv(results / "runs.csv", index=False)
    pd.DataFrame([{"scheme": "naive", "cell": "lstm", "seed": 0, "status": "finished", "rate_ff": 0.5,
                   "rate_rec": math.nan, "best_val_ppl": 151.0}]).to_csv(results / "trials.csv", index=False)
    record = {"name": "demo", "command": "python -m runners.study experiment=demo", "jobs": 2, "wall_s": 600.0,
              "study": {"rates_ff": [0.3, 0.5], "rates_rec": [0.1, 0.3], "seeds": list(SEEDS), "tuning_seed": 0,
                        "settings": {"small": [], "deep": ["model.num_layers=2"]}, "mc_samples": 10},
              "scope": {"small": "1 x 16", "deep": "2 x 16"},
              "machine": {"cpu": "Intel Xeon", "vector": "AVX2", "cores": 2, "torch": "2", "device": "cpu"}}
    (results / "study.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- demo:answer -->\nSTALE TEXT\n<!-- /demo:answer -->\nmiddle\n"
                      "<!-- demo:headline -->\n<!-- /demo:headline -->\nrest\n")
    return results, readme


def test_the_answer_is_written_from_the_tables_with_the_papers_verdicts(tmp_path):
    spec = {}
    for setting in ("small", "deep"):
        spec.update({(setting, "lstm", "none"): (200, 210, 1, 0), (setting, "lstm", "naive"): (150, 160, 1, 0.5),
                     (setting, "lstm", "variational"): (140, 150, 1, 0.3),
                     (setting, "lstm", "semeniuta"): (155, 165, 1, 0.3)})
    results, readme = _publish(tmp_path, _runs(spec, settings=("small", "deep")))
    publish.publish(results, readme)
    text = readme.read_text()
    assert "STALE TEXT" not in text and text.startswith("intro") and "rest" in text
    answer = text.split("<!-- demo:answer -->")[1].split("<!-- /demo:answer -->")[0]
    assert "Measured on `small`: 1 x 16; `deep`: 2 x 16." in answer and "Intel Xeon" in answer
    assert "best on validation **`variational`**" in answer
    gal = next(line for line in answer.splitlines() if line.startswith("- Gal & Ghahramani (2016), PTB: variational"))
    assert gal.count("**agrees**") == 2 and "-10.0 [-10.0, -10.0]" in gal
    semeniuta = next(line for line in answer.splitlines() if line.startswith("- Semeniuta"))
    assert semeniuta.count("**disagrees**") == 2
    assert "lower perplexity for `naive` LSTM in `small` (-1.0)" in answer  # MC, every seed 1.0 lower
    lead = answer.strip().splitlines()[0]  # the lead sorts each recurrent part by its verdict in every setting
    assert lead.startswith("**In short**") and "better in every setting for LSTM `variational`" in lead
    assert "worse in every setting for LSTM `semeniuta`" in lead and "2 settings" in lead
    assert "Tuned on the end of the grid (†)" in answer and "LSTM `naive` ff 0.5" in answer  # 0.5 ends [0.3, 0.5]
    assert publish.check(results, readme) == []


def test_a_number_edited_by_hand_is_caught(tmp_path):
    runs = _runs({("small", "lstm", "none"): (200, 210, 1, 0), ("small", "lstm", "naive"): (150, 160, 2, 0.5)})
    results, readme = _publish(tmp_path, runs)
    publish.publish(results, readme)
    assert publish.check(results, readme) == []
    mean = f"{160 + 2 * np.mean(list(SEEDS)):.1f}"
    for path in (results / "headline.md", results / "README.md", results / "headline.tex", readme):
        original = path.read_text()
        assert mean in original
        path.write_text(original.replace(mean, "150.0"))
        assert [line.split(" differs")[0] for line in publish.check(results, readme)] == [str(path)]
        path.write_text(original)
    (results / "seeds.png").unlink()
    assert publish.check(results, readme) == [f"{results / 'seeds.png'} is missing; write it again with "
                                              f"python -m analysis.publish {results} --readme {readme}"]


def test_a_one_rate_study_is_refused_in_one_line(tmp_path):
    results, readme = _publish(tmp_path, _runs({("small", "lstm", "none"): (200, 210, 1, 0)}))
    runs = pd.read_csv(results / "runs.csv")
    runs.drop(columns="setting").to_csv(results / "runs.csv", index=False)  # issue 14's design had no settings
    proc = subprocess.run([sys.executable, "-m", "analysis.publish", str(results), "--check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "one-rate study" in proc.stderr


# --- the driver -------------------------------------------------------------------------


def test_a_configuration_without_a_study_or_with_a_bad_one_is_one_line(capsys):
    """In process: the driver's ``main`` is what ``python -m runners.study`` runs (the subprocess path is
    exercised by the full study test above)."""
    for args, expected in ((["experiment=zaremba_small"], "defines no study; choose a preset that does: "
                                                          "experiment=study_cpu"),
                           (["experiment=study_cpu", "study.rates_ff=[0.2,1.5]"], "study.rates_ff must be"),
                           (["experiment=study_cpu", "study.rates_rec=[]"], "study.rates_rec must be"),
                           (["experiment=study_cpu", "study.rates_rec=[a]"], "study.rates_rec must be"),
                           (["experiment=study_cpu", "+study.rates=[0.2]"], "study.rates is the one-rate design"),
                           (["experiment=study_cpu", "study.schemes=[nope]"], "study.schemes has 'nope'; choose from"),
                           (["experiment=study_cpu", "study.seeds=[0,1]"], "without study.tuning_seed")):
        assert driver.main(list(args)) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and expected in err, err
        assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize("preset", ["study_cpu", "study_ptb_medium"])
def test_both_study_presets_have_the_fair_design(preset):
    """Issue 16: the presets list no schemes; issue 22: two rate grids, >= 8 seeds, two settings, MC."""
    from benchmark.engine import SCHEMES

    spec = study_spec.StudySpec.from_config(driver.compose([f"experiment={preset}"]))
    assert spec.schemes == tuple(s for s in SCHEMES if s != "none") == study_spec.default_schemes()
    assert len(spec.seeds) >= 8 and spec.tuning_seed not in spec.seeds
    assert len(spec.settings) == 2 and spec.mc_samples > 0 and spec.rates_ff and spec.rates_rec
    mine = study_spec.StudySpec.from_config(driver.compose([f"experiment={preset}", "study.schemes=[moon,naive]"]))
    assert mine.schemes == ("moon", "naive")
    # equal budget: every scheme with a recurrent site on the same grid, naive on its ff axis
    grids = {s: spec.grid(s, "lstm") for s in spec.schemes}
    assert grids["naive"] == {"ff": spec.rates_ff}
    assert all(g == {"ff": spec.rates_ff, "rec": spec.rates_rec} for s, g in grids.items() if s != "naive")


def test_the_commands_search_both_rates_and_seed_every_setting():
    spec = study_spec.StudySpec("s", ("naive", "moon"), ("lstm",), (0.3, 0.5), (0.1, 0.3), 0, (1, 2),
                            {"small": (), "deep": ("model.num_layers=2",)}, mc_samples=4)
    tasks = driver.plan(spec, driver.Path("/tmp/study"))
    tune = next(t for t in tasks if t.stage == "tune" and t.scheme == "moon")
    argv = driver.command(tune, spec, [], 1)
    assert "dropout.ff=choice(0.3,0.5)" in argv and "dropout.rec=choice(0.1,0.3)" in argv
    assert "~hydra.sweeper.params.dropout" in argv and "hydra.sweeper.n_trials=4" in argv
    naive = driver.command(next(t for t in tasks if t.stage == "tune" and t.scheme == "naive"), spec, [], 1)
    assert not any(a.startswith("dropout.rec") for a in naive) and "hydra.sweeper.n_trials=2" in naive
    follow = [t for t in tune.after]
    assert [t.setting for t in follow] == ["small", "deep"]
    follow[1].rates = {"ff": 0.5, "rec": 0.1}
    seeded = driver.command(follow[1], spec, [], 1)
    assert {"model.num_layers=2", "seed=1,2", "dropout.ff=0.5", "dropout.rec=0.1", "train.mc_samples=4"} <= set(seeded)
    assert driver.total_runs(spec) == 2 + 4 + 2 * 3 * 2


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_best_pair_is_chosen_on_validation_with_ties_to_the_weaker_dropout(tmp_path):
    sweep = tmp_path / "tune" / "moon-lstm"
    sweep.mkdir(parents=True)
    study = optuna.create_study(study_name=study_trials.study_name("moon", "lstm", {"ff": (0.3, 0.5), "rec": (0.1, 0.3)}),
                                storage=study_trials.storage_url(sweep))
    grid = {"dropout.ff": optuna.distributions.CategoricalDistribution([0.3, 0.5]),
            "dropout.rec": optuna.distributions.CategoricalDistribution([0.1, 0.3])}
    for ff, rec, value in ((0.5, 0.1, 120.0), (0.3, 0.3, 120.0), (0.3, 0.1, float("inf")), (0.5, 0.3, 121.0)):
        study.add_trial(optuna.trial.create_trial(params={"dropout.ff": ff, "dropout.rec": rec}, distributions=grid,
                                                  value=value))
    assert study_trials.best_rates(sweep, "moon", "lstm") == {"ff": 0.3, "rec": 0.3}
    study.ask()  # interrupted: never told, asked again on resume
    assert len(study_trials.finished_trials(sweep, "moon", "lstm")) == 4


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_an_extended_grid_asks_every_point_and_only_its_points_count(tmp_path):
    """A rate added to the grid: the grid sampler no longer counts the old trials as visited, so the
    sweeper asks every point (the old ones answer from their finished jobs); a dropped point no
    longer counts for the best pair."""
    sweep = tmp_path / "tune" / "naive-lstm"
    sweep.mkdir(parents=True)
    old, new = {"ff": (0.3, 0.5)}, {"ff": (0.3, 0.5, 0.7)}
    assert study_trials.study_name("naive", "lstm", new) == "dropout-naive-lstm-ff0.3_0.5_0.7"  # no comma: one override
    study = optuna.create_study(study_name=study_trials.study_name("naive", "lstm", old), storage=study_trials.storage_url(sweep))
    for ff, value in ((0.3, 140.0), (0.5, 130.0)):
        study.add_trial(optuna.trial.create_trial(params={"dropout.ff": ff}, value=value, distributions={
            "dropout.ff": optuna.distributions.CategoricalDistribution([0.3, 0.5])}))
    assert study_trials.trials_to_ask(sweep, "naive", "lstm", old) == 0
    # the extended grid is searched in a study of its own: all three points asked, two answer from their jobs
    assert study_trials.trials_to_ask(sweep, "naive", "lstm", new) == 3
    other = optuna.create_study(study_name=study_trials.study_name("naive", "lstm", new), storage=study_trials.storage_url(sweep))
    other.add_trial(optuna.trial.create_trial(params={"dropout.ff": 0.3}, value=140.0, distributions={
        "dropout.ff": optuna.distributions.CategoricalDistribution([0.3, 0.5, 0.7])}))
    assert study_trials.trials_to_ask(sweep, "naive", "lstm", new) == 2 and len(study_trials.finished_trials(sweep, "naive", "lstm")) == 3
    assert study_trials.missing_points(sweep, "naive", "lstm", {"ff": (0.3, 0.5, 0.7)}) == [(0.7,)]
    assert study_trials.best_rates(sweep, "naive", "lstm", {"ff": (0.3, 0.7)}) == {"ff": 0.3}  # 0.5 left the grid


def test_seeds_run_at_other_rates_are_moved_aside_not_reported_as_the_tuned_ones(tmp_path):
    task = driver.Task("seeds", "naive", "gru", tmp_path / "seeds" / "small" / "naive-gru", setting="small",
                       rates={"ff": 0.7})
    job = task.sweep_dir / "0-naive-gru-s1"
    job.mkdir(parents=True)
    (job / "summary.json").write_text(json.dumps({"status": "finished", "dropout": {"ff": 0.5, "rec": 0.0}}))
    moved = driver.retire_stale_seeds(task, tmp_path)
    assert moved is not None and moved.parent == tmp_path / "superseded" / "small" and not task.sweep_dir.exists()
    assert (moved / "0-naive-gru-s1" / "summary.json").is_file()
    job.mkdir(parents=True)
    (job / "summary.json").write_text(json.dumps({"status": "finished", "dropout": {"ff": 0.7, "rec": 0.0}}))
    assert driver.retire_stale_seeds(task, tmp_path) is None and job.is_dir()  # the tuned rates: kept


@pytest.mark.slow
def test_one_command_tunes_two_rates_reruns_the_best_in_every_setting_reports_and_resumes(tmp_path, cache_dir):
    proc = run_study(tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "out" / "studies" / "study_cpu"

    # The searches: moon over ff x rec, naive over ff alone, in SQLite, seed 0.
    moon = study_trials.finished_trials(root / "tune" / "moon-lstm", "moon", "lstm")
    assert sorted((t.params["dropout.ff"], t.params["dropout.rec"]) for t in moon) == [(0.2, 0.3), (0.5, 0.3)]
    naive = study_trials.finished_trials(root / "tune" / "naive-lstm", "naive", "lstm")
    assert sorted(t.params["dropout.ff"] for t in naive) == [0.2, 0.5] and "dropout.rec" not in naive[0].params
    best = study_trials.best_rates(root / "tune" / "moon-lstm", "moon", "lstm")

    # The seeded runs: none, naive and moon, seeds 1 and 2, in both settings, at the tuned pair,
    # with the resolved plan showing the rates on the feed-forward and the recurrent sites.
    summaries = {(p.parts[-4], s["scheme"], s["seed"]): s for p in (root / "seeds").glob("*/*/*/summary.json")
                 for s in [json.loads(p.read_text())]}
    assert {(k[0], k[1]) for k in summaries} == {(st, sc) for st in ("small", "deep") for sc in ("none", "naive", "moon")}
    plan = summaries[("deep", "moon", 2)]["plan"]["sites"]
    assert (plan["x"]["rate"], plan["out"]["rate"], plan["c"]["rate"]) == (best["ff"], best["ff"], best["rec"])
    assert plan["x"]["granularity"] == "step" and plan["c"]["group"] == "rec"
    assert summaries[("deep", "moon", 2)]["mc_test_ppl"] > 0 and summaries[("small", "none", 1)]["mc_test_ppl"] is None

    out = root / "report"
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 12 and set(runs.setting) == {"small", "deep"} and set(runs.status) == {"finished"}
    assert runs[runs.scheme == "moon"].rate_rec.unique().tolist() == [best["rec"]]
    assert {"setting", "scheme", "cell", "seed", "status", "rate_ff", "rate_rec", "best_val_ppl", "test_ppl",
            "mc_test_ppl"} <= set(runs.columns)
    assert {"p_t", "p_exact", "p_holm"} <= set(pd.read_csv(out / "paired.csv").columns)
    assert {"cell", "kendall_tau"} <= set(pd.read_csv(out / "rank_stability.csv").columns)
    assert (out / "tuning.png").stat().st_size > 0 and (out / "seeds.pdf").is_file()
    assert publish.check(out) == []
    record = json.loads((root / "study.json").read_text())
    assert record["study"]["settings"] == {"small": [], "deep": ["model.num_layers=2"]} and record["wall_s"] > 0

    # Interrupted: one seeded run lost. The same command redoes that run alone, with the same
    # result (a seed fixes it), and asks the finished searches for nothing.
    lost = next((root / "seeds" / "deep" / "moon-lstm").glob("*-s2"))
    before = json.loads((lost / "summary.json").read_text())
    shutil.rmtree(lost)
    proc = run_study(tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((lost / "summary.json").read_text())
    assert again["test_ppl"] == pytest.approx(before["test_ppl"], rel=1e-6)
    assert (root / "logs" / "tune-moon-lstm.log").read_text().count("$ python run.py") == 1
    assert json.loads((root / "study.json").read_text())["invocations"] == 2


def test_the_lead_sorts_each_recurrent_part_by_its_verdicts_and_names_diverged_seeds():
    """The answer's first lines (issue 22): a comparison that holds in one setting only is said to, and
    a scheme that diverged on some seeds is named with how many, since the means leave those seeds out."""
    from analysis import study_text

    alive = pd.DataFrame([
        {"cell": "gru", "scheme": "a", "against": "naive", "verdict_s1": "better", "verdict_s2": "better"},
        {"cell": "gru", "scheme": "b", "against": "naive", "verdict_s1": "n.s.", "verdict_s2": "better"},
        {"cell": "lstm", "scheme": "c", "against": "naive", "verdict_s1": "n.s.", "verdict_s2": "worse"},
        {"cell": "lstm", "scheme": "d", "against": "naive", "verdict_s1": "better", "verdict_s2": "worse"},
        {"cell": "lstm", "scheme": "e", "against": "naive", "verdict_s1": "n.s.", "verdict_s2": "n.s."},
        {"cell": "lstm", "scheme": "f", "against": "none", "verdict_s1": "better", "verdict_s2": "better"},
    ])
    lead = study_text.in_short(alive, ["s1", "s2"])
    assert "significantly better in every setting for GRU `a`;" in lead
    assert "better in some settings, not significant in the others for GRU `b`;" in lead
    assert "worse in some settings, not significant in the others for LSTM `c`;" in lead
    assert "better in one setting and worse in another for LSTM `d`;" in lead
    assert "not significant in any setting for LSTM `e`" in lead and "`f`" not in lead  # against none: not the lead
    head = pd.DataFrame([{"setting": "s1", "cell": "gru", "scheme": "state_dropout", "seeds": 12, "diverged": 5},
                         {"setting": "s1", "cell": "gru", "scheme": "naive", "seeds": 12, "diverged": 0}])
    assert study_text.divergence_line(head).startswith(
        "**Diverged seeds**, left out of the means and of the pairs they belong to: GRU `state_dropout` in `s1` "
        "(5 of 12 seeds).")
