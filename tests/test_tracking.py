"""W&B tracking as W&B users expect it, read back from real offline runs.

The per-epoch curves are declared against ``epoch``, each quantity has one name in the run's
summary (the job's ``best_val_ppl``, not beside it W&B's own summary of ``val/ppl``), that
name holds the job's number across a resume, and ``job_type`` names the kind of job. All of
it is checked in what the real ``wandb`` wrote (read back with ``wandb leet inspect``), both
for a tracker fed known events and for a real training job.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, TINY, cli_env
from runners.tracking import WandbTracker
from test_cli import leet_records
from test_collect import RecordingRun

# A job's events as the training loop emits them; validation gets worse at epoch 3, so the
# last value (45) and the best one (40) differ and the summary shows which one W&B kept.
EVENTS = [
    {"epoch": 1, "step": 5, "split": "train", "scope": "interval", "loss": 4.2, "ppl": 66.7, "grad_norm": 1.5},
    {"epoch": 1, "step": 10, "split": "train", "scope": "epoch", "loss": 4.1, "ppl": 60.3},
    {"epoch": 1, "step": 10, "split": "val", "loss": 3.91, "ppl": 50.0},
    {"epoch": 2, "step": 20, "split": "train", "scope": "epoch", "loss": 3.8, "ppl": 44.7},
    {"epoch": 2, "step": 20, "split": "val", "loss": 3.69, "ppl": 40.0},
    {"epoch": 3, "step": 30, "split": "train", "scope": "epoch", "loss": 3.7, "ppl": 40.4},
    {"epoch": 3, "step": 30, "split": "val", "loss": 3.81, "ppl": 45.0},
    {"epoch": 3, "step": 30, "split": "test", "loss": 3.71, "ppl": 41.0},
]
SUMMARY = {"status": "finished", "scheme": "naive", "cell": "lstm", "best_val_ppl": 40.0, "test_ppl": 41.0,
           "mc_test_ppl": None}


def leet_summary(run_dir: Path) -> dict:
    """The run's summary as W&B computed it, read with W&B's own reader."""
    proc = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json", str(run_dir)], capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(proc.stdout)["summary"]


def metric_definitions(records: list[dict]) -> dict[str, dict]:
    """The run's ``define_metric`` records, by metric name or glob."""
    return {r["metric"].get("name") or r["metric"]["glob_name"]: r["metric"] for r in records if r["type"] == "metric"}


def offline_settings(tmp_path: Path, monkeypatch) -> None:
    """No account: exactly the W&B settings the CLI tests use, kept in ``tmp_path``."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    for key, value in cli_env(tmp_path).items():
        if key.startswith("WANDB_"):
            monkeypatch.setenv(key, value)


def tracked_segment(job: Path, events: list[dict], summary: dict, **kwargs) -> None:
    """The real tracker over ``events``, closed with ``summary``: one job, or one part of a resumed job."""
    tracker = WandbTracker(project="rnn-dropout", entity=None, mode="auto", job_dir=job, name="naive-lstm-s0",
                           group="sweep", tags=["naive", "lstm", "kjv", "seed-0"],
                           config={"scheme": {"name": "naive"}, "model": {"cell": "lstm"}}, **kwargs)
    assert tracker.run is not None, "W&B must start offline without an account"
    for event in events:
        tracker.log(event)
    tracker.close(summary)


def track(tmp_path: Path, monkeypatch, **kwargs) -> Path:
    """Run the real tracker over ``EVENTS``, offline in ``tmp_path``; return the offline run's directory."""
    offline_settings(tmp_path, monkeypatch)
    job = tmp_path / "job"
    job.mkdir()
    tracked_segment(job, EVENTS, SUMMARY, **kwargs)
    (run_dir,) = (job / "wandb").glob("offline-run-*")
    return run_dir


def test_epoch_curves_are_declared_against_epoch_and_each_score_has_one_name(tmp_path, monkeypatch):
    run_dir = track(tmp_path, monkeypatch)
    records = leet_records(run_dir)

    defined = metric_definitions(records)
    assert defined["val/*"]["step_metric"] == "epoch" and defined["train_epoch/*"]["step_metric"] == "epoch"
    assert defined["train_epoch/tokens_per_s"]["step_metric"] == "epoch"
    assert "step_metric" not in defined["train/*"] and "step_metric" not in defined["test/*"], \
        "per-step curves keep W&B's step"

    summary = leet_summary(run_dir)
    assert summary["best_val_ppl"] == 40.0, "the best epoch, not the last (45)"
    assert summary["test_ppl"] == 41.0 and "mc_test_ppl" not in summary  # null: left out
    # One name per quantity (issue 25): no val/ppl or test/ppl summary beside best_val_ppl and
    # test_ppl, no last `epoch` beside `epochs`, no last interval's train/* beside the whole
    # epoch's train_epoch/*. The whole summary, W&B's own `_` keys included:
    assert set(summary) == {"_runtime", "_step", "_timestamp", "status", "scheme", "cell", "best_val_ppl",
                            "test_ppl", "train_epoch/loss", "train_epoch/ppl"}
    # the stand-in run that the W&B reader's test feeds (tests/test_collect.py) keeps the same summary
    stand_in = WandbTracker.around(recorder := RecordingRun())
    for event in EVENTS:
        stand_in.log(event)
    stand_in.close(SUMMARY)
    assert {k: v for k, v in recorder.summary.items() if not k.startswith("_")} == \
        {k: v for k, v in summary.items() if not k.startswith("_")}

    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    val = [(h["epoch"], h["val/ppl"]) for h in history if "val/ppl" in h]
    assert val == [(1, 50.0), (2, 40.0), (3, 45.0)], "each validation point carries its epoch"

    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["job_type"] == "train"
    assert set(run["tags"]) == {"naive", "lstm", "kjv", "seed-0"}
    assert run["config"]["update"]["scheme"]["name"] == "naive"


def test_a_resumed_run_holds_the_jobs_best_epoch_from_before_the_resume(tmp_path, monkeypatch):
    """A job interrupted after epoch 2 (its best, 40) resumes and logs epoch 3 (45) to the same run.
    W&B aggregates each part anew: a ``val/ppl`` minimum in the resumed part would read 45. The job's
    own best_val_ppl, carried across the resume in its checkpoint, is what the run keeps."""
    offline_settings(tmp_path, monkeypatch)
    job = tmp_path / "job"
    job.mkdir()
    interrupted = {**SUMMARY, "status": "interrupted", "test_ppl": None}
    tracked_segment(job, EVENTS[:5], interrupted, run_id="resumed-job")
    tracked_segment(job, EVENTS[5:], SUMMARY, run_id="resumed-job")
    first, second = sorted((job / "wandb").glob("offline-run-*"))
    assert first.name.endswith("resumed-job") and second.name.endswith("resumed-job-1")
    resumed = [r["history"]["item"] for r in leet_records(second) if r["type"] == "history"]
    assert [h["val/ppl"] for h in resumed if "val/ppl" in h] == [45.0], "the resumed part logs epoch 3 only"
    summary = leet_summary(second)  # what `wandb sync` leaves on the run: the later part's summary
    assert (summary["status"], summary["best_val_ppl"], summary["test_ppl"]) == ("finished", 40.0, 41.0)
    assert "val/ppl" not in summary


def test_a_job_type_that_is_not_a_kind_of_job_is_logged_as_train_with_a_warning(tmp_path, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="runners.tracking"):
        run_dir = track(tmp_path, monkeypatch, job_type="naive")
    assert [r.getMessage() for r in caplog.records] == [
        "W&B job_type='naive' is not a kind of job (train, eval, sweep); logging this run as 'train'"]
    (run,) = [r["run"] for r in leet_records(run_dir) if r["type"] == "run"]
    assert run["job_type"] == "train"


def test_an_eval_job_is_logged_as_eval(tmp_path, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="runners.tracking"):
        run_dir = track(tmp_path, monkeypatch, job_type="eval")
    assert not caplog.records
    (run,) = [r["run"] for r in leet_records(run_dir) if r["type"] == "run"]
    assert run["job_type"] == "eval"


def test_a_training_job_logs_a_train_run_whose_summary_is_its_best_epoch(run_cli, tmp_path):
    job = tmp_path / "job"
    run_cli("scheme=naive", *TINY, "model.num_layers=1", "train.epochs=3", "logger=wandb", f"hydra.run.dir={job}")
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "finished"
    (run_dir,) = (job / "wandb").glob("offline-run-*")
    records = leet_records(run_dir)
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["job_type"] == "train", "the kind of job, not the scheme"
    assert {"naive", "lstm"} <= set(run["tags"]) and run["config"]["update"]["scheme"]["name"] == "naive"
    assert run["config"]["update"]["model"]["cell"] == "lstm"

    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    val = [h["val/ppl"] for h in history if "val/ppl" in h]
    assert [h["epoch"] for h in history if "val/ppl" in h] == [1, 2, 3]
    wandb_summary = leet_summary(run_dir)
    assert wandb_summary["best_val_ppl"] == pytest.approx(min(val)) == pytest.approx(summary["best_val_ppl"])
    assert (wandb_summary["test_ppl"], wandb_summary["test_epoch"]) == (summary["test_ppl"], summary["test_epoch"])
    assert wandb_summary["epochs"] == summary["epochs"] == 3
    # each quantity once: no W&B summary of the curves the scores come from, nor of the x axis
    assert not [k for k in wandb_summary if k.split("/")[0] in ("val", "test", "train") or k == "epoch"]
    # the run facts of summary.json go with it, the resolved dropout plan included
    assert summary["plan"]["scheme"] == "naive" and set(summary["plan"]["sites"]) == {"x", "out"}
    assert wandb_summary["plan"] == summary["plan"]


def artifacts(records: list[dict]) -> list[dict]:
    """The run's artifact records, as the offline run holds them."""
    return [r["artifact"] for r in records if r["type"] == "artifact"]


def test_a_run_holds_one_probe_table_and_its_model_only_when_asked(run_cli, tmp_path):
    """Issue 25: one table of every probe per run (not one per probe), and logger.log_model=true
    adds the finished job's checkpoint and config as one model artifact; off by default."""
    for name, extra in (("plain", []), ("kept", ["logger.log_model=true"])):
        job = tmp_path / name
        run_cli("scheme=naive", *TINY, "model.num_layers=1", "logger=wandb", *extra, f"hydra.run.dir={job}")
        (run_dir,) = (job / "wandb").glob("offline-run-*")
        found = artifacts(leet_records(run_dir))
        tables = [a for a in found if a["type"] == "run_table"]
        assert len(tables) == 1 and "state_norm" in tables[0]["name"]
        probes = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        probes = [e for e in probes if e["split"] == "probe" and e.get("state_norm")]
        (table_file,) = run_dir.glob("files/media/table/probe/state_norm_table*.table.json")
        rows = json.loads(table_file.read_text())["data"]
        assert len(probes) > 2 and len(rows) == sum(len(e["state_norm"]) for e in probes)  # every probe, one table
        models = [a for a in found if a["type"] == "model"]
        if name == "plain":
            assert not models
            continue
        (model,) = models
        assert sorted(c["path"] for c in model["manifest"]["contents"]) == ["checkpoint.pt", "config.yaml"]
        assert "final" in model["aliases"] and json.loads(model["metadata"])["status"] == "finished"


def test_a_wandb_agent_run_of_the_example_sweep_logs_to_the_agents_run_with_its_metric(tmp_path, cache_dir):
    """Issue 25: ``wandb sweep docs/wandb_sweep.yaml`` + ``wandb agent``. The command is built from the
    example's template with W&B's own sweep helpers, as the agent builds it, and started with the
    environment the agent sets (its sweep and run ids); the server is the one part left out."""
    import sys

    import yaml
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    from analysis import dashboard

    sweep = yaml.safe_load((ROOT / "docs" / "wandb_sweep.yaml").read_text())
    values = {name: spec["values"][0] for name, spec in sweep["parameters"].items()}
    variables = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    variables.update(env=["/usr/bin/env"], interpreter=[sys.executable], program=[sweep["program"]])
    command = []
    for part in sweep_utils.create_sweep_command(sweep["command"]):  # the agent's own expansion of ${...}
        command += variables.get(part[2:-1], []) if part.startswith("${") and part.endswith("}") else [part]
    assert command[-3:] == ["scheme=naive", "model=lstm", "dropout=0.3"]
    job = tmp_path / "job"
    env = {**cli_env(tmp_path), "WANDB_SWEEP_ID": "sweep123", "WANDB_RUN_ID": "agentrun42"}
    proc = subprocess.run([*command, "debug=smoke", f"hydra.run.dir={job}", f"paths.cache_dir={cache_dir}",
                           "threads=1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = (job / "wandb").glob("offline-run-*")
    assert run_dir.name.endswith("-agentrun42"), "the run the agent created, not one named by the job directory"
    records = leet_records(run_dir)
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["sweep_id"] == "sweep123"
    # the sweep ranks on a plain number in the run's summary: the job's best validation perplexity
    assert leet_summary(run_dir)[sweep["metric"]["name"]] == json.loads((job / "summary.json").read_text())[
        "best_val_ppl"]
    config = run["config"]["update"]
    for key in dashboard.GROUP_BY:  # the dashboard's group keys hold for agent runs too
        value = config
        for part in key.split(".")[1:]:
            value = value[part]
        assert value in ("naive", "lstm")
