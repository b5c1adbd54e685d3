"""The command line as users run it: sweeps, tracking, the end-of-sweep report, bad input."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import TINY


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
        assert set(run["tags"]) == {scheme, "lstm", "kjv", "seed-0"} and run["job_type"] == scheme
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
    ("model=lstm,rnn", "model=rnn is unknown; choose one of: gru, lstm"),
    ("dropout=1.5", "dropout=1.5 is outside [0, 1)"),
    ("dropout=1.0", "dropout=1.0 is outside [0, 1)"),
    ("dropout=-0.1", "dropout=-0.1 is outside [0, 1)"),
    ("trian.epochs=3", "trian.epochs is not a config key (did you mean train?)"),
    ("train.epochz=3", "train.epochz is not a config key (did you mean train.epochs?); train has: "),
    ("scheme.gate_mask=tied", "did you mean scheme.gate_masks?"),
    ("train.batch_size=abc", "train.batch_size=abc must be an integer"),
    ("train.variable_bptt=3", "train.variable_bptt=3 must be true or false"),
    ("train.optimizer=sgdd", "train.optimizer=sgdd is unknown; choose one of: sgd, ntasgd, adam"),
    ("scheme=naive scheme.granularity=hourly", "granularity 'hourly' is not allowed for scheme 'naive'"),
    ("scheme.granularity=element", "scheme.granularity does not apply to scheme=none (its keys: name); "
                                   "scheme options that take it: moon, naive, "),
    ("experiment=semeniuta scheme.gate_masks=tied", "scheme.gate_masks does not apply to scheme=semeniuta"),
    ("model.init_scale=big", "model.init_scale=big must be a number"),
    ("data.vocab_size=abc", "data.vocab_size=abc must be an integer"),
])
def test_bad_input_stops_before_training_with_one_line(run_cli, tmp_path, override, needle):
    proc = run_cli(*override.split(), *TINY, f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("error: ") and needle in proc.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "run" / "summary.json").exists()


def test_unknown_scheme_lists_the_registered_ones(run_cli, tmp_path):
    proc = run_cli("scheme=bogus", check=False)
    allowed = sorted(p.stem for p in (Path(__file__).parent.parent / "conf" / "scheme").glob("*.yaml"))
    assert proc.stderr.strip().endswith(", ".join(allowed))


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
