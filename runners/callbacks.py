"""What happens when a sweep ends: a one-screen summary and the report.

A Hydra ``Callback`` so it runs in the launching process after every launcher
(basic, joblib, submitit), once all jobs have returned.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from analysis.store_format import SUMMARY

log = logging.getLogger("runners.sweep")


def sweep_summary(sweep_dir: Path) -> str:
    """One line per job (status, best validation ppl, directory), then the counts."""
    lines, counts = [], {}
    def job_order(path: Path) -> tuple:  # "10-..." after "9-...": Hydra's job number, not text order
        head = path.parent.name.split("-", 1)[0]
        return (int(head) if head.isdigit() else float("inf"), str(path))

    for path in sorted(sweep_dir.glob(f"**/{SUMMARY}"), key=job_order):
        try:
            s = json.loads(path.read_text())
        except ValueError:
            s = {"status": "unreadable"}
        status = s.get("status", "unreadable")
        counts[status] = counts.get(status, 0) + 1
        best = s.get("best_val_ppl")
        detail = s.get("error") or (f"diverged at step {s['diverged_step']}" if status == "diverged" else "")
        lines.append(f"  {status:<9} {best if best is None else round(best, 2)!s:>9}  {path.parent}  {detail}".rstrip())
    total = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no runs"
    return "\n".join([f"sweep {sweep_dir}: {total}", "  status    best val  run", *lines])


class SweepReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from analysis.report import write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        if "joblib" in str(config.hydra.launcher.get("_target_", "")):
            stop_idle_workers()
        log.info("%s", sweep_summary(sweep_dir))
        if config.get("logger", {}).get("name") == "wandb":
            log_results(sweep_dir, config.logger)
        try:
            index = write_report([sweep_dir], sweep_dir / "report")
            log.info("report: %s", index)
        except Exception as e:  # noqa: BLE001 - the runs are safe on disk; the report can be re-made
            log.error("the report could not be written (%s); retry with: python -m analysis.report %s --out %s",
                      e, sweep_dir, sweep_dir / "report")


def log_results(sweep_dir: Path, logger: Any) -> None:
    """The sweep's results table to W&B, in the sweep's group (``runners.tracking.log_sweep_results``)."""
    from analysis.dashboard import wandb_group
    from runners.tracking import log_sweep_results

    rows = []
    for path in sorted(sweep_dir.glob(f"*/{SUMMARY}")):
        try:
            rows.append(json.loads(path.read_text()))
        except ValueError:
            continue
    if rows:
        (sweep_dir / "report").mkdir(exist_ok=True)
        log_sweep_results(rows, project=logger.project, entity=logger.get("entity"), mode=logger.get("mode", "auto"),
                          group=wandb_group(sweep_dir), out_dir=sweep_dir / "report")


def stop_idle_workers() -> None:
    """End the joblib (loky) workers once every job has returned, before the report is built.

    loky keeps idle workers for 300 s to reuse them; a sweep killed while it builds its report
    left them (about 240 MB each) and their resource trackers under PID 1 for those minutes
    (issue 26). The workers have nothing left to do here: no process outlives its sweep.
    """
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True, kill_workers=True)
