"""The tidy schema every source of runs fills: one row per run, one row per metrics event.

This module is the one place that knows what a run's tables are made of: the run table's
columns (``RUN_COLUMNS``) and how the report lists them (``RUN_LISTING``), the config keys
the figures read, the keys a table row stands for (``GROUP_KEYS``), and how a run's
resolved config and the dropout plan it ran are read back (``run_config``, ``run_plan``).
What a job directory holds (file names, the summary's fields, the event keys, the config
keys a summary's identity comes from) is the run store's format, ``analysis.store_format``.
The readers, the tables, the figures and the report all read them there, so that renaming
a config key or adding a column is one edit.

Why one schema: the tables, figures and the report work on DataFrames only, whichever
source the runs came from (the local run store, ``analysis.store_reader``; a W&B project,
``analysis.wandb_reader``), so both readers build their rows here, from a run's summary
and its resolved config, and give frames with the same columns, types and order. A failed
or diverged run keeps its row and its status, so that instability is visible rather than
silently filtered out.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from analysis.store_format import (CONFIG, CONFIG_KEYS, EVENT_LISTS, EVENT_NUMBERS, JobSummary, config_value,
                                   resolve_reference)

# Preferred display order; names not listed follow in alphabetical order.
SCHEME_ORDER = ("none", "naive", "variational", "moon", "semeniuta", "weightdrop", "zoneout",
                "state_dropout")
CELL_ORDER = ("lstm", "gru")

# Columns of ``Runs.runs``: the summary fields, the dropout rate, what sets the run apart
# from the other runs of its scheme and cell (``variant``), the paper's numbers, where the
# run lives, its resolved config as JSON text, and the dropout plan the engine ran as JSON
# text (``plan``: the summary's ``plan``, see ``run_plan``; None for a run recorded without one).
RUN_COLUMNS = ("run_name", "scheme", "cell", "data", "seed", "dropout", "variant", "status",
               "best_val_ppl", "test_ppl", "bayes_test_ppl", "mc_test_ppl", "epochs", "wall_s",
               "train_tokens_per_s", "diverged_step", "diverged_what", "error",
               "ref_source", "ref_val_ppl", "ref_test_ppl", "ref_mc_test_ppl",
               "source", "url", "run_dir", "rel_dir", "root", "config", "plan")
# Where a run's columns come from in its resolved config (``config.yaml``), for the summary
# fields a summary leaves out, is ``CONFIG_KEYS`` of the store's format; the summary wins
# where it has a value.
# Config keys the figures read beyond the columns: the gradient-clipping threshold, drawn
# on the gradient-norm figure, and whether state dropout also drops the LSTM memory.
CLIP_KEY = "train.clip"
DROP_CELL_KEY = "scheme.drop_cell"
# What one row of the scheme table stands for: runs of one data set, cell and scheme that
# differ in nothing but the seed (``variant`` names whatever else differs).
GROUP_KEYS = ("data", "cell", "scheme", "variant")
# Columns that identify a run in ``Runs.events``; ``run_dir`` is the unique key.
ID_COLUMNS = ("run_dir", "run_name", "scheme", "cell", "data", "seed", "dropout")
EVENT_COLUMNS = ID_COLUMNS + ("epoch", "step", "split", "scope", "loss", "ppl")
# Keys the training loop logs on some events (the store format's numbers and lists): always
# present as columns, so that the local store and W&B give frames with the same columns even
# when one lacks a key.
EVENT_EXTRAS = EVENT_NUMBERS + EVENT_LISTS

_FLOAT_FIELDS = ("dropout", "best_val_ppl", "test_ppl", "bayes_test_ppl", "mc_test_ppl", "wall_s",
                 "train_tokens_per_s", "ref_val_ppl", "ref_test_ppl", "ref_mc_test_ppl")
_INT_FIELDS = ("seed", "epochs", "diverged_step")
_TEXT_FIELDS = ("run_name", "scheme", "cell", "data", "diverged_what", "error")
# Scores a run that did not finish never has, whatever partial value it wrote.
_FINISHED_ONLY = ("test_ppl", "bayes_test_ppl", "mc_test_ppl")
# Config keys that never make two runs different experiments: bookkeeping, and where
# things are stored, how often progress is logged or probed. ``seed`` is what tables
# average over.
_NOT_VARIANT = ("seed", "run_name", "paths", "logger", "device", "threads", "flush_denormal", "hardware", "reference",
                "hydra", "data.path", "data.download", "train.log_interval", "train.probe_steps",
                "train.probe_batch")


@dataclass(frozen=True)
class RunColumn:
    """A column of the run listing in the report: its heading, the ``RUN_COLUMNS`` column
    it shows, and ``number``, the format spec of a number (``".2f"``), ``None`` for text.
    ``brief`` columns are also listed in report.md, which leaves timings and errors to the page."""

    heading: str
    key: str
    number: str | None = None
    brief: bool = False


# The run listing of the report, in order: the HTML page shows every column that says
# something, report.md the ``brief`` ones. One list, so both formats agree on names and formats.
RUN_LISTING = (
    RunColumn("run", "run_name", brief=True), RunColumn("scheme", "scheme", brief=True),
    RunColumn("cell", "cell", brief=True), RunColumn("variant", "variant", brief=True),
    RunColumn("data", "data"), RunColumn("seed", "seed", "d", brief=True),
    RunColumn("dropout", "dropout", "g"), RunColumn("status", "status", brief=True),
    RunColumn("best val ppl", "best_val_ppl", ".2f", brief=True),
    RunColumn("test ppl", "test_ppl", ".2f", brief=True),
    RunColumn("epochs", "epochs", "d"), RunColumn("wall s", "wall_s", ".0f"),
    RunColumn("train tok/s", "train_tokens_per_s", ",.0f"),
    RunColumn("diverged at step", "diverged_step", "d", brief=True), RunColumn("error", "error"),
)


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


def column(table: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    """A column of the run table, or ``default`` everywhere when this table has none.

    The run table gains columns over time (``variant``, ``config``, ``url``); figures and
    the report work on tables read before any of them existed.
    """
    if name in table.columns:
        return table[name]
    return pd.Series([default] * len(table), index=table.index, dtype=object)


def is_local(run: Mapping[str, Any]) -> bool:
    """Whether a run lives in a job directory here (``source`` local), not only on W&B:
    only then are its directory, ``config.yaml`` and Hydra records there to read."""
    return str(run.get("source") or "local") == "local"


def run_config(run: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config of a run: the run table's JSON ``config`` column, else the
    job directory's ``config.yaml``, else ``{}`` (a W&B run or a store without one)."""
    text = run.get("config")
    if isinstance(text, str) and text:
        try:
            config = json.loads(text)
            if isinstance(config, dict):
                return config
        except ValueError:
            pass
    run_dir = run.get("run_dir")
    if isinstance(run_dir, str):
        path = Path(run_dir) / CONFIG
        if path.is_file():
            import yaml  # only here: the table's ``config`` column is the usual source

            try:
                config = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                return {}
            return config if isinstance(config, dict) else {}
    return {}


def run_plan(run: Mapping[str, Any]) -> dict[str, Any] | None:
    """The dropout plan a run ran, as its ``summary.json`` recorded it, or None.

    The plan is ``DropoutPlan.describe()`` of the model's recurrent module: ``{"scheme",
    "cell", "options", "state_output", "sites": {site: {"rate", "granularity", "scaling",
    "gate_masks", "in_recurrence", "carried", "compounds", "eval", "draw"}}}``. Analysis
    reads facts about sites (which one compounds, at what rate) from here rather than from
    the scheme's name. A run written before runs recorded their plan, or a W&B run whose
    summary lacks it, has none: None, and whoever reads it treats the run as having no
    known site facts. ``run`` is a row of the run table (``plan`` as JSON text) or a summary
    (``plan`` as a mapping).
    """
    value = run.get("plan")
    if isinstance(value, str) and value:
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return dict(value) if isinstance(value, Mapping) and isinstance(value.get("sites"), Mapping) else None


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


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{dotted key: value}``; an empty mapping stays a value, so a
    key that holds ``{}`` is not lost."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _variant_basis(config: Mapping[str, Any], dropout: Any) -> dict[str, str]:
    """The config keys that could make two runs different experiments, as labels.

    The dropout is the one the summary reports (0 for ``none`` whatever the config
    says), so a rate sweep does not split the no-dropout baseline into fake variants.
    """
    flat = flatten_config({k: v for k, v in config.items() if k != "dropout"})
    basis = {k: _label_value(v) for k, v in flat.items()
             if not any(k == skip or k.startswith(skip + ".") for skip in _NOT_VARIANT)}
    basis["dropout"] = _label_value(dropout)
    return basis


def run_row(summary: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the run table: the summary, completed from the config where it is silent.

    Shared by the run store and W&B, so both sources give the same values.
    """
    known = JobSummary.from_json(summary)
    from_config = {column: config_value(config, key) for column, key in CONFIG_KEYS.items()}
    merged = {**from_config, **{k: v for k, v in known.to_json().items() if v is not None}}
    ref = known.reference if known.reference is not None else resolve_reference(config)
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
    row["status"] = _text(known.status) or "unknown"
    if row["status"] != "finished":
        for key in _FINISHED_ONLY:
            row[key] = math.nan
    row["config"] = json.dumps(config, sort_keys=True, default=str)
    plan = run_plan(summary)
    row["plan"] = None if plan is None else json.dumps(plan, sort_keys=True, default=str)
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
        groups[tuple(row.get(key) for key in GROUP_KEYS if key != "variant")].append(i)
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


def runs_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
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


def events_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
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
