"""Checkpoints and resume: a job killed at any point ends exactly as if it never was."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY, cli_env

JOB = [*TINY, "train.epochs=4", "logger=none"]
# Wall-clock figures differ between runs by nature; everything else must match exactly.
TIMING = {"tokens_per_s"}


def events(job: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (job / "metrics.jsonl").read_text().splitlines()]


def start(job: Path, tmp_path: Path, cache_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "run.py", *JOB, *extra, f"hydra.run.dir={job}",
                             f"paths.cache_dir={cache_dir}", "threads=1"], cwd=ROOT, env=cli_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_lines(job: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    metrics = job / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.exists() and metrics.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the job ended before writing {n} events: {proc.stderr.read()[-2000:]}")
        time.sleep(0.005)
    raise AssertionError(f"no {n} events after {timeout} s")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir) -> Path:
    """The uninterrupted job."""
    tmp = tmp_path_factory.mktemp("reference")
    job = tmp / "job"
    proc = start(job, tmp, cache_dir)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return job


def summary(job: Path) -> dict:
    return json.loads((job / "summary.json").read_text())


@pytest.mark.parametrize("kill_after", [0, 3, 7, 12])
def test_kill_9_at_any_point_then_resume_gives_the_uninterrupted_metrics(reference, run_cli, tmp_path, cache_dir,
                                                                         kill_after):
    job = tmp_path / "job"
    proc = start(job, tmp_path, cache_dir)
    if kill_after:
        wait_for_lines(job, kill_after, proc)
    else:  # as soon as the first checkpoint exists, before any event
        deadline = time.monotonic() + 120
        while not (job / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert not (job / "summary.json").exists() or summary(job)["status"] != "finished"
    run_cli(*JOB, f"hydra.run.dir={job}")
    assert events(job) == events(reference)
    for key in ("status", "best_val_ppl", "test_ppl", "epochs"):
        assert summary(job)[key] == summary(reference)[key]


def test_sigterm_checkpoints_mid_epoch_and_the_rerun_resumes_exactly(reference, run_cli, tmp_path, cache_dir):
    import torch

    job = tmp_path / "job"
    proc = start(job, tmp_path, cache_dir)
    wait_for_lines(job, 5, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGTERM, "the signal must still end the process after the checkpoint"
    state = torch.load(job / "checkpoint.pt", weights_only=True)
    assert state["progress"]["step"] > 0
    assert summary(job)["status"] == "interrupted"
    run_cli(*JOB, f"hydra.run.dir={job}")
    assert events(job) == events(reference)
    assert summary(job)["test_ppl"] == summary(reference)["test_ppl"]


def test_a_resumed_job_continues_its_wandb_run_rather_than_starting_another(run_cli, tmp_path, cache_dir):
    from test_cli import leet_records

    job = tmp_path / "job"
    proc = start(job, tmp_path, cache_dir, "logger=wandb")
    wait_for_lines(job, 5, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    run_cli(*JOB, "logger=wandb", f"hydra.run.dir={job}")
    first, second = sorted((job / "wandb").glob("offline-run-*"))
    ids = {d.name.rsplit("-", 1)[-1] for d in (first, second)}
    assert len(ids) == 1, f"the resumed job must log to the same W&B run, got {ids}"

    def history(run_dir: Path) -> list[dict]:
        return [r["history"]["item"] for r in leet_records(run_dir) if r["type"] == "history"]

    before, after = history(first), history(second)
    assert before and not any("test/ppl" in h for h in before)
    assert any("test/ppl" in h for h in after), "the resumed part ends the run with its test perplexity"


def test_a_finished_job_is_skipped_and_left_untouched(reference, run_cli):
    kept = ("config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt")
    before = {name: (reference / name).read_bytes() for name in kept}
    proc = run_cli(*JOB, f"hydra.run.dir={reference}")
    assert "already finished" in proc.stdout + proc.stderr  # Hydra's run.log gets that line, nothing else changes
    assert {name: (reference / name).read_bytes() for name in kept} == before


def _interrupted_job(tmp_path: Path, cache_dir: Path) -> Path:
    job = tmp_path / "job"
    proc = start(job, tmp_path, cache_dir)
    wait_for_lines(job, 3, proc)
    proc.kill()
    proc.wait()
    return job


def test_a_corrupt_checkpoint_is_a_one_line_error_and_is_kept(run_cli, tmp_path, cache_dir):
    job = _interrupted_job(tmp_path, cache_dir)
    (job / "checkpoint.pt").write_bytes(b"\x00garbage")
    before = (job / "metrics.jsonl").read_bytes()
    proc = run_cli(*JOB, f"hydra.run.dir={job}", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "is unreadable" in proc.stderr and "move" in proc.stderr
    assert (job / "checkpoint.pt").read_bytes() == b"\x00garbage"
    assert (job / "metrics.jsonl").read_bytes() == before


def test_a_checkpoint_from_another_config_is_refused_naming_the_key(run_cli, tmp_path, cache_dir):
    job = _interrupted_job(tmp_path, cache_dir)
    proc = run_cli(*JOB, "model.hidden_size=24", f"hydra.run.dir={job}", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "another config" in proc.stderr and "model.hidden_size: 16 in the checkpoint, 24 now" in proc.stderr


def test_a_blow_up_ends_as_diverged_while_the_other_job_of_the_sweep_finishes(run_cli, tmp_path):
    """GRU + state dropout at keep 0.1 over 50-step segments overflows: a real, not a staged, NaN."""
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "scheme=none,state_dropout", "model=gru", "dropout=0.9", *TINY, "train.bptt=50",
                   "logger=none", f"hydra.sweep.dir={sweep}")
    by_scheme = {summary(p.parent)["scheme"]: summary(p.parent) for p in sweep.glob("*/summary.json")}
    assert by_scheme["none"]["status"] == "finished"
    diverged = by_scheme["state_dropout"]
    assert diverged["status"] == "diverged" and diverged["diverged_step"] >= 1
    assert diverged["diverged_what"] in ("loss", "gradient", "validation loss")
    last = json.loads((sweep / "1-state_dropout-gru-s0" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "diverged" and last["step"] == diverged["diverged_step"]
    assert "1 diverged, 1 finished" in proc.stdout + proc.stderr


def test_a_checkpoint_from_before_test_weights_existed_resumes_as_it_ran(tmp_path):
    """A job interrupted before ``train.test_weights`` was added tested its best-validation
    weights; its checkpoint resumes under ``best`` and is refused under ``last``, naming the key."""
    from runners import checkpoints
    from runners.build import ConfigError

    now = {"seed": 0, "train": {"epochs": 2, "test_weights": "best"}, "logger": {"name": "none"}}
    before = {"seed": 0, "train": {"epochs": 2}, "logger": {"name": "none"}}
    checkpoints.save(tmp_path, {"progress": {}}, 0, before)
    assert checkpoints.load(tmp_path, now) is not None
    with pytest.raises(ConfigError, match="train.test_weights: best in the checkpoint, last now"):
        checkpoints.load(tmp_path, {**now, "train": {"epochs": 2, "test_weights": "last"}})


def test_ctrl_c_checkpoints_records_interrupted_and_says_how_to_resume(reference, run_cli, tmp_path, cache_dir):
    """Issue 26: SIGINT was a KeyboardInterrupt traceback and ``status: failed``; it is now what SIGTERM is
    (checkpoint, ``interrupted``), ending in one line with the command that resumes, and exit status 130."""
    job = tmp_path / "job"
    proc = start(job, tmp_path, cache_dir)
    wait_for_lines(job, 5, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert line.endswith(f"resume with: python run.py {' '.join(JOB)} paths.cache_dir={cache_dir} threads=1 "
                         f"hydra.run.dir={job}")
    assert summary(job)["status"] == "interrupted"
    run_cli(*JOB, f"hydra.run.dir={job}")
    assert events(job) == events(reference)


def test_the_same_command_again_names_the_unfinished_run_and_how_to_resume_it(tmp_path, cache_dir):
    """Issue 26: rerunning ``python run.py ...`` after a stop started over in a new timestamped folder
    without a word; it now says which run of the same config is unfinished and the command that resumes it."""
    out = tmp_path / "out"
    command = [sys.executable, "run.py", *JOB, f"paths.output_dir={out}", f"paths.cache_dir={cache_dir}", "threads=1"]
    first = subprocess.Popen(command, cwd=ROOT, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("runs/*/metrics.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (stopped,) = [p.parent for p in out.glob("runs/*/metrics.jsonl")]
    wait_for_lines(stopped, 5, first)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    time.sleep(1.1)  # the next run's timestamped folder must differ
    again = subprocess.run([*command, "train.epochs=1"], cwd=ROOT, env=cli_env(tmp_path), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0
    assert "an unfinished run of" not in again.stdout + again.stderr, "another config (epochs differ): not a twin"
    time.sleep(1.1)
    same = subprocess.run(command, cwd=ROOT, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300)
    (line,) = [line for line in (same.stdout + same.stderr).splitlines() if "an unfinished run of this config" in line]
    assert f"is in {stopped} (" in line
    assert line.endswith(f"To resume that one instead: python run.py {' '.join(JOB)} paths.output_dir={out} "
                         f"paths.cache_dir={cache_dir} threads=1 hydra.run.dir={stopped}")
