"""Read a run store, or a W&B project, into tidy pandas tables.

Everything that knows the run store's file layout (and how ``runners/tracking.py``
mirrors it into W&B) lives here, so that the tables, figures and the report work on
DataFrames only, whichever source the runs came from. The store is written by jobs
that may be killed at any moment, so reading is tolerant: a job directory without
``summary.json`` (a W&B run without a final status) is reported as skipped, never an
exception; a half-written last line of ``metrics.jsonl`` is dropped; and a failed or
diverged run stays in the run table with its status, so that instability is visible
rather than silently filtered out.

    python -m analysis.collect SWEEP_DIR [SWEEP_DIR ...] --out DIR
    python -m analysis.collect --wandb [ENTITY/]PROJECT [--group GROUP] --out DIR

write ``DIR/runs.parquet`` and ``DIR/events.parquet``. Reading a large sweep again and
again is slow, so ``collect(paths, cache=DIR)`` keeps those files with a fingerprint
of every job directory (file sizes and modification times) and reuses them only while
that fingerprint still matches.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import yaml

CONFIG_FILE, METRICS_FILE, SUMMARY_FILE = "config.yaml", "metrics.jsonl", "summary.json"
RUNS_PARQUET, EVENTS_PARQUET, CACHE_META = "runs.parquet", "events.parquet", "collect.json"
# Bumped whenever the columns change, so that a cache written by older code is not reused.
CACHE_VERSION = 2

# Preferred display order; names not listed follow in alphabetical order.
SCHEME_ORDER = ("none", "naive", "variational", "moon", "semeniuta", "weightdrop", "zoneout",
                "state_dropout")
CELL_ORDER = ("lstm", "gru")

# Columns of ``Runs.runs``: the summary fields, the dropout rate, what sets the run apart
# from the other runs of its scheme and cell (``variant``), the paper's numbers, where the
# run lives, and its resolved config as JSON text.
RUN_COLUMNS = ("run_name", "scheme", "cell", "data", "seed", "dropout", "variant", "status",
               "best_val_ppl", "test_ppl", "bayes_test_ppl", "mc_test_ppl", "epochs", "wall_s",
               "train_tokens_per_s", "diverged_step", "diverged_what", "error",
               "ref_source", "ref_val_ppl", "ref_test_ppl", "ref_mc_test_ppl",
               "source", "url", "run_dir", "rel_dir", "root", "config")
# Columns that identify a run in ``Runs.events``; ``run_dir`` is the unique key.
ID_COLUMNS = ("run_dir", "run_name", "scheme", "cell", "data", "seed", "dropout")
EVENT_COLUMNS = ID_COLUMNS + ("epoch", "step", "split", "scope", "loss", "ppl")
# Keys the training loop logs on some events: always present as columns, so that the
# local store and W&B give frames with the same columns even when one lacks a key.
EVENT_NUMBERS = ("lr", "grad_norm", "grad_norm_max", "tokens_per_s", "max_state", "growth_per_step")
EVENT_LISTS = ("state_norm", "cell_norm")  # per time step of the probe; null entries are NaN
EVENT_EXTRAS = EVENT_NUMBERS + EVENT_LISTS
# An event without these cannot be placed on any curve.
REQUIRED_EVENT_KEYS = frozenset({"epoch", "step", "split"})

_FLOAT_FIELDS = ("dropout", "best_val_ppl", "test_ppl", "bayes_test_ppl", "mc_test_ppl", "wall_s",
                 "train_tokens_per_s", "ref_val_ppl", "ref_test_ppl", "ref_mc_test_ppl")
_INT_FIELDS = ("seed", "epochs", "diverged_step")
_TEXT_FIELDS = ("run_name", "scheme", "cell", "data", "diverged_what", "error")
# Scores a run that did not finish never has, whatever partial value it wrote.
_FINISHED_ONLY = ("test_ppl", "bayes_test_ppl", "mc_test_ppl")
# Config keys that never make two runs different experiments: bookkeeping, and where
# things are stored, how often progress is logged or probed. ``seed`` is what tables
# average over.
_NOT_VARIANT = ("seed", "run_name", "paths", "logger", "device", "threads", "hardware", "reference",
                "hydra", "data.path", "data.download", "train.log_interval", "train.probe_steps",
                "train.probe_batch")

# W&B: ``runners.tracking.wandb_key`` prefixes, in the order the training loop writes a
# step's events, and the (split, scope) each stands for.
WANDB_PREFIXES = {"train": ("train", "interval"), "train_epoch": ("train", "epoch"),
                  "val": ("val", None), "probe": ("probe", None), "test": ("test", None)}


@dataclass(frozen=True)
class Note:
    """A directory (or W&B run) and what was wrong with it, for the report and the CLI."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Runs:
    """Everything read from one or more sweeps.

    ``runs`` has one row per run (columns ``RUN_COLUMNS``), ``events`` one row per
    metrics event (``EVENT_COLUMNS`` and ``EVENT_EXTRAS`` first, then any other keys the
    jobs logged), ``skipped`` the job directories left out and why, and ``warnings``
    problems in runs that were kept (an unreadable metrics line, a missing config).
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


# --- one run's row, whatever the source -------------------------------------------------

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


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def resolve_reference(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The paper's numbers a config carries, with a per-variant ``{by, values}`` applied.

    The same rule as ``runners.build.reference`` (not imported: analysis never imports
    the experiment layer); used for stores whose summary predates its ``reference``.
    """
    ref = config.get("reference")
    if not isinstance(ref, Mapping) or not ref:
        return None
    ref = dict(ref)
    by, values = ref.pop("by", None), ref.pop("values", None) or {}
    if by is not None and isinstance(values, Mapping):
        chosen = values.get(str(_get(config, str(by))))
        ref.update(chosen if isinstance(chosen, Mapping) else {})
    return ref


def _label_value(value: Any) -> str:
    """A config value as a short, stable label: ``0.3``, ``true``, ``{emb:0.3,x:0.5}``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_label_value(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_label_value(v) for v in value) + "]"
    return str(value)


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _variant_basis(config: Mapping[str, Any], dropout: Any) -> dict[str, str]:
    """The config keys that could make two runs different experiments, as labels.

    The dropout is the one the summary reports (0 for ``none`` whatever the config
    says), so a rate sweep does not split the no-dropout baseline into fake variants.
    """
    flat = _flatten({k: v for k, v in config.items() if k != "dropout"})
    basis = {k: _label_value(v) for k, v in flat.items()
             if not any(k == skip or k.startswith(skip + ".") for skip in _NOT_VARIANT)}
    basis["dropout"] = _label_value(dropout)
    return basis


def _run_row(summary: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the run table: the summary, completed from the config where it is silent.

    Shared by the run store and W&B, so both sources give the same values.
    """
    from_config = {"scheme": _get(config, "scheme.name"), "cell": _get(config, "model.cell"),
                   "data": _get(config, "data.name"), "seed": _get(config, "seed"),
                   "dropout": _get(config, "dropout"), "run_name": _get(config, "run_name")}
    merged = {**from_config, **{k: v for k, v in summary.items() if v is not None}}
    ref = summary.get("reference") if "reference" in summary else resolve_reference(config)
    ref = ref if isinstance(ref, Mapping) else {}
    merged.update(ref_source=ref.get("source"), ref_val_ppl=ref.get("valid_ppl"),
                  ref_test_ppl=ref.get("test_ppl"), ref_mc_test_ppl=ref.get("mc_test_ppl"))
    row: dict[str, Any] = {}
    for key in _FLOAT_FIELDS:
        row[key] = _float(merged.get(key))
    for key in _INT_FIELDS:
        row[key] = _int(merged.get(key))
    for key in _TEXT_FIELDS + ("ref_source",):
        row[key] = _text(merged.get(key))
    row["status"] = _text(summary.get("status")) or "unknown"
    if row["status"] != "finished":
        for key in _FINISHED_ONLY:
            row[key] = math.nan
    row["config"] = json.dumps(config, sort_keys=True, default=str)
    row["_basis"] = _variant_basis(config, merged.get("dropout")) if config else {}
    return row


def variant_labels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """What sets each run apart from the other runs of its data set, cell and scheme.

    Seeds must be the only thing a table averages over, so any config key that takes
    different values within a (data, cell, scheme) group, such as ``scheme.drop_cell``
    or the dropout rate of a search, becomes part of the label
    (``"scheme.drop_cell=true"``); ``""`` where nothing varies. A run without a
    readable config (already warned about) cannot be told apart and is labelled ``""``.
    """
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[(row.get("data"), row.get("cell"), row.get("scheme"))].append(i)
    labels = [""] * len(rows)
    for members in groups.values():
        bases = [rows[i]["_basis"] for i in members if rows[i]["_basis"]]
        keys = sorted({k for b in bases for k in b})
        varying = [k for k in keys if len({b.get(k, "null") for b in bases}) > 1]
        for i in members:
            basis = rows[i]["_basis"]
            if basis:
                labels[i] = ", ".join(f"{k}={basis.get(k, 'null')}" for k in varying)
    return labels


def _runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    labels = variant_labels(rows)
    records = [{**{k: v for k, v in row.items() if k != "_basis"}, "variant": label}
               for row, label in zip(rows, labels)]
    runs = pd.DataFrame.from_records(records, columns=list(RUN_COLUMNS))
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
        "data": runs["data"].fillna(""), "variant": runs["variant"], "dropout": runs["dropout"],
        "seed": runs["seed"], "run_dir": runs["run_dir"]})
    order = keys.sort_values(list(keys.columns), kind="stable", na_position="last").index
    return runs.loc[order].reset_index(drop=True)


def _events_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    known = list(EVENT_COLUMNS) + list(EVENT_EXTRAS)
    extra = sorted({k for r in records for k in r} - set(known))
    events = pd.DataFrame.from_records(records, columns=known + extra)
    for key in ("epoch", "step", "seed"):
        events[key] = pd.to_numeric(events[key], errors="coerce").astype("Int64")
    for key in ("loss", "ppl", "dropout", *EVENT_NUMBERS):
        events[key] = pd.to_numeric(events[key], errors="coerce").astype("float64")
    # Missing is None in every other column (lists, text), as parquet gives it back, and
    # a list's null (the store's NaN) is NaN, as in the float columns.
    for key in events.columns[events.dtypes == object]:
        events[key] = events[key].astype(object).where(events[key].notna(), None).map(_nan_list)
    return events


def _nan_list(value: Any) -> Any:
    if isinstance(value, list):
        return [math.nan if v is None else v for v in value]
    return value


# --- the run store ----------------------------------------------------------------------

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
    row = _run_row(summary, _read_config(job, warnings))
    if row["status"] == "unknown":
        warnings.append(Note(job, f"{SUMMARY_FILE} has no status"))
    rel = os.path.relpath(job, root)
    row.update(source="local", url="", run_dir=str(job), rel_dir=job.name if rel == "." else rel,
               root=str(root))

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


def _check_dirs(paths: Sequence[Path | str]) -> list[Path]:
    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"no such directory: {root}")
        if not root.is_dir():
            raise NotADirectoryError(f"not a directory: {root}")
    return roots


def _job_dirs(roots: Sequence[Path]) -> list[tuple[Path, Path]]:
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
    for job, root in _job_dirs(roots):
        read = _read_job(job, root, skipped, warnings)
        if read is not None:
            rows.append(read[0])
            records.extend(read[1])
    return Runs(_runs_frame(rows), _events_frame(records), skipped, warnings)


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


# --- W&B --------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """W&B's summary sub-dicts (mapping-like objects) as plain dicts, recursively."""
    if isinstance(value, Mapping) or (hasattr(value, "items") and hasattr(value, "keys")):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _unwrap_config(config: Any) -> dict[str, Any]:
    """``run.config`` without W&B's own keys and ``{"value": ...}`` wrappers (older API)."""
    plain = _plain(config) or {}
    out = {}
    for key, value in plain.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
            value = value["value"]
        out[key] = value
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def history_events(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Metrics events from W&B history rows, inverting ``runners.tracking``.

    The tracker logs each event's numbers under ``<prefix>/<key>`` at the event's step,
    with ``epoch`` beside them; W&B merges the events of one step into one history row,
    so a row is split back into one event per prefix. Lists (the probe's per-step state
    norms) reach W&B only as a chart, so ``state_norm``/``cell_norm`` stay empty here.
    """
    events: list[dict[str, Any]] = []
    for row in rows:
        step = row.get("_step")
        for prefix, (split, scope) in WANDB_PREFIXES.items():
            values = {key[len(prefix) + 1:]: value for key, value in row.items()
                      if key.startswith(prefix + "/") and (_number(value) or value is None)}
            values = {k: v for k, v in values.items() if "/" not in k}
            if not any(v is not None for v in values.values()):
                continue
            event = {"epoch": row.get("epoch"), "step": step, "split": split, **values}
            if scope is not None:
                event["scope"] = scope
            events.append(event)
    return events


def _wandb_run(run: Any, where: str, skipped: list[Note], warnings: list[Note]
               ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """One W&B run's row and events, or None when it never wrote a final status."""
    label = Path(f"wandb:{where}/{run.id}")
    summary = _plain(run.summary) or {}
    state = getattr(run, "state", None)
    if not summary.get("status"):
        why = "still running" if state == "running" else f"state {state}" if state else "no status"
        skipped.append(Note(label, f"no final status in the W&B summary ({why}): unfinished or killed job"))
        return None
    row = _run_row(summary, _unwrap_config(run.config))
    row.update(source="wandb", url=str(getattr(run, "url", "") or ""), run_dir=str(label),
               rel_dir=str(run.name or run.id), root=f"wandb:{where}")
    try:
        events = history_events(run.scan_history())
    except Exception as e:  # noqa: BLE001 - a broken history must not lose the run's scores
        warnings.append(Note(label, f"history unreadable ({type(e).__name__}); no learning curves"))
        events = []
    ids = {key: row[key] for key in ID_COLUMNS}
    return row, [{**event, **ids} for event in events]


def collect_wandb(project: str, group: str | None = None, entity: str | None = None,
                  api: Any = None) -> Runs:
    """The runs of a W&B project (one sweep when ``group`` is given) as a ``Runs``.

    Columns are those of ``collect``: the scores come from each run's summary (the
    tracker copies ``summary.json`` there), the curves from its full history.
    ``source`` is ``"wandb"``, ``url`` the run's page, and ``run_dir`` reads
    ``wandb:ENTITY/PROJECT/RUN_ID`` (a key, not a directory). ``project`` may be
    ``ENTITY/PROJECT``. ``api`` is a ``wandb.Api()``, created here when not given.
    """
    if entity is None and "/" in project:
        entity, project = project.split("/", 1)
    if api is None:
        import wandb  # only here: reading a local store must not need W&B

        api = wandb.Api()
    if entity is None:
        entity = getattr(api, "default_entity", None)
    path = f"{entity}/{project}" if entity else project
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    skipped: list[Note] = []
    warnings: list[Note] = []
    for run in api.runs(path, filters={"group": group} if group else None):
        read = _wandb_run(run, path, skipped, warnings)
        if read is not None:
            rows.append(read[0])
            records.extend(read[1])
    return Runs(_runs_frame(rows), _events_frame(records), skipped, warnings)


# --- parquet ----------------------------------------------------------------------------

def fingerprint(paths: Sequence[Path | str]) -> str:
    """A digest of the job directories under ``paths``: their files' sizes and mtimes.

    Any job finishing, being added or removed, or a summary being rewritten changes it;
    reading only ``stat`` keeps checking the cache far cheaper than reading the store.
    """
    digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for root in paths:
        digest.update(f"root {Path(root).resolve()}\n".encode())
    for job, _root in _job_dirs([Path(p) for p in paths]):
        digest.update(f"job {job}\n".encode())
        for name in (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE):
            try:
                st = (job / name).stat()
                digest.update(f"{name} {st.st_size} {st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{name} -\n".encode())
    return digest.hexdigest()


def _atomic_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def write_parquet(runs: Runs, out_dir: Path | str, *, key: str | None = None) -> tuple[Path, Path]:
    """``out_dir/runs.parquet`` and ``out_dir/events.parquet``, plus ``collect.json``
    (the notes, and the fingerprint ``key`` the tables were read under).

    The old ``collect.json`` goes first and the new one comes last, so a write cut short
    leaves no fingerprint that could vouch for half-written tables.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = out_dir / CACHE_META
    meta.unlink(missing_ok=True)
    paths = out_dir / RUNS_PARQUET, out_dir / EVENTS_PARQUET
    _atomic_parquet(runs.runs, paths[0])
    _atomic_parquet(runs.events, paths[1])
    notes = {kind: [{"path": str(n.path), "message": n.message} for n in getattr(runs, kind)]
             for kind in ("skipped", "warnings")}
    tmp = out_dir / f".{CACHE_META}.tmp"
    tmp.write_text(json.dumps({"version": CACHE_VERSION, "key": key, **notes}, indent=1), encoding="utf-8")
    os.replace(tmp, meta)
    return paths


def _as_list(value: Any) -> Any:
    """Parquet hands list cells back as numpy arrays; the tables hold plain lists."""
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, (str, bytes)) else value


def read_parquet(out_dir: Path | str) -> Runs:
    """The ``Runs`` that ``write_parquet`` wrote to ``out_dir``."""
    out_dir = Path(out_dir)
    meta = json.loads((out_dir / CACHE_META).read_text(encoding="utf-8"))
    runs = pd.read_parquet(out_dir / RUNS_PARQUET)
    events = pd.read_parquet(out_dir / EVENTS_PARQUET)
    for column in events.columns[events.dtypes == object]:
        events[column] = events[column].map(_as_list)
    notes = {kind: [Note(Path(n["path"]), n["message"]) for n in meta.get(kind, [])]
             for kind in ("skipped", "warnings")}
    return Runs(runs, events, notes["skipped"], notes["warnings"])


def read_cache(cache: Path | str, key: str) -> Runs | None:
    """The cached ``Runs`` if ``cache`` holds tables written under ``key``, else None."""
    try:
        meta = json.loads((Path(cache) / CACHE_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("version") != CACHE_VERSION or meta.get("key") != key:
        return None
    try:
        return read_parquet(cache)
    except (OSError, ValueError):  # a cache damaged by hand: read the store again
        return None


# --- command line -----------------------------------------------------------------------

def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The run-source options, shared by this CLI and ``analysis.tables``."""
    parser.add_argument("dirs", nargs="*", type=Path, metavar="SWEEP_DIR",
                        help="a sweep directory (job directories at any depth) or one job directory")
    parser.add_argument("--wandb", metavar="[ENTITY/]PROJECT", help="read a W&B project instead (needs network)")
    parser.add_argument("--group", help="with --wandb: only this group (a sweep directory's name)")


def runs_from_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser,
                        cache: Path | None = None) -> Runs:
    """The ``Runs`` the source options name; ``parser.error`` (exit 2) when they conflict.

    Raises ``OSError`` for a missing directory and ``ValueError`` when no run was read,
    and lets W&B's errors through, for the caller to print on one line. ``cache`` applies to sweep directories only: W&B
    offers no cheap fingerprint of a project.
    """
    if bool(args.dirs) == bool(args.wandb):
        parser.error("give sweep directories or --wandb PROJECT, not both or neither")
    if args.group and not args.wandb:
        parser.error("--group needs --wandb")
    runs = collect_wandb(args.wandb, args.group) if args.wandb else collect(args.dirs, cache=cache)
    if runs.runs.empty:
        raise ValueError("no runs read" + (f" ({len(runs.skipped)} skipped)" if runs.skipped else ""))
    return runs


def print_notes(runs: Runs) -> None:
    """The skipped job directories and the warnings, one line each on stderr."""
    for note in runs.skipped:
        print(f"warning: skipped {note}", file=sys.stderr)
    for note in runs.warnings:
        print(f"warning: {note}", file=sys.stderr)


def error_line(prog: str, error: BaseException) -> str:
    """``prog: error: message`` on exactly one line, whatever the message holds."""
    message = " ".join(str(error).split()) or type(error).__name__
    return f"{prog}: error: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: the tables as parquet in ``--out``; notes go to stderr.

    For sweep directories ``--out`` is also the cache: run again on an unchanged store,
    it reads the parquet files back instead of the store.
    """
    parser = argparse.ArgumentParser(
        prog="python -m analysis.collect",
        description="Read run-store sweeps (or a W&B project) into runs.parquet and events.parquet.")
    add_source_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="where runs.parquet, events.parquet and collect.json are written")
    args = parser.parse_args(argv)
    try:
        runs = runs_from_arguments(args, parser, cache=args.out)
        if args.wandb:
            write_parquet(runs, args.out)
    except Exception as e:  # noqa: BLE001 - one line for any failure, W&B's included
        print(error_line(parser.prog, e), file=sys.stderr)
        return 2
    print_notes(runs)
    counts = ", ".join(f"{n} {s}" for s, n in runs.runs["status"].value_counts().items())
    print(f"{len(runs.runs)} runs ({counts}), {len(runs.skipped)} skipped: "
          f"{args.out / RUNS_PARQUET} {args.out / EVENTS_PARQUET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
