"""A job's checkpoint on disk: written atomically, refused loudly when it cannot be trusted.

The checkpoint sits in the job directory beside the run store. It carries the training
state (``benchmark.train.checkpoint_state``), the length of ``metrics.jsonl`` when it
was taken (a resumed job cuts the file back there, so no event is logged twice), and a
fingerprint of the config that produced it: resuming under a different config would
silently mix two experiments, so it is an error naming the key that differs.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import torch

from analysis.store_format import CHECKPOINT
from runners.build import ConfigError

FORMAT = 1
# Keys that do not change what is trained: a job may resume with these changed. ``study`` is the
# design of the study a job belongs to (its grids, seeds, settings), not the job's own setting.
VOLATILE = ("logger", "paths", "threads", "flush_denormal", "device", "run_name", "study")
# Config keys added after checkpoints were already being written, with the value that does
# what a job did before the key existed: a checkpoint without the key is read as having it
# at that value, so a job interrupted before the key was added resumes instead of being
# refused as "another config" (and one asked to run otherwise is still refused).
ADDED_KEYS = {("train", "test_weights"): "best"}  # before it, every job tested its best-validation weights


def fingerprint(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in VOLATILE}


def save(job_dir: Path, state: dict, metrics_offset: int, config: dict) -> None:
    payload = {"format": FORMAT, "config": json.dumps(fingerprint(config), sort_keys=True),
               "metrics_offset": metrics_offset, **state}
    # Serialised in memory, then written with plain file I/O: a full disk is then an OSError
    # (ENOSPC) that names itself, where torch.save's writer reports only "unexpected pos".
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    fd, tmp = tempfile.mkstemp(dir=job_dir, prefix=f".{CHECKPOINT}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, job_dir / CHECKPOINT)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(va, dict) and isinstance(vb, dict):
            found = _first_difference(va, vb, f"{prefix}{key}.")
            if found:
                return found
        elif va != vb:
            return f"{prefix}{key}: {va} in the checkpoint, {vb} now"
    return ""


def with_added_keys(saved: dict) -> dict:
    """``saved`` (a checkpoint's config fingerprint) with every ``ADDED_KEYS`` key it lacks at its old value."""
    for (section, key), value in ADDED_KEYS.items():
        if isinstance(saved.get(section), dict):
            saved[section].setdefault(key, value)
    return saved


def load(job_dir: Path, config: dict) -> dict | None:
    """The checkpoint to resume from, ``None`` if there is none; ``ConfigError`` if unusable."""
    path = job_dir / CHECKPOINT
    if not path.exists():
        return None
    advice = f"move {path} away to start this job over"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT:
            raise ValueError(f"format {payload.get('format')!r}, expected {FORMAT}")
        saved = with_added_keys(json.loads(payload["config"]))
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint gets the same one-line answer
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"checkpoint {path} is unreadable ({reason[:160]}); {advice}") from None
    now = json.loads(json.dumps(fingerprint(config), sort_keys=True))
    if saved != now:
        raise ConfigError(f"checkpoint {path} was written by another config ({_first_difference(saved, now)}); {advice}")
    return payload
