"""Weights & Biases tracking with the real ``wandb`` library, offline unless asked.

A laptop with no account must run without a prompt, so the mode is ``offline`` unless
``WANDB_MODE`` says otherwise or an API key is configured (``WANDB_API_KEY`` or a
``wandb login`` entry in ``~/.netrc``). Each job opens its own run in its own directory
and closes it in ``finally``: wandb 0.31 otherwise hands the next job of a multirun the
run of the previous one.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_mode(requested: str) -> str:
    """``auto`` -> ``WANDB_MODE`` if set, else online with a key and offline without."""
    if requested != "auto":
        return requested
    return os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")


def wandb_key(record: dict) -> str:
    """Metric namespace in W&B: ``train/``, ``train_epoch/`` (whole-epoch mean), ``val/``, ``test/``."""
    return "train_epoch" if record.get("scope") == "epoch" else record["split"]


class WandbTracker:
    """Mirrors the run store into one W&B run; a broken W&B never stops training."""

    def __init__(self, *, project: str, entity: str | None, mode: str, job_dir: Path, name: str,
                 group: str | None, tags: list[str], job_type: str, config: dict, run_id: str | None = None) -> None:
        self.run = None
        try:
            import wandb

            self.run = wandb.init(project=project, entity=entity, mode=resolve_mode(mode), dir=str(job_dir),
                                  name=name, group=group, tags=tags, job_type=job_type, config=config,
                                  id=run_id, resume="allow" if run_id else None,
                                  reinit="finish_previous", settings=wandb.Settings(quiet=True))
        except Exception as e:  # noqa: BLE001 - tracking is optional, the run store is not
            log.warning("W&B is unavailable (%s: %s); this job continues with the local run store only",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")

    def log(self, record: dict) -> None:
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
        if self.run is None:
            return
        try:
            self.run.summary.update({k: v for k, v in summary.items() if v is not None})
        finally:
            self.run.finish(exit_code=0 if summary.get("status") != "failed" else 1)
            self.run = None
