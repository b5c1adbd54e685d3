"""Weights & Biases tracking with the real ``wandb`` library, offline unless asked.

A laptop with no account must run without a prompt, so the mode follows
``analysis.wandb_mode.resolve_mode`` (``offline`` unless ``WANDB_MODE`` says otherwise or an
API key is configured), the same rule the dashboard reads. Each job opens its own run in its
own directory and closes it in ``finally``: wandb 0.31 otherwise hands the next job of a
multirun the run of the previous one.

The run declares its metrics the way W&B's run table and sweep charts read them: per-epoch
curves (``val/*``, ``train_epoch/*``) are plotted against ``epoch`` rather than the optimizer
step. Each quantity has one name in the run's summary (issue 25). The job's scores are
``summary.json``'s, copied in at the end (``best_val_ppl``, ``test_ppl``, ``mc_test_ppl``,
``test_epoch``); the summaries W&B would keep of the curves they come from (``val/ppl``'s
last or lowest value, ``test/ppl``'s) are switched off rather than the copies, because a
resumed job's W&B run aggregates anew: the resumed part's minimum of ``val/ppl`` covers only
the epochs it logged itself (offline, its own ``offline-run-*``; online, W&B stops updating
them after a resume, wandb issue 9684), while ``summary.json`` carries the best epoch across
the resume in the checkpoint. The copies also leave out a validation that blew up, as the
job does, where W&B's minimum would count it (and be NaN after a NaN).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from analysis.wandb_mode import resolve_mode

log = logging.getLogger(__name__)

# W&B's job_type names what a run does, so the run table can separate training from
# evaluation; the scheme and cell are in the config and the tags, where grouping reads them.
JOB_TYPES = ("train", "eval", "sweep")  # sweep: the end-of-sweep results table (runners.callbacks)

# The x axis of every per-epoch curve: W&B otherwise plots them against the optimizer step,
# which differs between corpora and batch sizes, so two sweeps' curves would not line up.
STEP_METRIC = "epoch"
EPOCH_CURVES = ("train_epoch/*", "val/*")
# Metrics (or globs) whose summary W&B must not keep, each because another summary entry holds the
# same quantity (issue 25); every other metric's summary is its last value.
NO_SUMMARY = (
    "train/*",  # per-interval curves: their last value is one interval, the whole epoch's is train_epoch/*
    "train_epoch/tokens_per_s",  # the run's throughput is train_tokens_per_s, over every epoch
    "val/*",  # best_val_ppl (val/loss is the same score in nats per token)
    "test/*",  # test_ppl, mc_test_ppl and test_epoch (mc_samples is train.mc_samples in the config)
)
# What a model artifact's metadata says about the weights it holds.
MODEL_METADATA = ("run_name", "scheme", "cell", "data", "seed", "status", "best_val_ppl", "test_ppl", "epochs")


def define_metrics(run: Any) -> None:
    """Declare the step metric and summaries of ``run`` (see the module docstring for why).

    Called on every start, resumed or not: W&B keeps definitions per process, and a resumed
    job writes a new offline segment that must carry them too.
    """
    # no summary for the step metric either: summary.json's `epochs` counts the epochs (for a
    # diverged run, the completed ones only)
    run.define_metric(STEP_METRIC, summary="none")
    for pattern in EPOCH_CURVES:
        run.define_metric(pattern, step_metric=STEP_METRIC)
    for name in NO_SUMMARY:
        # a definition replaces an earlier one of the same name or glob, so it restates the step metric
        on_epochs = any(name.startswith(p.rstrip("*")) for p in EPOCH_CURVES)
        run.define_metric(name, summary="none", **({"step_metric": STEP_METRIC} if on_epochs else {}))


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else ""


# The columns of the end-of-sweep results table: one row per job, the scores a reader compares.
RESULT_COLUMNS = ("run_name", "scheme", "cell", "seed", "dropout", "status", "best_val_ppl", "test_ppl",
                  "mc_test_ppl", "epochs", "diverged_step")


def log_sweep_results(rows: list[dict], *, project: str, entity: str | None, mode: str, group: str,
                      out_dir: Path) -> None:
    """The sweep's results as one ``wandb.Table`` in a run of its own (job type ``sweep``, the sweep's group).

    W&B's run table shows each job; this is the sweep's one table to keep, sort and share
    (issue 25). A broken W&B costs a warning, never the sweep.
    """
    try:
        import wandb

        run = wandb.init(project=project, entity=entity, mode=resolve_mode(mode), dir=str(out_dir),
                         name=f"{group}-results", group=group, job_type="sweep", reinit="finish_previous",
                         settings=wandb.Settings(quiet=True))
        try:
            table = wandb.Table(columns=list(RESULT_COLUMNS), data=[[row.get(c) for c in RESULT_COLUMNS]
                                                                     for row in rows])
            run.log({"sweep/results": table})
        finally:
            run.finish()
    except Exception as e:  # noqa: BLE001 - the runs are on disk and in W&B already
        log.warning("W&B did not take the sweep's results table (%s: %s)", type(e).__name__, _first_line(e))


def wandb_key(record: dict) -> str:
    """Metric namespace in W&B: ``train/``, ``train_epoch/`` (whole-epoch mean), ``val/``, ``test/``."""
    return "train_epoch" if record.get("scope") == "epoch" else record["split"]


class WandbTracker:
    """Mirrors the run store into one W&B run; a broken W&B never stops training."""

    def __init__(self, *, project: str, entity: str | None, mode: str, job_dir: Path, name: str,
                 group: str | None, tags: list[str], config: dict, job_type: str = "train",
                 run_id: str | None = None) -> None:
        """Open the job's run; on any W&B failure, warn once and leave ``run`` as None.

        ``job_type`` is one of ``JOB_TYPES``. Anything else (a scheme name, as older callers
        passed) is logged as ``train`` with a warning: one job type per scheme would split a
        sweep's training runs in W&B's run table instead of grouping them.
        """
        self._attach(None)
        if job_type not in JOB_TYPES:
            log.warning("W&B job_type=%r is not a kind of job (%s); logging this run as 'train'",
                        job_type, ", ".join(JOB_TYPES))
            job_type = "train"
        try:
            import wandb

            if os.environ.get("WANDB_SWEEP_ID"):
                # Started by `wandb agent`: the agent has named the run (WANDB_RUN_ID) and waits for it;
                # the job-directory id would make another run outside the sweep.
                run_id = None
            run = wandb.init(project=project, entity=entity, mode=resolve_mode(mode), dir=str(job_dir),
                             name=name, group=group, tags=tags, job_type=job_type, config=config,
                             id=run_id, resume="allow" if run_id else None,
                             reinit="finish_previous", settings=wandb.Settings(quiet=True))
            self._attach(run)
        except Exception as e:  # noqa: BLE001 - tracking is optional, the run store is not
            log.warning("W&B is unavailable (%s: %s); this job continues with the local run store only",
                        type(e).__name__, _first_line(e))
            return
        try:
            define_metrics(self.run)
        except Exception as e:  # noqa: BLE001 - the run still logs, only with W&B's default axes and summaries
            log.warning("W&B did not take the metric definitions (%s: %s); curves use its default step axis",
                        type(e).__name__, _first_line(e))

    @classmethod
    def around(cls, run: Any) -> WandbTracker:
        """A tracker over a run that is already open (the tests pass one that records what it is sent),
        its metrics declared as ``__init__`` declares them: what the summary keeps depends on them."""
        tracker = cls.__new__(cls)
        tracker._attach(run)
        define_metrics(run)
        return tracker

    def _attach(self, run: Any) -> None:
        self.run = run
        self._probe_rows: list[list] = []  # every probe's state norms, logged as one table at close
        self._last_step = 0

    def log(self, record: dict) -> None:
        """Send one run-store event: its numbers under ``<prefix>/<key>``, with ``epoch`` beside them."""
        if self.run is None:
            return
        prefix = wandb_key(record)
        values = {f"{prefix}/{k}": v for k, v in record.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step")}
        if record["split"] == "probe" and record.get("state_norm"):
            label = f"{record.get('at', 'probe')} {record['step'] if record.get('at') == 'step' else record['epoch']}"
            self._probe_rows += [[label, record["epoch"], record["step"], t, v]
                                 for t, v in enumerate(record["state_norm"])]
        values["epoch"] = record["epoch"]
        self._last_step = max(self._last_step, record["step"])
        self.run.log(values, step=record["step"])

    def _log_probe_table(self) -> None:
        """Every probe's state norm per time step as one table and one line plot (a line per probe).

        A table per probe made one W&B artifact each (11 in a 10-step run, issue 25); one
        per run holds the same rows, and the plot's ``stroke`` keeps the probes apart.
        """
        if not self._probe_rows:
            return
        import wandb

        table = wandb.Table(columns=["probe", "epoch", "step", "t", "state_norm"], data=self._probe_rows)
        self.run.log({"probe/state_norm": wandb.plot.line(table, "t", "state_norm", stroke="probe",
                                                          title="carried-state norm per time step, every probe")},
                     step=self._last_step)
        self._probe_rows = []

    def _log_model(self, files: list[Path], summary: dict) -> None:
        """The final checkpoint and its config as a W&B model artifact (``logger.log_model=true``)."""
        import wandb

        artifact = wandb.Artifact(f"model-{self.run.id}", type="model",
                                  metadata={k: summary.get(k) for k in MODEL_METADATA if summary.get(k) is not None})
        for path in files:
            artifact.add_file(str(path), name=path.name)
        self.run.log_artifact(artifact, aliases=["final"])

    def close(self, summary: dict, model_files: list[Path] | None = None) -> None:
        """Copy ``summary.json`` into the run's summary and finish it (exit code 1 for a failed job).

        ``model_files`` (the checkpoint and config of a finished job, when ``logger.log_model``
        is on) are logged as one model artifact. A W&B failure here is a warning: the run
        store already holds everything.
        """
        if self.run is None:
            return
        try:
            self._log_probe_table()
            self.run.summary.update({k: v for k, v in summary.items() if v is not None})
            if model_files:
                self._log_model(model_files, summary)
        except Exception as e:  # noqa: BLE001 - tracking is optional, the run store is not
            log.warning("W&B did not take the end of this run (%s: %s); the run store has it",
                        type(e).__name__, _first_line(e))
        finally:
            self.run.finish(exit_code=0 if summary.get("status") != "failed" else 1)
            self.run = None
