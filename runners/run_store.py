"""The local run store's writer: the source of truth for analysis, readable with no server.

Each job directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one
JSON object per event, appended and flushed as training goes) and ``summary.json`` (a
``JobSummary``, written atomically at the end, so a reader never sees half of it). The
file names, the summary's fields and the event keys are the store's format,
``analysis.store_format``, which the readers in ``analysis`` use too.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from analysis.store_format import CONFIG, METRICS, SUMMARY, JobSummary, read_summary

LOCK = ".lock"  # held while a job runs (job_lock); not part of what a reader reads


class JobDirBusy(RuntimeError):
    """Another live process is running a job in this directory."""


@contextmanager
def job_lock(job_dir: Path) -> Iterator[None]:
    """Hold the job directory for this process, or raise ``JobDirBusy`` at once.

    Two identical commands into one ``hydra.run.dir`` would otherwise both train and
    append every event twice to ``metrics.jsonl`` (issue 15). ``flock`` is released by
    the kernel when the holder dies, so a killed job never leaves a stale lock behind
    and its directory resumes normally.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    job_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(job_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise JobDirBusy(f"{job_dir} is in use by a running job (pid {holder}); wait for it to end, "
                             f"or give this run another directory (hydra.run.dir=...)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it over: all or nothing."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from the rest of a lab's group
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _json_safe(value: Any) -> Any:
    """NaN and inf are not JSON: store them as null, which every reader understands."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


class RunStore:
    def __init__(self, job_dir: Path) -> None:
        self.dir = Path(job_dir)
        self._metrics = None

    def existing_status(self) -> str | None:
        """What this directory already holds: a run's status, ``unfinished``, or None if empty."""
        if (self.dir / SUMMARY).exists():
            summary = read_summary(self.dir)
            return summary.status if summary is not None and summary.status else "unreadable"
        if (self.dir / METRICS).exists():
            return "unfinished"
        return None

    def open(self, config: dict, resume_at: int | None = None) -> None:
        """Start the store, or continue it from byte ``resume_at`` of ``metrics.jsonl``.

        Events after that offset were logged after the checkpoint being resumed from; the
        resumed job logs them again, so they are cut (a torn last line goes with them).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / CONFIG, yaml.safe_dump(config, sort_keys=False))
        self._metrics = (self.dir / METRICS).open("a", encoding="utf-8")
        self._metrics.truncate(resume_at or 0)
        self._metrics.seek(resume_at or 0)

    def offset(self) -> int:
        """Bytes of ``metrics.jsonl`` written so far (flushed on every event)."""
        return self._metrics.tell()

    def summary(self) -> JobSummary | None:
        return read_summary(self.dir)

    def log(self, record: dict) -> None:
        self._metrics.write(json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n")
        self._metrics.flush()

    def close(self, summary: JobSummary) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        atomic_write_text(self.dir / SUMMARY,
                          json.dumps({k: _json_safe(v) for k, v in summary.to_json().items()}, indent=2) + "\n")
