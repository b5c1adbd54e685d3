"""The bridge from Hydra to a job: where the job lives, and how errors reach the user.

A bad value must cost one line, not a traceback: ``ConfigError`` is printed as
``error: ...`` and the process exits with status 2 before any training. A job that
fails while training is recorded as ``failed`` in its ``summary.json``; in a sweep the
other jobs go on, and the end-of-sweep summary lists it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from runners.build import ConfigError
from runners.job import JobContext, run_job

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_overrides(argv: list[str]) -> None:
    """Unknown config-group choices (``scheme=bogus``) as one line, before Hydra composes anything.

    Hydra's own message for this spans a dozen lines with its search path; users asked
    for the one thing that matters: what was wrong and what is allowed.
    """
    args = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        overrides: list[Override] = OverridesParser.create().parse_overrides(args)
    except HydraException:
        return  # Hydra reports syntax errors itself
    check_keys(overrides)
    for o in overrides:
        group = o.key_or_group
        if o.package is not None or "." in group or not (CONF_DIR / group).is_dir() or o.is_delete():
            continue
        if group.startswith("hydra/"):
            continue  # Hydra's own groups: plugins add options (launchers, sweepers) that conf/ does not list
        if o.is_sweep_override() and not o.is_discrete_sweep():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        allowed = group_options(group)
        for v in values:
            if v not in allowed and v != "null":
                fail(f"{group}={v} is unknown; choose one of: {', '.join(allowed)}")
    check_option_keys(overrides)


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


def known_keys() -> dict[str, set[str] | None]:
    """Top-level keys of the config tree; for a group, the keys its options may set.

    ``None`` marks a key whose contents are free-form (a mapping such as ``dropout`` or
    ``reference``), where any sub-key may be valid.
    """
    primary = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    keys: dict[str, set[str] | None] = {k: set(v) if isinstance(v, dict) else None
                                        for k, v in primary.items() if k not in ("defaults", "hydra")}
    for group in (p for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"):
        fields: set[str] = set()
        for option in group.glob("*.yaml"):
            text = option.read_text()
            if not text.lstrip().startswith("# @package _global_"):
                fields |= {k for k in (yaml.safe_load(text) or {}) if k != "defaults"}
        keys[group.name] = fields or None
    return keys


def option_keys(group: str, option: str) -> set[str]:
    """The keys one option of a group sets (``scheme/none.yaml`` sets only ``name``)."""
    return {k for k in (yaml.safe_load((CONF_DIR / group / f"{option}.yaml").read_text()) or {}) if k != "defaults"}


def preset_choice(path: Path, group: str) -> str | None:
    """The option a preset (``experiment/``, ``case/``) picks for ``group`` in its defaults list."""
    if not path.is_file():
        return None
    for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                if key.replace("override ", "").strip().lstrip("/") == group:
                    return str(value)
    return None


def chosen_options(group: str, overrides: list[Override]) -> list[str]:
    """Which options of ``group`` this command line composes: its override, a preset's, or the default."""
    for o in overrides:
        if o.key_or_group == group and o.package is None and not o.is_delete():
            if o.is_sweep_override():
                return list(o.sweep_string_iterator()) if o.is_discrete_sweep() else []
            return [o.get_value_element_as_str()]
    for preset_group in ("case", "experiment"):  # later defaults win: case is composed after experiment
        for o in overrides:
            if o.key_or_group == preset_group and not o.is_sweep_override():
                choice = preset_choice(CONF_DIR / preset_group / f"{o.get_value_element_as_str()}.yaml", group)
                if choice is not None:
                    return [choice]
    return [str(preset_choice(CONF_DIR / "config.yaml", group))]


def check_option_keys(overrides: list[Override]) -> None:
    """``scheme.granularity=element`` with ``scheme=none``: the chosen option has no such key.

    The key exists in other options of the group, so the group-wide check lets it
    through, and Hydra's own struct error would span several lines.
    """
    for o in overrides:
        parts = o.key_or_group.split(".")
        if len(parts) != 2 or o.is_add() or o.is_force_add() or o.is_delete() or o.package is not None:
            continue
        if not (CONF_DIR / parts[0]).is_dir() or parts[0] == "hydra":
            continue
        for choice in chosen_options(parts[0], overrides):
            if not (CONF_DIR / parts[0] / f"{choice}.yaml").is_file():
                continue  # an unknown choice is reported by check_overrides
            keys = option_keys(parts[0], choice)
            if parts[1] not in keys:
                takers = [c for c in group_options(parts[0]) if parts[1] in option_keys(parts[0], c)]
                fail(f"{o.key_or_group} does not apply to {parts[0]}={choice} (its keys: {', '.join(sorted(keys))}); "
                     f"{parts[0]} options that take it: {', '.join(takers)}")


def check_keys(overrides: list[Override]) -> None:
    """A misspelt key (``trian.epochs=3``) as one line with the keys that exist.

    Hydra's own message spans five lines; a ``+key=`` override (adding a key on purpose)
    and Hydra's own keys are left to Hydra.
    """
    import difflib

    keys = known_keys()
    for o in overrides:
        if o.is_add() or o.is_force_add() or o.is_delete() or o.package is not None:
            continue
        parts = o.key_or_group.split(".")
        if parts[0] == "hydra" or "/" in parts[0] or (len(parts) == 1 and (CONF_DIR / parts[0]).is_dir()):
            continue
        if parts[0] not in keys:
            close = difflib.get_close_matches(parts[0], keys, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            fail(f"{o.key_or_group} is not a config key{hint}; top-level keys: {', '.join(sorted(keys))}")
        inner = keys[parts[0]]
        if len(parts) > 1 and inner is not None and parts[1] not in inner:
            close = difflib.get_close_matches(parts[1], inner, n=1)
            hint = f" (did you mean {parts[0]}.{close[0]}?)" if close else ""
            fail(f"{o.key_or_group} is not a config key{hint}; {parts[0]} has: {', '.join(sorted(inner))}")


def task(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    threads, gpu = parallel_share(hc) if multirun else (None, None)
    if threads is not None and cfg.threads is None:
        cfg.threads = threads
    if gpu is not None and cfg.device == "auto":
        cfg.device = f"cuda:{gpu}"
    ctx = JobContext(job_dir=Path(hc.runtime.output_dir), group=Path(hc.sweep.dir).name if multirun else None,
                     multirun=multirun)
    try:
        summary = run_job(cfg, ctx)
    except ConfigError as e:
        fail(str(e))
    except Exception:
        if not multirun:
            raise
        return float("inf")  # recorded as failed in summary.json; the sweep goes on
    return objective(summary)


def objective(summary: dict) -> float:
    """What a hyperparameter search minimises: the best validation perplexity.

    A diverged or failed job scores +inf, so a search moves away from rates that blow up.
    """
    best = summary.get("best_val_ppl")
    return float(best) if summary.get("status") == "finished" and best is not None else float("inf")
