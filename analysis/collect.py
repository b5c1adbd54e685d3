"""Read a run store into tidy pandas tables.

Everything that knows the run store's file layout lives here, so that the figures and
the report work on DataFrames only. The store is written by jobs that may be killed at
any moment, so reading is tolerant: a job directory without ``summary.json`` is
reported as skipped (never an exception), a half-written last line of
``metrics.jsonl`` is dropped, and a failed or diverged run stays in the run table
with its status so that instability is visible rather than silently filtered out.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml

CONFIG_FILE, METRICS_FILE, SUMMARY_FILE = "config.yaml", "metrics.jsonl", "summary.json"

# Preferred display order; names not listed follow in alphabetical order.
SCHEME_ORDER = ("none", "naive", "variational", "moon", "semeniuta", "weightdrop", "zoneout",
                "state_dropout")
CELL_ORDER = ("lstm", "gru")

# Columns of ``Runs.runs``: the summary fields, the dropout rate and where the run lives.
RUN_COLUMNS = ("run_name", "scheme", "cell", "data", "seed", "dropout", "status", "best_val_ppl",
               "test_ppl", "bayes_test_ppl", "epochs", "wall_s", "train_tokens_per_s",
               "diverged_step", "diverged_what", "error", "run_dir", "rel_dir", "root")
# Columns that identify a run in ``Runs.events``; ``run_dir`` is the unique key.
ID_COLUMNS = ("run_dir", "run_name", "scheme", "cell", "data", "seed", "dropout")
EVENT_COLUMNS = ID_COLUMNS + ("epoch", "step", "split", "scope", "loss", "ppl")
# An event without these cannot be placed on any curve.
REQUIRED_EVENT_KEYS = frozenset({"epoch", "step", "split"})

_FLOAT_FIELDS = ("dropout", "best_val_ppl", "test_ppl", "bayes_test_ppl", "wall_s",
                 "train_tokens_per_s")
_INT_FIELDS = ("seed", "epochs", "diverged_step")
_TEXT_FIELDS = ("run_name", "scheme", "cell", "data", "diverged_what", "error")


@dataclass(frozen=True)
class Note:
    """A directory and what was wrong with it, for the report and the command line."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Runs:
    """Everything read from one or more sweeps.

    ``runs`` has one row per run (columns ``RUN_COLUMNS``), ``events`` one row per
    metrics event (``EVENT_COLUMNS`` first, then any extra keys the jobs logged),
    ``skipped`` the job directories left out and why, and ``warnings`` problems in runs
    that were kept (an unreadable metrics line, a missing config).
    """

    runs: pd.DataFrame
    events: pd.DataFrame
    skipped: list[Note] = field(default_factory=list)
    warnings: list[Note] = field(default_factory=list)


def ordered(values: Sequence[Any], preferred: Sequence[str]) -> list[Any]:
    """Distinct values, those in ``preferred`` first in that order, then the rest sorted.

    One ordering for tables and figures, so a scheme sits in the same place everywhere.
    """
    present = list(dict.fromkeys(v for v in values if isinstance(v, str)))
    head = [v for v in preferred if v in present]
    return head + sorted(v for v in present if v not in preferred)


def is_job_dir(path: Path) -> bool:
    """A job directory is one the training job wrote metrics or a summary into."""
    return (path / SUMMARY_FILE).is_file() or (path / METRICS_FILE).is_file()


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


def _float(value: Any) -> float:
    """A number from JSON/YAML, NaN when missing (null) or not a number."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _int(value: Any) -> Any:
    """An integer, or ``pd.NA`` when missing, so the column stays integer-typed."""
    number = _float(value)
    return int(number) if math.isfinite(number) and number == int(number) else pd.NA


def _text(value: Any) -> Any:
    return None if value is None else str(value)


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _read_config(job: Path, warnings: list[Note]) -> dict[str, Any]:
    """The run's resolved config, or ``{}`` with a warning: the summary alone is usable."""
    path = job / CONFIG_FILE
    if not path.is_file():
        warnings.append(Note(job, f"no {CONFIG_FILE}; dropout rate unknown"))
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        warnings.append(Note(job, f"unreadable {CONFIG_FILE} ({type(e).__name__})"))
        return {}
    return config if isinstance(config, dict) else {}


def _run_row(job: Path, root: Path, summary: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """One row of the run table: the summary, completed from the config where it is silent."""
    from_config = {"scheme": _get(config, "scheme.name"), "cell": _get(config, "model.cell"),
                   "data": _get(config, "data.name"), "seed": _get(config, "seed"),
                   "dropout": _get(config, "dropout"), "run_name": _get(config, "run_name")}
    merged = {**from_config, **{k: v for k, v in summary.items() if v is not None}}
    row: dict[str, Any] = {}
    for key in _FLOAT_FIELDS:
        row[key] = _float(merged.get(key))
    for key in _INT_FIELDS:
        row[key] = _int(merged.get(key))
    for key in _TEXT_FIELDS:
        row[key] = _text(merged.get(key))
    row["status"] = _text(summary.get("status")) or "unknown"
    if row["status"] != "finished":
        # A run that did not finish has no test score, whatever partial value it wrote.
        row["test_ppl"] = math.nan
        row["bayes_test_ppl"] = math.nan
    rel = os.path.relpath(job, root)
    row["run_dir"], row["rel_dir"], row["root"] = str(job), job.name if rel == "." else rel, str(root)
    return row


def _read_job(job: Path, root: Path, skipped: list[Note], warnings: list[Note]
              ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """A run's table row and its events, or None (and a note in ``skipped``)."""
    summary_path = job / SUMMARY_FILE
    if not summary_path.is_file():
        skipped.append(Note(job, f"no {SUMMARY_FILE}: unfinished or killed job"))
        return None
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        skipped.append(Note(job, f"unreadable {SUMMARY_FILE} ({type(e).__name__})"))
        return None
    if not isinstance(summary, dict):
        skipped.append(Note(job, f"{SUMMARY_FILE} is not a JSON object"))
        return None
    row = _run_row(job, root, summary, _read_config(job, warnings))
    if row["status"] == "unknown":
        warnings.append(Note(job, f"{SUMMARY_FILE} has no status"))

    metrics_path = job / METRICS_FILE
    events: list[dict[str, Any]] = []
    if not metrics_path.is_file():
        warnings.append(Note(job, f"no {METRICS_FILE}; no learning curves for this run"))
    else:
        try:
            events, bad = read_metrics(metrics_path)
        except OSError as e:
            warnings.append(Note(job, f"unreadable {METRICS_FILE} ({type(e).__name__})"))
            bad = 0
        if bad:
            warnings.append(Note(job, f"{bad} unreadable line(s) in {METRICS_FILE} dropped"))
    ids = {key: row[key] for key in ID_COLUMNS}
    return row, [{**event, **ids} for event in events]


def _runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    runs = pd.DataFrame.from_records(rows, columns=list(RUN_COLUMNS))
    for key in _INT_FIELDS:
        runs[key] = runs[key].astype("Int64")
    for key in _FLOAT_FIELDS:
        runs[key] = runs[key].astype("float64")
    if runs.empty:
        return runs
    scheme_rank = {s: i for i, s in enumerate(ordered(runs["scheme"].tolist(), SCHEME_ORDER))}
    cell_rank = {c: i for i, c in enumerate(ordered(runs["cell"].tolist(), CELL_ORDER))}
    keys = pd.DataFrame({
        "scheme": runs["scheme"].map(scheme_rank).fillna(len(scheme_rank)),
        "cell": runs["cell"].map(cell_rank).fillna(len(cell_rank)),
        "data": runs["data"].fillna(""), "dropout": runs["dropout"],
        "seed": runs["seed"], "run_dir": runs["run_dir"]})
    order = keys.sort_values(list(keys.columns), kind="stable", na_position="last").index
    return runs.loc[order].reset_index(drop=True)


def _events_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    extra = sorted({k for r in records for k in r} - set(EVENT_COLUMNS))
    events = pd.DataFrame.from_records(records, columns=list(EVENT_COLUMNS) + extra)
    for key in ("epoch", "step", "seed"):
        events[key] = pd.to_numeric(events[key], errors="coerce").astype("Int64")
    for key in ("loss", "ppl", "dropout"):
        events[key] = pd.to_numeric(events[key], errors="coerce").astype("float64")
    return events


def collect(paths: Sequence[Path | str]) -> Runs:
    """Read every job directory at or below ``paths`` into a ``Runs``.

    Each path is a sweep directory (jobs at any depth) or a single job directory; a job
    reached through two paths is read once. Raises ``FileNotFoundError`` or
    ``NotADirectoryError`` for a path that is not a directory, before reading anything,
    so a typo is not mistaken for an empty sweep. Holding no runs is not an error here:
    the caller decides (see ``analysis.report``).
    """
    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"no such directory: {root}")
        if not root.is_dir():
            raise NotADirectoryError(f"not a directory: {root}")
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    skipped: list[Note] = []
    warnings: list[Note] = []
    seen: set[Path] = set()
    for root in roots:
        root = root.resolve()
        for job in find_job_dirs(root):
            if job in seen:
                continue
            seen.add(job)
            read = _read_job(job, root, skipped, warnings)
            if read is not None:
                rows.append(read[0])
                records.extend(read[1])
    return Runs(_runs_frame(rows), _events_frame(records), skipped, warnings)
