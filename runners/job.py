"""One training job: config in, run store and W&B run out, whatever happens in between.

The shape follows lightning-hydra-template's ``task_wrapper``: everything runs inside
``try/finally`` so the W&B run is always closed and ``summary.json`` always written,
and one crashed job cannot poison the rest of a multirun.

Re-running a job directory continues it: a finished (or diverged) job is skipped, any
other resumes from its checkpoint. SIGTERM and SIGUSR1 (what SLURM sends before a
preemption or a time-out) write a checkpoint at the next step boundary, then let the
signal take its usual course, so a requeued job picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig

from analysis.store_format import CHECKPOINT, CONFIG, DONE, JobSummary, read_summary
from benchmark.data import Corpus, DataError
from benchmark.data.corpus import HIGH_UNK_SHARE, unk_share
from benchmark.machine import machine, set_flush_denormal
from benchmark.train import TrainResult, check_batches, train
from runners import build, checkpoints
from runners.build import BuiltJob, ConfigError
from runners.job_events import EventSink
from runners.run_store import JobDirBusy, RunStore, job_lock
from runners.tracking import WandbTracker

log = logging.getLogger("runners.job")
STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None),
                                  signal.SIGINT) if s)


# In a sweep directory while Ctrl-C stops a parallel sweep: a job dispatched after the signal does
# not start (written by hydra_plugins/rnn_bench/resilient_joblib.py, read by runners.hydra_task).
SWEEP_STOPPED = ".interrupted"


class Interrupted(Exception):
    """Ctrl-C stopped the job after its checkpoint: the caller says how to resume, then exits 130."""


@dataclass(frozen=True)
class JobContext:
    """Where the launcher put this job, and which sweep (W&B group) it belongs to."""

    job_dir: Path
    group: str | None
    multirun: bool


_orphan_watch = False


def disk_full(error: BaseException) -> bool:
    """A write that failed for want of space (or quota): the user frees some and reruns, the job resumes."""
    import errno

    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def joblib_worker() -> bool:
    """Whether this job runs in a worker of Hydra's joblib launcher (``hydra/launcher=local_parallel``)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return "joblib" in str(HydraConfig.get().launcher.get("_target_", ""))
    except (ValueError, AttributeError):  # no Hydra context: called as a library
        return False


def stop_when_orphaned(interval: float = 1.0) -> None:
    """Stop this worker (as SIGTERM would: checkpoint, then exit) once its sweep process is gone.

    Killing a ``local_parallel`` sweep left its joblib workers training on as orphans
    (issue 15): loky's workers do not watch their parent. A daemon thread notices the
    re-parenting and sends this process SIGTERM, which ``stop_on_signals`` turns into a
    checkpoint at the next step boundary, so rerunning the sweep resumes the job.
    """
    import os

    global _orphan_watch
    if _orphan_watch:  # a joblib worker runs many jobs: one watcher per process
        return
    _orphan_watch = True
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        log.warning("the sweep process %d is gone; stopping this job", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


@contextmanager
def stop_on_signals():
    """Turn SIGTERM/SIGUSR1 into a flag the training loop polls; re-deliver the signal at exit.

    The previous handlers (the default, or submitit's requeue handler) are restored
    before the signal is raised again, so the launcher still does what it does on
    preemption, only after the checkpoint is on disk.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def handler(signum, frame):  # noqa: ARG001
        received.append(signum)

    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    try:
        yield lambda: bool(received)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if received and received[0] == signal.SIGINT:
            # Ctrl-C is the user's own stop, not a launcher's: Python's handler would print a
            # KeyboardInterrupt traceback after the checkpoint (issue 26).
            raise Interrupted()
        if received:
            log.warning("received signal %d: checkpoint written, handing the signal on", received[0])
            signal.raise_signal(received[0])


def wandb_run_id(job_dir: Path) -> str:
    """The same id every time this job directory runs, so a resumed job continues its W&B run."""
    return hashlib.sha1(str(job_dir.resolve()).encode()).hexdigest()[:16]


def run_job(cfg: DictConfig, ctx: JobContext) -> dict:
    """Train one configuration; returns its summary. Raises ``ConfigError`` before any work on bad input.

    The job directory is locked for the whole job: a second process aimed at it gets a
    one-line error instead of training into the same files.
    """
    job = build.job(cfg)
    try:
        with job_lock(ctx.job_dir), lines_named(job.name):
            return _run_locked(job, ctx)
    except JobDirBusy as e:
        raise ConfigError(str(e)) from None


class _JobName(logging.Filter):
    """Lead every line of the job's log with its name: two jobs of a parallel sweep share one terminal."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.prefix = f"[{name}] "

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            record.msg = self.prefix + str(record.msg)
        return True


@contextmanager
def lines_named(name: str):
    """While a job runs, its log lines (``runners.job``) start with ``[name]`` (issue 26)."""
    named = _JobName(name)
    log.addFilter(named)
    try:
        yield
    finally:
        log.removeFilter(named)


def build_model(job: BuiltJob, vocab_size: int) -> torch.nn.Module:
    """The model, or ``ModelDoesNotFit`` (one line) when its weights do not fit in memory.

    ``model.hidden_size=2000000000`` was a traceback from torch's allocator (issue 26, found
    hunting beyond the list): the size is the user's to change (``ModelDoesNotFit``).
    """
    try:
        return job.model(vocab_size)
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not isinstance(e, torch.OutOfMemoryError) and "allocate" not in str(e):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(e))
        size = f" (one of its weights alone needs {int(asked.group(1)) / 2**30:,.1f} GiB)" if asked else ""
        m = job.model_config
        raise ModelDoesNotFit(f"the model does not fit in memory{size}: model.emb_size={m.emb_size}, "
                              f"model.hidden_size={m.hidden_size}, model.num_layers={m.num_layers}; "
                              f"use a smaller model") from None


class ModelDoesNotFit(MemoryError):
    """A model whose weights cannot be allocated: one line, not torch's allocator traceback.

    Not a ``ConfigError``: it is found while the job runs, so a sweep records that job as
    failed and goes on, as with any job that raises; a single job ends with the one line.
    """


def rerun_command(key: str, where: Path | str) -> str:
    """This process's command line with ``key`` (``hydra.run.dir`` or ``hydra.sweep.dir``) pinned to ``where``.

    The default run and sweep directories are timestamps, so the same command typed again
    starts afresh beside an interrupted run; naming its directory resumes it (issue 26).
    """
    entry = ["python", "run.py"] if Path(sys.argv[0]).name == "run.py" else [Path(sys.argv[0]).name]
    given = [a for a in sys.argv[1:] if not a.startswith(f"{key}=")]  # the command as typed, sweep and all
    return " ".join(shlex.quote(w) for w in [*entry, *given, f"{key}={where}"])


def unfinished_twins(runs_root: Path, config: dict, here: Path) -> list[tuple[Path, int]]:
    """(directory, epochs done) of the runs under ``runs_root`` that hold a checkpoint of this very
    config and never finished, newest first: what a user who reran the same command meant to resume."""
    want = json.loads(json.dumps(checkpoints.fingerprint(config), sort_keys=True))
    found = []
    for config_file in runs_root.glob(f"*/{CONFIG}"):
        job = config_file.parent
        if job.resolve() == here.resolve() or not (job / CHECKPOINT).is_file():
            continue
        summary = read_summary(job)
        if summary is not None and summary.status in DONE:
            continue
        try:
            saved = checkpoints.with_added_keys(checkpoints.fingerprint(yaml.safe_load(config_file.read_text()) or {}))
        except (OSError, yaml.YAMLError):
            continue
        if json.loads(json.dumps(saved, sort_keys=True)) == want:
            found.append((job.stat().st_mtime, job, int(summary.epochs or 0) if summary is not None else 0))
    return [(job, epochs) for _, job, epochs in sorted(found, key=lambda f: f[0], reverse=True)]


def _run_locked(job: BuiltJob, ctx: JobContext) -> dict:
    """The job, in its order: skip or resume, data, seed, the store, then training inside try/finally."""
    store = RunStore(ctx.job_dir)
    existing = store.summary()
    if existing is not None and existing.status in DONE:
        log.info("already %s in %s; skipped", existing.status, ctx.job_dir)
        return existing.to_json()
    resume = resume_point(job, ctx, store)
    data = corpus(job)
    set_flush_denormal(job.flush_denormal)  # before any parallel op: torch's worker threads inherit it
    if job.threads:
        torch.set_num_threads(int(job.threads))
    torch.manual_seed(job.seed)
    store.open(job.config, resume_at=resume["metrics_offset"] if resume else None)
    summary = JobSummary.start(job.config, test_weights=job.train.test_weights, dir=str(ctx.job_dir),
                               unk_share={split: unk_share(getattr(data, split), data.itos) for split in ("valid", "test")})
    warn_unknown_words(summary, len(data.train))
    # The signal is handed on only after summary.json is written and the W&B run closed.
    if joblib_worker():
        stop_when_orphaned()
    with stop_on_signals() as should_stop:
        started = time.perf_counter()
        tracker = None
        try:
            if job.logger.get("name") == "wandb":
                tracker = open_tracker(job, ctx)
                summary.wandb_group = ctx.group  # what the dashboard filters on (analysis.dashboard)
            result = train_model(job, ctx, data, summary, EventSink(store, tracker, len(data.train), job.train.epochs),
                                 resume, should_stop)
            summary.status, summary.best_val_ppl, summary.test_ppl = result.status, result.best_val_ppl, result.test_ppl
            summary.epochs, summary.train_tokens_per_s = result.epochs, result.train_tokens_per_s
            summary.diverged_step, summary.diverged_what = result.diverged_step, result.diverged_what
            summary.mc_test_ppl, summary.test_epoch = result.mc_test_ppl, result.test_epoch
            summary.bayes_test_ppl = getattr(data, "bayes_test_ppl", None)
            return summary.to_json()
        except BaseException as e:
            summary.error = f"{type(e).__name__}: {e}".splitlines()[0]
            if isinstance(e, ConfigError):
                pass  # the caller prints it as the one error line; summary.json keeps it
            elif disk_full(e) or isinstance(e, ModelDoesNotFit):  # the user's to fix, not a bug: one line
                log.error("job failed: %s", summary.error)
            else:
                log.error("job failed: %s\n%s", summary.error, traceback.format_exc())
            raise
        finally:
            summary.wall_s = time.perf_counter() - started
            store.close(summary)
            if tracker is not None:
                keep = job.logger.get("log_model", False) and summary.status == "finished"
                tracker.close(summary.to_json(), model_files=[ctx.job_dir / CHECKPOINT, ctx.job_dir / CONFIG]
                              if keep else None)
            if summary.status != "failed":
                best = summary.best_val_ppl
                log.info("%s, best val ppl %s, summary in %s", summary.status,
                         f"{best:.2f}" if best is not None and math.isfinite(best) else "-", ctx.job_dir)


def resume_point(job: BuiltJob, ctx: JobContext, store: RunStore) -> dict | None:
    """The checkpoint this job resumes from, or None; says when an unfinished run is started over,
    or when a single run has an unfinished twin elsewhere (the same command typed again)."""
    resume = checkpoints.load(ctx.job_dir, job.config)  # ConfigError if corrupt or from another config
    if resume is None and store.existing_status() is not None:
        log.warning("%s holds an unfinished run with no checkpoint; starting it over", ctx.job_dir)
    if resume is None and not ctx.multirun:
        twins = unfinished_twins(job.runs_dir, job.config, ctx.job_dir)
        if twins:
            twin, epochs = twins[0]
            log.warning("an unfinished run of this config is in %s (%d epochs done); this job starts a new one "
                        "beside it. To resume that one instead: %s", twin, epochs, rerun_command("hydra.run.dir", twin))
    return resume


def corpus(job: BuiltJob) -> Corpus:
    """The job's corpus, checked against its batch sizes: a corpus that cannot fill them is a ``ConfigError``."""
    try:
        data = job.corpus()
        check_batches(data, job.train)
    except DataError as e:
        raise ConfigError(str(e)) from None
    return data


def warn_unknown_words(summary: JobSummary, train_tokens: int) -> None:
    """A score on mostly-unknown words measures the vocabulary, not the model (issue 26): say so."""
    high = {split: share for split, share in summary.unk_share.items() if share > HIGH_UNK_SHARE}
    if high:
        summary.warnings = [f"{share:.0%} of the {split} tokens are <unk>: the vocabulary built from "
                            f"{train_tokens:,} training tokens does not cover it; its perplexity "
                            f"says little" for split, share in high.items()]
        for warning in summary.warnings:
            log.warning("%s", warning)


def open_tracker(job: BuiltJob, ctx: JobContext) -> WandbTracker:
    """The job's W&B run: one per job directory, resumed with it, in the sweep's group."""
    return WandbTracker(project=job.logger["project"], entity=job.logger.get("entity"), mode=job.logger["mode"],
                        job_dir=ctx.job_dir, name=job.name, group=ctx.group,
                        tags=[job.scheme, job.model_config.cell, job.data, f"seed-{job.seed}"],
                        job_type="train", config=job.config, run_id=wandb_run_id(ctx.job_dir))


def train_model(job: BuiltJob, ctx: JobContext, data: Corpus, summary: JobSummary, sink: EventSink,
                resume: dict | None, should_stop: Callable[[], bool]) -> TrainResult:
    """Make the model, record where it runs and the plan it runs, and train it, checkpointing into the job directory."""
    summary.machine = machine(job.device)  # where it ran: CPU and vector flags, torch, device
    model = build_model(job, data.vocab_size)
    # The plan the engine runs, as data: each site's rate, granularity, scaling and whether
    # it compounds, so analysis reads what ran instead of re-deriving it from scheme names.
    summary.plan = model.rnn.plan.describe()
    log.info("%s | %s, %s params, device %s%s", data.describe(), model.rnn,
             f"{sum(p.numel() for p in model.parameters()):,}", job.device,
             f" | resuming epoch {resume['progress']['epoch']} step {resume['progress']['step']}" if resume else "")
    if job.hardware == "gpu" and job.device.type != "cuda":
        log.warning("this job is sized for a GPU and runs on the CPU here; for the real thing launch it on "
                    "a cluster, e.g. python run.py -m experiment=<preset> hydra/launcher=submitit_slurm")

    def save(state: dict) -> None:
        checkpoints.save(ctx.job_dir, state, sink.store.offset(), job.config)

    return train(model, data, job.train, job.device, log=sink, progress=sys.stderr.isatty(), resume=resume,
                 on_checkpoint=save, should_stop=should_stop)
