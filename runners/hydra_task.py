"""The bridge from Hydra to a job: where the job lives, and how errors reach the user.

A bad value must cost one line, not a traceback: Hydra's own refusals (an unknown option or
key) are put in one line by ``runners.hydra_app``, the checks Hydra cannot make run as a
callback (``runners.hydra_checks``), and ``ConfigError`` from the job's own checks is printed
as ``error: ...``; each exits with status 2 before any training. A job that fails while
training is recorded as ``failed`` in its ``summary.json``; in a sweep the other jobs go on,
and the end-of-sweep summary lists it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runners.build import ConfigError
from runners.hydra_app import CONF_DIR, CommandLine, fail, run_app
from runners.hydra_checks import require_optuna_for
from runners.job import (SWEEP_STOPPED, Interrupted, JobContext, ModelDoesNotFit, disk_full, joblib_worker,
                         rerun_command, run_job)

def main(app: Callable[[], Any]) -> None:
    """What ``run.py`` and ``rnn-bench`` run: ``app`` (their ``@hydra.main``) with the suite's one-line errors.

    The Optuna check comes first, on the command line: without the extra, Hydra's plugin scan
    would warn about the missing sweeper before any message of ours.
    """
    require_optuna_for(CommandLine.parse(sys.argv[1:]).overrides)
    run_app(app, CONF_DIR, "config")


def parallel_share(hc, cores: int | None = None, gpus: int | None = None) -> tuple[int | None, int | None]:
    """(torch threads, GPU index) for a job of a parallel local sweep, else (None, None).

    Parallel jobs with default threading oversubscribe the CPU: on a 2-core machine two
    concurrent LSTM jobs ran several-fold slower. Each job of a joblib sweep therefore gets
    its share of the cores, and on a machine with several GPUs a GPU of its own.
    ``cores`` and ``gpus`` default to what this machine has.
    """
    launcher = hc.launcher.get("_target_", "") if hc.get("launcher") else ""
    if "joblib" not in str(launcher):
        return None, None
    import os

    import torch

    cores = cores if cores is not None else (os.cpu_count() or 1)
    gpus = gpus if gpus is not None else torch.cuda.device_count()
    n_jobs = int(hc.launcher.get("n_jobs", -1))
    workers = n_jobs if n_jobs > 0 else (gpus or cores)
    gpu = int(hc.job.num) % gpus if gpus > 1 else None
    return max(1, cores // workers), gpu


def task(cfg: DictConfig) -> float:
    """One composed job, run inside Hydra: its directory and W&B group from Hydra, its errors as one line.

    Returns what a hyperparameter search minimises. In a sweep a failed job returns +inf (its
    summary says why) so the other jobs go on; alone, it ends the process with its error.
    """
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    threads, gpu = parallel_share(hc) if multirun else (None, None)
    if threads is not None and cfg.threads is None:
        cfg.threads = threads
    if gpu is not None and cfg.device == "auto":
        cfg.device = f"cuda:{gpu}"
    if multirun and (Path(hc.sweep.dir) / SWEEP_STOPPED).exists():
        return float("inf")  # Ctrl-C reached the sweep before this job started: it stays unstarted
    ctx = JobContext(job_dir=Path(hc.runtime.output_dir),
                     group=sweep_group(hc.sweep.dir, hc.runtime.choices) if multirun else None, multirun=multirun)
    try:
        summary = run_job(cfg, ctx)
    except ConfigError as e:
        fail(str(e))
    except (Interrupted, KeyboardInterrupt):
        if multirun and joblib_worker():  # the launcher ends the sweep once every running job has stopped
            return float("inf")
        print(f"interrupted: {ctx.job_dir} keeps its checkpoint; resume with: {resume_command(hc)}",
              file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as e:
        if isinstance(e, ModelDoesNotFit) and not multirun:
            fail(str(e))
        if disk_full(e) and not multirun:
            fail(f"{e.strerror} while writing {e.filename or ctx.job_dir}; free some space and run the same "
                 f"command again: the job resumes from its last checkpoint")
        if not multirun:
            raise
        return float("inf")  # recorded as failed in summary.json; the sweep goes on
    return objective(summary)


TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}")


def sweep_group(sweep_dir: str, choices: Mapping[str, Any]) -> str:
    """A sweep's W&B group: its folder's name, led by what made it when the folder is a bare timestamp.

    A project page of groups named ``2026-12-07_10-31-02`` does not say what each one is
    (issue 25): the default sweep folder becomes ``quickstart-2026-12-07_10-31-02`` after the
    preset (``experiment``, else ``hparams_search``, else ``case``), or ``sweep-...`` without
    one. A folder the user named (``hydra.sweep.dir=outputs/search/variational``) is the name.
    The group still names the folder: the timestamp is its last part.
    """
    name = Path(sweep_dir).name
    if not TIMESTAMP.fullmatch(name):
        return name
    label = next((str(choices[g]) for g in ("experiment", "hparams_search", "case") if choices.get(g)), "sweep")
    return f"{label}-{name}"


def resume_command(hc: Any) -> str:
    """The command that continues this job or sweep: as typed, with its directory pinned."""
    if hc.mode == RunMode.MULTIRUN:
        return rerun_command("hydra.sweep.dir", hc.sweep.dir)
    return rerun_command("hydra.run.dir", hc.runtime.output_dir)


def objective(summary: dict) -> float:
    """What a hyperparameter search minimises: the best validation perplexity.

    A diverged or failed job scores +inf, so a search moves away from rates that blow up.
    """
    best = summary.get("best_val_ppl")
    return float(best) if summary.get("status") == "finished" and best is not None else float("inf")
