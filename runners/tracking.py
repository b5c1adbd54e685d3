"""Weights & Biases tracking with the real ``wandb`` library, offline unless asked.

A laptop with no account must run without a prompt, so the mode follows
``analysis.wandb_mode.resolve_mode`` (``offline`` unless ``WANDB_MODE`` says otherwise or an
API key is configured), the same rule the dashboard reads. Each job opens its own run in its
own directory and closes it in ``finally``: wandb 0.31 otherwise hands the next job of a
multirun the run of the previous one.

The run declares its metrics the way W&B's run table and sweep charts read them: per-epoch
curves (``val/*``, ``train_epoch/*``) are plotted against ``epoch`` rather than the optimizer
step, the summary of ``val/ppl`` is its minimum over epochs (the number a sweep is judged
by, not whatever the last epoch happened to score) and that of ``test/*`` is the last value
logged (it is logged once, after training, with the weights ``train.test_weights`` names).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from analysis.wandb_mode import resolve_mode

log = logging.getLogger(__name__)

# W&B's job_type names what a run does, so the run table can separate training from
# evaluation; the scheme and cell are in the config and the tags, where grouping reads them.
JOB_TYPES = ("train", "eval")

# The x axis of every per-epoch curve: W&B otherwise plots them against the optimizer step,
# which differs between corpora and batch sizes, so two sweeps' curves would not line up.
STEP_METRIC = "epoch"
EPOCH_CURVES = ("train_epoch/*", "val/*")
# (metric, summary): the value the run table shows and a sweep chart compares.
SUMMARIES = (("val/ppl", "min"), ("val/loss", "min"), ("test/*", "last"))


def define_metrics(run: Any) -> None:
    """Declare the step metric and summaries of ``run`` (see the module docstring for why).

    Called on every start, resumed or not: W&B keeps definitions per process, and a resumed
    job writes a new offline segment that must carry them too.
    """
    run.define_metric(STEP_METRIC)
    for pattern in EPOCH_CURVES:
        run.define_metric(pattern, step_metric=STEP_METRIC)
    for name, summary in SUMMARIES:
        if name.endswith("/*"):
            run.define_metric(name, summary=summary)
        else:  # a named metric's definition replaces its glob's, so it restates the step metric
            run.define_metric(name, step_metric=STEP_METRIC, summary=summary)


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else ""


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
        self.run = None
        if job_type not in JOB_TYPES:
            log.warning("W&B job_type=%r is not a kind of job (%s); logging this run as 'train'",
                        job_type, ", ".join(JOB_TYPES))
            job_type = "train"
        try:
            import wandb

            self.run = wandb.init(project=project, entity=entity, mode=resolve_mode(mode), dir=str(job_dir),
                                  name=name, group=group, tags=tags, job_type=job_type, config=config,
                                  id=run_id, resume="allow" if run_id else None,
                                  reinit="finish_previous", settings=wandb.Settings(quiet=True))
        except Exception as e:  # noqa: BLE001 - tracking is optional, the run store is not
            log.warning("W&B is unavailable (%s: %s); this job continues with the local run store only",
                        type(e).__name__, _first_line(e))
            return
        try:
            define_metrics(self.run)
        except Exception as e:  # noqa: BLE001 - the run still logs, only with W&B's default axes and summaries
            log.warning("W&B did not take the metric definitions (%s: %s); curves use its default step axis",
                        type(e).__name__, _first_line(e))

    def log(self, record: dict) -> None:
        """Send one run-store event: its numbers under ``<prefix>/<key>``, with ``epoch`` beside them."""
        if self.run is None:
            return
        prefix = wandb_key(record)
        values = {f"{prefix}/{k}": v for k, v in record.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step")}
        if record["split"] == "probe" and record.get("state_norm"):
            import wandb  # the state norm per time step, as a line plot in the run's workspace

            table = wandb.Table(columns=["t", "state_norm"], data=[[t, v] for t, v in enumerate(record["state_norm"])])
            values["probe/state_norm"] = wandb.plot.line(table, "t", "state_norm",
                                                         title=f"carried-state norm, epoch {record['epoch']}")
        values["epoch"] = record["epoch"]
        self.run.log(values, step=record["step"])

    def close(self, summary: dict) -> None:
        """Copy ``summary.json`` into the run's summary and finish it (exit code 1 for a failed job)."""
        if self.run is None:
            return
        try:
            self.run.summary.update({k: v for k, v in summary.items() if v is not None})
        finally:
            self.run.finish(exit_code=0 if summary.get("status") != "failed" else 1)
            self.run = None
