"""Hydra's joblib launcher, made to outlive a worker that dies (``hydra/launcher=local_parallel``).

When the OOM killer (or ``kill -9``) ends one loky worker, loky breaks the whole pool: the
jobs that were running are lost, the queued ones never start, and Hydra's launcher raises
``TerminatedWorkerError`` out of the sweep, which then writes no summary and no report
(issue 26). This launcher runs the same jobs through the same ``execute_job`` and, when the
pool breaks, starts a fresh pool for every job that has not returned. The jobs that were
running when it broke are run again, each alone, from its checkpoint: loky ends every worker
of a broken pool, so which one died cannot be told from the others until each runs on its own.
A job that dies again alone is not tried a third time (a job that runs out of memory would
only do so again): its ``summary.json`` records it as ``failed`` with the cause, and the next
run of the sweep resumes it. Then the rest of the sweep runs as before.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import yaml
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher import _core
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

log = logging.getLogger(__name__)

FINAL = ("finished", "diverged", "failed")


@contextmanager
def ctrl_c_stops(sweep_dir: Path) -> Iterator[Callable[[], bool]]:
    """Ctrl-C stops the sweep the way it stops one job (issue 26).

    The terminal sends SIGINT to the whole process group: each running job checkpoints and
    records ``interrupted`` on its own (``runners.job.stop_on_signals``). This process only
    notes it, instead of raising KeyboardInterrupt out of joblib (which killed the workers
    before they wrote anything), and marks the sweep so that a job dispatched after the
    signal returns at once instead of starting.
    """
    from runners.job import SWEEP_STOPPED

    received: list[int] = []
    marker = sweep_dir / SWEEP_STOPPED

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
        received.append(signum)
        marker.touch()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGINT, previous)
        marker.unlink(missing_ok=True)


def _cause(error: BaseException) -> str:
    """loky's exit codes of the dead workers, e.g. ``{SIGKILL(-9)}``."""
    text = str(error)
    return text.split("The exit codes of the workers are", 1)[1].split("\n", 1)[0].strip(" .") \
        if "The exit codes of the workers are" in text else "unknown"


def _job_dirs(sweep_dir: Path) -> dict[int, Path]:
    """Job number -> directory, for every job Hydra has started (it writes .hydra/hydra.yaml first)."""
    found = {}
    for hydra_yaml in sweep_dir.glob("*/.hydra/hydra.yaml"):
        try:
            found[int(yaml.safe_load(hydra_yaml.read_text())["hydra"]["job"]["num"])] = hydra_yaml.parent.parent
        except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
            continue
    return found


def _status(job_dir: Path) -> str | None:
    from analysis.store_format import read_summary

    summary = read_summary(job_dir)
    return None if summary is None else summary.status


class ResilientJoblibLauncher(JoblibLauncher):
    """``JoblibLauncher`` whose sweep goes on when a worker dies (see the module docstring)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        setup_globals()
        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        joblib_cfg = dict(self.joblib, backend="loky")
        _core.process_joblib_cfg(joblib_cfg)
        log.info("Launching %d jobs, %s at a time, sweep output dir : %s", len(job_overrides),
                 joblib_cfg.get("n_jobs"), sweep_dir)
        pending = {initial_job_idx + i: list(o) for i, o in enumerate(job_overrides)}
        for idx, overrides in pending.items():
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        returns: dict[int, JobReturn] = {}
        self._total, self._started = len(pending), time.monotonic()
        breaks = 0
        with ctrl_c_stops(sweep_dir) as interrupted:
            while pending and not interrupted():
                try:
                    self._run(pending, joblib_cfg, returns)
                except TerminatedWorkerError as e:
                    if interrupted():  # a worker that Ctrl-C reached between jobs: part of the stop
                        break
                    breaks += 1
                    if breaks > len(job_overrides):  # the pool breaks with no job of ours to blame: not ours to fix
                        raise
                    dirs = _job_dirs(sweep_dir)
                    lost = [idx for idx in pending if idx in dirs and _status(dirs[idx]) not in FINAL]
                    log.warning("a worker process died (exit %s) while jobs %s ran; running each of them again alone, "
                                "from its checkpoint, then the rest", _cause(e), ", ".join(map(str, lost)) or "none")
                    for idx in lost:  # alone, a job that dies again is the one that died: the others were collateral
                        try:
                            self._run({idx: pending[idx]}, joblib_cfg, returns)
                        except TerminatedWorkerError as again:
                            self._record_lost(dirs[idx], _cause(again))
                            log.warning("job %d died again on its own (exit %s); recorded as failed", idx, _cause(again))
                            returns[idx] = JobReturn(overrides=pending[idx], status=JobStatus.COMPLETED,
                                                     _return_value=float("inf"))
                        pending.pop(idx)
        if interrupted():
            from runners.job import rerun_command

            print(f"interrupted: the jobs that were running kept their checkpoints; resume the sweep with: "
                  f"{rerun_command('hydra.sweep.dir', sweep_dir)}", file=sys.stderr)
            raise SystemExit(130)
        return [returns[idx] for idx in sorted(returns)]

    def _progress(self, returns: dict[int, JobReturn]) -> None:
        """One line after each job: how many are done, how they ended, and the time left at the pace so far."""
        counts: Counter[str] = Counter()
        for ret in returns.values():
            job_dir = ret.hydra_cfg.hydra.runtime.output_dir if ret.hydra_cfg is not None else None
            counts[(_status(Path(job_dir)) if job_dir else None) or "failed"] += 1
        done, elapsed = len(returns), time.monotonic() - self._started
        left = (self._total - done) * elapsed / done if done else 0.0
        ended = ", ".join(f"{counts[s]} {s}" for s in ("finished", "diverged", "failed", "interrupted") if counts[s])
        log.info("sweep: %d of %d jobs done (%s)%s", done, self._total, ended or "none yet",
                 f", about {left / 60:.1f} min left" if done < self._total else "")

    def _run(self, jobs: dict[int, list[str]], joblib_cfg: dict[str, Any], returns: dict[int, JobReturn]) -> None:
        """Run ``jobs`` in one loky pool, moving each into ``returns`` as it returns (raises if the pool breaks)."""
        from joblib import Parallel, delayed

        state = Singleton.get_state()
        # At least 2: joblib runs n_jobs=1 in this process, where a killed job would end the sweep.
        cfg = {**joblib_cfg, "n_jobs": joblib_cfg.get("n_jobs", -1) if len(jobs) > 1 else 2}
        for ret in Parallel(**cfg, return_as="generator_unordered")(
                delayed(_core.execute_job)(idx, overrides, self.hydra_context, self.config, self.task_function, state)
                for idx, overrides in list(jobs.items())):
            idx = int(ret.hydra_cfg.hydra.job.num)
            returns[idx] = ret
            jobs.pop(idx, None)
            self._progress(returns)

    @staticmethod
    def _record_lost(job_dir: Path, cause: str) -> None:
        """The lost job's summary: failed, with why, so the sweep's summary and report show it."""
        from analysis.store_format import CONFIG, JobSummary, read_summary
        from runners.run_store import RunStore

        summary = read_summary(job_dir)
        if summary is None:  # killed before it wrote one: who it was, from the config it ran
            try:
                summary = JobSummary.start(yaml.safe_load((job_dir / CONFIG).read_text()))
            except Exception:  # noqa: BLE001 - no readable config either: the status and cause still count
                summary = JobSummary()
        summary.status, summary.dir = "failed", str(job_dir)
        summary.error = (f"its worker process died ({cause}), twice, the second time running alone, as when the "
                         f"system runs out of memory; run the sweep again to resume it from its checkpoint")
        RunStore(job_dir).close(summary)
