"""The ``Runs`` tables as parquet files: ``runs.parquet``, ``events.parquet`` and ``collect.json``.

Written atomically (each file through a temporary name, ``collect.json`` with the notes
and the cache key last), so a write cut short never leaves a key vouching for
half-written tables; read back with the list cells as plain lists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.runs import Note, Runs

RUNS_PARQUET, EVENTS_PARQUET, CACHE_META = "runs.parquet", "events.parquet", "collect.json"
# Bumped whenever the columns change, so that a cache written by older code is not reused.
CACHE_VERSION = 3


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
