"""The command line as users run it: sweeps, tracking, the end-of-sweep report, bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY, cli_env


def leet_records(run_dir: Path) -> list[dict]:
    """Read an offline W&B run back with W&B's own reader, as a user would."""
    proc = subprocess.run(["wandb", "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True,
                          timeout=60, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def assert_one_wandb_run_per_job(sweep: Path) -> None:
    """Each job dir holds one offline W&B run of its own, with its config, the sweep's group and its metrics."""
    run_ids = set()
    jobs = [p.parent for p in sweep.glob("*/summary.json")]
    assert jobs
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        (run_dir,) = (job / "wandb").glob("offline-run-*")
        records = leet_records(run_dir)
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        assert run["config"]["update"]["scheme"]["name"] == summary["scheme"]
        assert run["config"]["update"]["seed"] == summary["seed"]
        assert run["run_group"] == sweep.name and run["display_name"] == summary["run_name"]
        history = [r["history"]["item"] for r in records if r["type"] == "history"]
        assert any("train/ppl" in h for h in history) and any("val/ppl" in h for h in history)
        run_ids.add(run["run_id"])
    assert len(run_ids) == len(jobs), "each job must get its own W&B run"


def test_two_job_sweep_writes_two_run_stores_two_wandb_runs_and_a_report(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "scheme=none,naive", *TINY, f"hydra.sweep.dir={sweep}")
    jobs = sorted(p for p in sweep.iterdir() if (p / "summary.json").exists())
    assert [p.name for p in jobs] == ["0-none-lstm-s0", "1-naive-lstm-s0"]

    run_ids = set()
    for job, scheme in zip(jobs, ["none", "naive"]):
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["scheme"] == scheme and summary["cell"] == "lstm"
        for key in ("best_val_ppl", "test_ppl", "wall_s", "train_tokens_per_s"):
            assert summary[key] > 0
        assert summary["bayes_test_ppl"] is None and summary["error"] is None and summary["epochs"] == 2
        assert yaml.safe_load((job / "config.yaml").read_text())["scheme"]["name"] == scheme
        events = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        assert {e["split"] for e in events} == {"train", "val", "test", "probe"}
        probes = [e for e in events if e["split"] == "probe"]
        assert [e["epoch"] for e in probes if e["at"] == "epoch"] == [1, 2] and len(probes[0]["state_norm"]) == 200
        steps = [e["step"] for e in probes if e["at"] == "step"]
        assert steps[:3] == [1, 2, 3] and all(s <= 16 or s & (s - 1) == 0 for s in steps), "steps 1-16, 32, ..."
        assert min(e["ppl"] for e in events if e["split"] == "val") == pytest.approx(summary["best_val_ppl"])

        (run_dir,) = (job / "wandb").glob("offline-run-*")
        records = leet_records(run_dir)
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        assert run["config"]["update"]["scheme"]["name"] == scheme
        assert run["run_group"] == sweep.name and run["display_name"] == f"{scheme}-lstm-s0"
        assert set(run["tags"]) == {scheme, "lstm", "kjv", "seed-0"} and run["job_type"] == "train"
        history = [r["history"]["item"] for r in records if r["type"] == "history"]
        assert any("val/ppl" in h for h in history) and any("test/ppl" in h for h in history)
        assert any("probe/growth_per_step" in h for h in history)
        run_ids.add(run["run_id"])
    assert len(run_ids) == 2, "each job must get its own W&B run"

    index = sweep / "report" / "index.html"
    assert index.exists(), proc.stdout[-2000:]
    images = re.findall(r'<img[^>]* src="([^"]+)"', index.read_text())
    assert images and all(src.startswith("data:image/png;base64,") and len(src) > 1000 for src in images)
    assert "finished" in proc.stdout and "report:" in proc.stdout


def test_logger_none_runs_without_wandb(run_cli, tmp_path):
    run_cli(*TINY, "train.epochs=1", "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"
    assert not (tmp_path / "run" / "wandb").exists()


@pytest.mark.parametrize("override, needle", [
    ("scheme=bogus", "scheme=bogus is unknown; choose one of: "),
    ("-m model=lstm,rnn", "model=rnn is unknown; choose one of: gru, lstm"),
    # without -m a list is ambiguous to Hydra: its own advice, in one line
    ("model=lstm,rnn", "Ambiguous value for argument 'model=lstm,rnn' 1. To use it as a list, use key=[value1,value2] "
                       "2. To use it as string, quote the value"),
    ("experimen=quickstart", "experimen is not a config key (did you mean experiment?); top-level keys: "),
    ("paths.outptu_dir=x", "paths.outptu_dir is not a config key (did you mean paths.output_dir?)"),
    ("dropout=1.5", "dropout=1.5 is outside [0, 1)"),
    ("dropout=1.0", "dropout=1.0 is outside [0, 1)"),
    ("dropout=-0.1", "dropout=-0.1 is outside [0, 1)"),
    ("trian.epochs=3", "trian.epochs is not a config key (did you mean train?)"),
    ("train.epochz=3", "train.epochz is not a config key (did you mean train.epochs?); train has: "),
    ("scheme.gate_mask=tied", "did you mean scheme.gate_masks?"),
    ("train.batch_size=abc", "train.batch_size=abc must be an integer"),
    ("train.variable_bptt=3", "train.variable_bptt=3 must be true or false"),
    ("train.optimizer=sgdd", "train.optimizer=sgdd is unknown; choose one of: sgd, ntasgd, adam"),
    ("train.test_weights=final", "train.test_weights=final is unknown; choose one of: best, last"),
    ("scheme=naive scheme.granularity=hourly", "granularity 'hourly' is not allowed for scheme 'naive'"),
    ("scheme.granularity=element", "scheme.granularity does not apply to scheme=none (its keys: name); "
                                   "scheme options that take it: moon, naive, "),
    ("experiment=semeniuta scheme.gate_masks=tied", "scheme.gate_masks does not apply to scheme=semeniuta"),
    ("model.init_scale=big", "model.init_scale=big must be a number"),
    ("data.vocab_size=abc", "data.vocab_size=abc must be an integer"),
    ("-m scheme=none,naive hydra/launcher=local_parallel hydra.launcher.n_jobs=0",
     "hydra.launcher.n_jobs=0 must be a whole number of jobs at a time, at least 1, or -1 for one per core"),
    ("-m experiment=quickstart hparams_search=dropout",
     "hparams_search=dropout cannot search over experiment=quickstart, which sweeps scheme: glob(*)"),
])
def test_bad_input_stops_before_training_with_one_line(run_cli, tmp_path, override, needle):
    proc = run_cli(*override.split(), *TINY, f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("error: ") and needle in proc.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "run" / "summary.json").exists()


def test_the_semeniuta_preset_trains_one_gru_with_drop_rnns_gru_rate_and_clip(run_cli, tmp_path):
    """``experiment=semeniuta model=gru`` without a sweep: drop-rnn main.py's GRU lr 0.1 and clip 20
    reach the job's resolved config, and the test scores the last epoch's weights, as drop-rnn."""
    import yaml

    job = tmp_path / "run"
    run_cli("experiment=semeniuta", "model=gru", "data=kjv", *TINY, "train.epochs=1", "train.batch_size=4",
            "train.eval_batch_size=4", "logger=none", f"hydra.run.dir={job}")
    config = yaml.safe_load((job / "config.yaml").read_text())
    assert (config["model"]["cell"], config["train"]["lr"], config["train"]["clip"]) == ("gru", 0.1, 20.0)
    summary = json.loads((job / "summary.json").read_text())
    assert (summary["status"], summary["cell"], summary["test_weights"], summary["test_epoch"]) == \
        ("finished", "gru", "last", 1)


def test_unknown_scheme_lists_the_registered_ones(run_cli, tmp_path):
    proc = run_cli("scheme=bogus", check=False)
    allowed = sorted(p.stem for p in (Path(__file__).parent.parent / "conf" / "scheme").glob("*.yaml"))
    assert proc.stderr.strip().endswith(", ".join(allowed))


def user_conf(root: Path) -> Path:
    """A user's own config directory outside the repository: an experiment preset that picks
    a scheme option of the user's own (naive with per-sequence masks), sized to run in seconds."""
    conf = root / "myconf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "scheme").mkdir()
    (conf / "experiment" / "mine.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /scheme: naive_seq\n"
        "data: {size: 2000}\n"
        "model: {emb_size: 16, hidden_size: 16, num_layers: 1}\n"
        "train: {epochs: 1, bptt: 10}\n"
        "logger: {name: none}\n"
        "my_note: a key of the user's own\n")
    (conf / "scheme" / "naive_seq.yaml").write_text("name: naive\ngranularity: sequence\nscaling: inverted\n")
    return conf


def test_a_users_own_preset_in_a_config_dir_runs(run_cli, tmp_path):
    conf = user_conf(tmp_path)
    job = tmp_path / "run"
    run_cli("--config-dir", str(conf), "experiment=mine", "my_note=changed", f"hydra.run.dir={job}")
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["scheme"] == "naive"
    config = yaml.safe_load((job / "config.yaml").read_text())
    assert config["scheme"]["granularity"] == "sequence" and config["model"]["hidden_size"] == 16
    assert config["my_note"] == "changed"


def _composed(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return yaml.safe_load(proc.stdout)


def test_hydra_searchpath_finds_a_users_presets_on_the_command_line_and_in_a_primary_config(run_cli, tmp_path):
    conf = user_conf(tmp_path)
    cfg = _composed(run_cli("--cfg", "job", f"hydra.searchpath=[file://{conf}]", "experiment=mine", check=False))
    assert cfg["scheme"]["granularity"] == "sequence" and cfg["model"]["hidden_size"] == 16

    # A user's own primary config that starts from the suite's and adds the search path.
    own = tmp_path / "primary"
    own.mkdir()
    (own / "lab.yaml").write_text(f"defaults:\n  - config\n  - _self_\nhydra:\n  searchpath:\n    - file://{conf}\n")
    cfg = _composed(run_cli("--cfg", "job", "-cd", str(own), "-cn", "lab", "experiment=mine",
                            "paths.output_dir=elsewhere", check=False))
    assert cfg["scheme"]["granularity"] == "sequence" and cfg["paths"]["output_dir"] == "elsewhere"


def test_an_installed_config_package_adds_presets_through_a_search_path_plugin(run_cli, tmp_path):
    """How a lab ships presets as a package: Hydra's SearchPathPlugin, found under hydra_plugins/."""
    site = tmp_path / "site"
    package = site / "lab_presets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for item in user_conf(tmp_path).iterdir():
        shutil.copytree(item, package / item.name)
    plugin = site / "hydra_plugins" / "lab_presets_plugin"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text(
        "from hydra.plugins.search_path_plugin import SearchPathPlugin\n\n\n"
        "class LabPresets(SearchPathPlugin):\n"
        "    def manipulate_search_path(self, search_path):\n"
        "        search_path.append(provider='lab-presets', path='pkg://lab_presets')\n")
    env = {"PYTHONPATH": str(site)}
    cfg = _composed(run_cli("--cfg", "job", "experiment=mine", check=False, env=env))
    assert cfg["scheme"]["granularity"] == "sequence" and cfg["model"]["hidden_size"] == 16
    proc = run_cli("experiment=minee", check=False, env=env)
    assert proc.returncode == 2 and ", mine, moon, " in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("args, needle", [
    (["--config-dir", "{conf}", "experiment=minee"], "experiment=minee is unknown; choose one of: awd_lstm, "),
    (["--config-dir", "{conf}", "scheme=bogus"], "scheme=bogus is unknown; choose one of: moon, naive, naive_seq, "),
    (["hydra.searchpath=[file://{conf}]", "experiment=minee"], ", mine, moon, "),
    (["experiment=mine"], "experiment=mine is unknown; choose one of: "),  # not on the search path: unknown
    (["--config-dir", "{conf}", "experiment=mine", "scheme.drop_cell=true"],
     "scheme.drop_cell does not apply to scheme=naive_seq (its keys: granularity, name, scaling)"),
    (["--config-dir", "{conf}", "experiment=mine", "my_nte=x"], "my_nte is not a config key (did you mean my_note?)"),
])
def test_unknown_options_are_one_line_listing_the_composed_search_path(run_cli, tmp_path, args, needle):
    conf = user_conf(tmp_path)
    proc = run_cli(*[a.format(conf=conf) for a in args], f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert proc.stderr.strip().count("\n") == 0 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


def test_the_console_command_entry_checks_overrides_as_run_py_does(tmp_path):
    """``rnn-bench`` is ``runners.cli:main``; in a checkout it runs as ``python -m runners.cli``."""
    proc = subprocess.run([sys.executable, "-m", "runners.cli", "scheme=bogus"], cwd=tmp_path, env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: scheme=bogus is unknown; choose one of: moon, ")


def test_shell_completion_installs_for_run_py_and_rnn_bench(run_cli, tmp_path):
    """Issue 25: ``-sc install=bash`` was refused as an unknown key ``install``; Hydra's own flags are Hydra's."""
    script = run_cli("-sc", "install=bash")
    assert "hydra_bash_completion()" in script.stdout and "complete -o nospace" in script.stdout
    proc = subprocess.run([sys.executable, "-m", "runners.cli", "-sc", "install=bash"], cwd=tmp_path,
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "hydra_bash_completion()" in proc.stdout, proc.stderr[-2000:]
    assert "model=" in run_cli("-sc", "query=bash", env={"COMP_LINE": "python run.py mod", "COMP_POINT": "19"}).stdout


@pytest.mark.slow
def test_a_glob_sweep_on_the_command_line_runs_every_scheme(run_cli, tmp_path):
    """Issue 25: ``'scheme=glob(*)'`` typed on the command line crashed the override check (no config loader)."""
    sweep = tmp_path / "glob"
    run_cli("-m", "scheme=glob(*)", "model=lstm", "debug=smoke", "train.probe_steps=0", "train.test_batch_size=20",
            f"hydra.sweep.dir={sweep}")
    schemes = sorted(p.stem for p in (Path(__file__).parent.parent / "conf" / "scheme").glob("*.yaml"))
    assert sorted(p.name for p in sweep.glob("*-lstm-s0")) == [f"{n}-{s}-lstm-s0" for n, s in enumerate(schemes)]
    assert sorted(json.loads(p.read_text())["scheme"] for p in sweep.glob("*/summary.json")) == schemes


def test_quickstart_preset_sweeps_every_scheme_and_cell(run_cli, tmp_path):
    """The real preset, shrunk: every job of its sweep runs and the report is written."""
    sweep = tmp_path / "qs"
    run_cli("-m", "experiment=quickstart", *TINY, "train.epochs=1", "logger=none", f"hydra.sweep.dir={sweep}")
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    schemes = sorted(p.stem for p in (Path(__file__).parent.parent / "conf" / "scheme").glob("*.yaml"))
    assert sorted((s["scheme"], s["cell"]) for s in summaries) == sorted(
        (s, c) for s in schemes for c in ("gru", "lstm"))
    assert all(s["status"] in ("finished", "diverged") for s in summaries)
    assert (sweep / "report" / "index.html").exists()


def test_hydra_groups_accept_plugin_options_and_name_unknown_ones(run_cli, tmp_path):
    proc = run_cli("-m", "hydra/launcher=no_such_launcher", *TINY, f"hydra.sweep.dir={tmp_path / 's'}", check=False)
    assert proc.returncode != 0 and "no_such_launcher" in proc.stderr


def test_a_broken_wandb_never_loses_the_run_and_is_reported_once(run_cli, tmp_path):
    """W&B asked to go online with no API key and an unreachable server: init fails for real."""
    job = tmp_path / "run"
    proc = run_cli(*TINY, "train.epochs=1", "logger.mode=online", f"hydra.run.dir={job}",
                   env={"WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9"})
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["test_ppl"] > 0
    assert (job / "metrics.jsonl").read_text().count('"split": "val"') == 1
    log = proc.stdout + proc.stderr
    assert log.count("W&B is unavailable") == 1 and "continues with the local run store only" in log
