"""One training job: config in, run store and W&B run out, whatever happens in between.

The shape follows lightning-hydra-template's ``task_wrapper``: everything runs inside
``try/finally`` so the W&B run is always closed and ``summary.json`` always written,
and one crashed job cannot poison the rest of a multirun.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from benchmark.data import DataError
from benchmark.train import train
from runners import build
from runners.build import ConfigError
from runners.run_store import RunStore
from runners.tracking import WandbTracker

log = logging.getLogger("runners.job")


@dataclass(frozen=True)
class JobContext:
    """Where the launcher put this job, and which sweep (W&B group) it belongs to."""

    job_dir: Path
    group: str | None
    multirun: bool


def summary_base(cfg: DictConfig) -> dict:
    rates = build.dropout_rates(cfg)
    return {"run_name": cfg.run_name, "scheme": cfg.scheme.name, "cell": cfg.model.cell, "data": cfg.data.name,
            "seed": int(cfg.seed), "dropout": 0.0 if cfg.scheme.name == "none" else rates}


def run_job(cfg: DictConfig, ctx: JobContext) -> dict:
    """Train one configuration; returns its summary. Raises ``ConfigError`` before any work on bad input."""
    build.check_config(cfg)
    store = RunStore(ctx.job_dir)
    existing = store.existing_status()
    if existing is not None:
        raise ConfigError(f"{ctx.job_dir} already holds a run (status: {existing}); it is left untouched — "
                          "choose another hydra.run.dir / hydra.sweep.dir")
    try:
        data = build.corpus(cfg)
    except DataError as e:
        raise ConfigError(str(e)) from None

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.seed))
    config = OmegaConf.to_container(cfg, resolve=True)
    store.open(config)
    tracker = None
    summary = {**summary_base(cfg), "status": "failed", "best_val_ppl": None, "test_ppl": None,
               "bayes_test_ppl": None, "mc_test_ppl": None, "epochs": 0, "wall_s": None, "train_tokens_per_s": None,
               "diverged_step": None, "error": None, "dir": str(ctx.job_dir)}
    started = time.perf_counter()
    try:
        if cfg.logger.name == "wandb":
            tracker = WandbTracker(project=cfg.logger.project, entity=cfg.logger.entity, mode=cfg.logger.mode,
                                   job_dir=ctx.job_dir, name=cfg.run_name, group=ctx.group,
                                   tags=[cfg.scheme.name, cfg.model.cell, cfg.data.name],
                                   job_type=cfg.scheme.name, config=config)
        dev = build.device(cfg)
        model = build.model(cfg, data.vocab_size)
        log.info("%s | %s | %s, %s params, device %s", cfg.run_name, data.describe(), model.rnn,
                 f"{sum(p.numel() for p in model.parameters()):,}", dev)

        def record(event: dict) -> None:
            store.log(event)
            if tracker is not None:
                tracker.log(event)
            if event["split"] == "val":
                log.info("epoch %d  val ppl %.2f", event["epoch"], event["ppl"])
            elif event["split"] == "test":
                log.info("test ppl %.2f (best-validation weights)", event["ppl"])
            elif event.get("event") == "diverged":
                log.warning("diverged at step %d: non-finite %s", event["step"], event["what"])

        result = train(model, data, build.train_config(cfg), dev, log=record, progress=sys.stderr.isatty())
        summary.update(status=result.status, best_val_ppl=result.best_val_ppl, test_ppl=result.test_ppl,
                       epochs=result.epochs, train_tokens_per_s=result.train_tokens_per_s,
                       diverged_step=result.diverged_step, mc_test_ppl=result.mc_test_ppl)
        if result.diverged_what:
            summary["diverged_what"] = result.diverged_what
        return summary
    except BaseException as e:
        summary["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        log.error("job failed: %s\n%s", summary["error"], traceback.format_exc())
        raise
    finally:
        summary["wall_s"] = time.perf_counter() - started
        store.close(summary)
        if tracker is not None:
            tracker.close(summary)
        if summary["status"] != "failed":
            best = summary["best_val_ppl"]
            log.info("%s: %s, best val ppl %s, summary in %s", cfg.run_name, summary["status"],
                     f"{best:.2f}" if best is not None and math.isfinite(best) else "-", ctx.job_dir)
