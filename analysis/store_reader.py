"""Read the run store's job directories (``analysis.store_format``, written by ``runners.run_store``) into a ``Runs``.

The store is written by jobs that may be killed at any moment, so reading is tolerant:
a job directory without ``summary.json`` is reported as skipped, never an exception; a
half-written last line of ``metrics.jsonl`` is dropped and counted. Reading a large sweep
again and again is slow, so ``collect(paths, cache=DIR)`` keeps the tables as parquet
(``analysis.parquet_cache``) with a ``fingerprint`` of every job directory (file sizes and
modification times) and reuses them only while that fingerprint still matches.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import yaml

from analysis.parquet_cache import CACHE_VERSION, read_cache, write_parquet
from analysis.runs import ID_COLUMNS, Note, Runs, events_frame, run_row, runs_frame
from analysis.store_format import CONFIG, METRICS, REQUIRED_EVENT_KEYS, SUMMARY


def is_job_dir(path: Path) -> bool:
    """A job directory is one the training job wrote metrics or a summary into."""
    return (path / SUMMARY).is_file() or (path / METRICS).is_file()


def find_job_dirs(root: Path) -> list[Path]:
    """Job directories at or below ``root``, sorted, in no particular launcher layout.

    Hydra multiruns, SLURM arrays and hand-made folders nest jobs at different depths,
    so the search is by content. It does not descend into a job directory (nothing
    nested there is a run) nor into hidden directories such as ``.hydra``.
    """
    root = Path(root)
    if is_job_dir(root):
        return [root]
    found: list[Path] = []
    for here, dirnames, _files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        kept = []
        for d in dirnames:
            if is_job_dir(Path(here) / d):
                found.append(Path(here) / d)
            else:
                kept.append(d)
        dirnames[:] = kept
    return sorted(found)


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The well-formed events of a ``metrics.jsonl`` and the number of lines dropped.

    A killed job leaves a half-written last line; a full disk can leave garbage in the
    middle. Both are dropped and counted rather than failing the whole report.
    """
    events: list[dict[str, Any]] = []
    bad = 0
    with Path(path).open("r", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(event, dict) or not REQUIRED_EVENT_KEYS <= event.keys():
                bad += 1
                continue
            events.append(event)
    return events, bad


def _read_config(job: Path, warnings: list[Note]) -> dict[str, Any]:
    """The run's resolved config, or ``{}`` with a warning: the summary alone is usable."""
    path = job / CONFIG
    if not path.is_file():
        warnings.append(Note(job, f"no {CONFIG}; dropout rate unknown"))
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        warnings.append(Note(job, f"unreadable {CONFIG} ({type(e).__name__})"))
        return {}
    return config if isinstance(config, dict) else {}


def _read_job(job: Path, root: Path, skipped: list[Note], warnings: list[Note]
              ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """A run's table row and its events, or None (and a note in ``skipped``)."""
    summary_path = job / SUMMARY
    if not summary_path.is_file():
        skipped.append(Note(job, f"no {SUMMARY}: unfinished or killed job"))
        return None
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        skipped.append(Note(job, f"unreadable {SUMMARY} ({type(e).__name__})"))
        return None
    if not isinstance(summary, dict):
        skipped.append(Note(job, f"{SUMMARY} is not a JSON object"))
        return None
    row = run_row(summary, _read_config(job, warnings))
    if row["status"] == "unknown":
        warnings.append(Note(job, f"{SUMMARY} has no status"))
    rel = os.path.relpath(job, root)
    row.update(source="local", url="", run_dir=str(job), rel_dir=job.name if rel == "." else rel,
               root=str(root))

    metrics_path = job / METRICS
    events: list[dict[str, Any]] = []
    if not metrics_path.is_file():
        warnings.append(Note(job, f"no {METRICS}; no learning curves for this run"))
    else:
        try:
            events, bad = read_metrics(metrics_path)
        except OSError as e:
            warnings.append(Note(job, f"unreadable {METRICS} ({type(e).__name__})"))
            bad = 0
        if bad:
            warnings.append(Note(job, f"{bad} unreadable line(s) in {METRICS} dropped"))
    ids = {key: row[key] for key in ID_COLUMNS}
    return row, [{**event, **ids} for event in events]


def _check_dirs(paths: Sequence[Path | str]) -> list[Path]:
    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"no such directory: {root}")
        if not root.is_dir():
            raise NotADirectoryError(f"not a directory: {root}")
    return roots


def job_dirs(roots: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(job, root) pairs, each job once even when two paths reach it."""
    pairs: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for root in roots:
        root = root.resolve()
        for job in find_job_dirs(root):
            if job not in seen:
                seen.add(job)
                pairs.append((job, root))
    return pairs


def _collect_dirs(roots: Sequence[Path]) -> Runs:
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    skipped: list[Note] = []
    warnings: list[Note] = []
    for job, root in job_dirs(roots):
        read = _read_job(job, root, skipped, warnings)
        if read is not None:
            rows.append(read[0])
            records.extend(read[1])
    return Runs(runs_frame(rows), events_frame(records), skipped, warnings)


def collect(paths: Sequence[Path | str], *, cache: Path | str | None = None) -> Runs:
    """Read every job directory at or below ``paths`` into a ``Runs``.

    Each path is a sweep directory (jobs at any depth) or a single job directory; a job
    reached through two paths is read once. Raises ``FileNotFoundError`` or
    ``NotADirectoryError`` for a path that is not a directory, before reading anything,
    so a typo is not mistaken for an empty sweep. Holding no runs is not an error here:
    the caller decides (see ``analysis.report``).

    With ``cache`` (a directory), the tables are read from its parquet files when they
    were written for the same job directories in the same state (see ``fingerprint``),
    and written there otherwise.
    """
    roots = _check_dirs(paths)
    if cache is None:
        return _collect_dirs(roots)
    cache = Path(cache)
    key = fingerprint(roots)
    cached = read_cache(cache, key)
    if cached is not None:
        return cached
    runs = _collect_dirs(roots)
    write_parquet(runs, cache, key=key)
    return runs


def fingerprint(paths: Sequence[Path | str]) -> str:
    """A digest of the job directories under ``paths``: their files' sizes and mtimes.

    Any job finishing, being added or removed, or a summary being rewritten changes it;
    reading only ``stat`` keeps checking the cache far cheaper than reading the store.
    """
    digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for root in paths:
        digest.update(f"root {Path(root).resolve()}\n".encode())
    for job, _root in job_dirs([Path(p) for p in paths]):
        digest.update(f"job {job}\n".encode())
        for name in (CONFIG, METRICS, SUMMARY):
            try:
                st = (job / name).stat()
                digest.update(f"{name} {st.st_size} {st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{name} -\n".encode())
    return digest.hexdigest()
