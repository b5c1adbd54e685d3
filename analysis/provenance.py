"""What produced the runs of a report: the commands, the resolved configs, the report's own command.

A table of perplexities is only worth something if a reader can rerun it, so the report
ends with how its runs were made. Everything here is read from the files Hydra and the
run store leave in the job directories (``multirun.yaml`` of a sweep,
``.hydra/overrides.yaml`` of a job, the resolved config), never from the training code:
the report is built where only the files are. Both renderers (``analysis.report_html``,
``analysis.report_markdown``) take their commands from here, so the page and report.md
never disagree about how to reproduce a result.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import yaml

from analysis.runs import CONFIG_KEYS, flatten_config, is_local, run_config

__all__ = ["job_commands", "report_command", "run_configs", "split_configs", "sweep_command", "sweep_files",
           "training_commands", "varying_shown", "yaml_text"]


def sweep_files(runs: pd.DataFrame) -> list[Path]:
    """The Hydra ``multirun.yaml`` of each sweep the runs came from (job dir upwards, to
    the directory the report was asked for), in first-seen order."""
    found: dict[Path, None] = {}
    for run in runs.to_dict("records"):
        if not is_local(run):
            continue
        here, root = Path(run["run_dir"]), Path(str(run.get("root") or run["run_dir"]))
        for parent in [here, *here.parents]:
            candidate = parent / "multirun.yaml"
            if candidate.is_file():
                found[candidate] = None
                break
            if parent == root or parent == parent.parent:
                break
    return list(found)


def _read_yaml(path: Path) -> Any:
    """A YAML file's content, ``None`` when it is missing or unreadable: a lost Hydra
    record costs the report a command, not the report."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None


def sweep_command(multirun: Path) -> str | None:
    """``python run.py -m OVERRIDES`` as Hydra recorded the sweep's command line."""
    data = _read_yaml(multirun)
    overrides = ((data or {}).get("hydra") or {}).get("overrides") or {}
    task = [str(o) for o in overrides.get("task") or []]
    extra = [str(o) for o in overrides.get("hydra") or [] if str(o) != "hydra.mode=MULTIRUN"]
    if not isinstance(data, dict):
        return None
    return shlex.join(["python", "run.py", "-m", *task, *extra])


def job_commands(runs: pd.DataFrame) -> list[str]:
    """``python run.py OVERRIDES`` per job from ``.hydra/overrides.yaml``, for runs made
    one at a time (no ``multirun.yaml``); distinct, in run order."""
    commands: dict[str, None] = {}
    for run in runs.to_dict("records"):
        if not is_local(run):
            continue
        overrides = _read_yaml(Path(run["run_dir"]) / ".hydra" / "overrides.yaml")
        if isinstance(overrides, list):
            commands[shlex.join(["python", "run.py", *map(str, overrides)])] = None
    return list(commands)


def training_commands(runs: pd.DataFrame, sweeps: Sequence[Path] | None = None) -> list[str]:
    """The commands that trained the runs: each sweep's command when the runs came from
    sweeps, else each job's; ``[]`` when Hydra left no record. ``sweeps`` defaults to
    ``sweep_files(runs)``."""
    sweeps = sweep_files(runs) if sweeps is None else sweeps
    return [c for c in (sweep_command(m) for m in sweeps) if c] or job_commands(runs)


def run_configs(runs: pd.DataFrame) -> list[tuple[str, dict[str, Any]]]:
    """(run name, resolved config) for every run with one."""
    return [(str(run.get("run_name") or run["run_dir"]), config) for run in runs.to_dict("records")
            if (config := run_config(run))]


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def split_configs(configs: Sequence[tuple[str, Mapping[str, Any]]]
                  ) -> tuple[dict[str, Any], list[str], list[tuple[str, dict[str, Any]]]]:
    """What every run shares (as a nested config), the keys that vary, and each run's
    values of those keys: the whole sweep's configuration in a screenful."""
    flats = [(name, flatten_config(config)) for name, config in configs]
    keys = list(dict.fromkeys(k for _, flat in flats for k in flat))
    absent = "\u2205"  # a key one run lacks differs from any value, null included
    varying = [k for k in keys
               if len({json.dumps(flat[k], default=str) if k in flat else absent for _, flat in flats}) > 1]
    shared = {k: v for k, v in flats[0][1].items() if k not in varying} if flats else {}
    per_run = [(name, {k: flat[k] for k in varying if k in flat}) for name, flat in flats]
    return _unflatten(shared), varying, per_run


def varying_shown(varying: Sequence[str]) -> list[str]:
    """The varying keys worth a column beside the run's name: all but the name itself."""
    return [k for k in varying if k != CONFIG_KEYS["run_name"]]


def yaml_text(data: Any) -> str:
    """A config as YAML in the order it was written, for a reader to copy."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip()


def report_command(paths: Sequence[Path], out_dir: Path) -> str:
    """The command that rebuilds this report: ``python -m analysis.report PATHS --out OUT``."""
    return shlex.join(["python", "-m", "analysis.report", *map(str, paths), "--out", str(out_dir)])
