"""The bridge from Hydra to a job: where the job lives, and how errors reach the user.

A bad value must cost one line, not a traceback: ``ConfigError`` is printed as
``error: ...`` and the process exits with status 2 before any training. A job that
fails while training is recorded as ``failed`` in its ``summary.json``; in a sweep the
other jobs go on, and the end-of-sweep summary lists it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.config_repository import ConfigRepository
from hydra._internal.utils import create_automatic_config_search_path, get_args_parser
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.default_element import ConfigDefault, GroupDefault
from hydra.core.hydra_config import HydraConfig
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.plugins.config_source import ConfigResult
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from runners.build import ConfigError
from runners.job import (SWEEP_STOPPED, Interrupted, JobContext, ModelDoesNotFit, disk_full, joblib_worker,
                         rerun_command, run_job)

# ``hydra._internal`` above: Hydra has no public API for "the configs this command line
# can compose from"; these are the functions ``@hydra.main`` itself calls, and
# hydra-core is pinned below 1.4 (pyproject.toml), so they cannot move under us.


def config_dir() -> Path:
    """The suite's own config tree: package data when installed, ``conf/`` in a checkout.

    A wheel ships ``conf/`` as the package ``runners.conf`` (see ``pyproject.toml``), so
    ``rnn-bench`` finds its presets from any directory; a checkout (and an editable
    install) reads ``conf/`` beside ``runners/``, where users edit it.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    return here.parent / "conf"


CONF_DIR = config_dir()


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


class _ArgvError(Exception):
    """Hydra's own argument parser rejected the command line; Hydra will say so itself."""


def hydra_args(argv: list[str]) -> argparse.Namespace | None:
    """The command line as Hydra's own parser reads it (``--config-dir``, ``-cn``, overrides), or None.

    Using Hydra's parser, not a hand-written filter, means ``-cd DIR``, ``--config-dir=DIR``
    and the overrides are split exactly as Hydra will split them a moment later.
    """
    parser = get_args_parser()

    def error(message: str) -> None:
        raise _ArgvError(message)

    parser.error = error  # type: ignore[method-assign]  # Hydra prints its own usage error
    try:
        args, _ = parser.parse_known_args(argv)
    except _ArgvError:
        return None
    return args


@dataclass
class ConfigTree:
    """The configs a command line composes from, read through Hydra's own config repository.

    The search path is built as Hydra builds it: Hydra's own configs, the suite's
    ``conf/`` (or ``--config-path``), search-path plugins (how installed config packages
    add themselves), ``--config-dir`` in front, and ``hydra.searchpath`` from the command
    line or the primary config. So a user's own preset or group option outside this
    repository is as valid here as it is to Hydra, and "choose one of" lists what Hydra
    would accept.
    """

    repo: ConfigRepository
    config_name: str = "config"

    @classmethod
    def create(cls, config_dir: str | None = None, config_path: str | None = None, config_name: str | None = None,
               overrides: list[Override] | None = None, relative_to: Path | None = None) -> ConfigTree:
        """The tree for these command-line settings; ``relative_to`` is where a relative ``--config-path`` starts.

        ``relative_to`` is the entry point's directory, as Hydra resolves it (``run.py``'s
        directory, or the ``runners`` package for ``rnn-bench``); by default ``conf/``'s parent.
        """
        primary = str(CONF_DIR)
        if config_path is not None:
            primary = config_path if os.path.isabs(config_path) or config_path.startswith("pkg://") else \
                str(((relative_to or CONF_DIR.parent) / config_path).resolve())
        search_path = create_automatic_config_search_path(None, None, primary)
        if config_dir is not None:
            search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(config_dir)}",
                                anchor=SearchPathQuery(provider="schema"))
        repo = ConfigRepository(search_path)
        tree = cls(repo, config_name or "config")
        extra = tree.searchpath(overrides or [])
        if extra:
            schema = search_path.get_path().pop(-1)  # the structured-config source stays last, as in Hydra
            for path in extra:
                search_path.append(provider="hydra.searchpath", path=path)
            search_path.append(schema.provider, schema.path)
            repo.initialize_sources(search_path)
        return tree

    def searchpath(self, overrides: list[Override]) -> list[str]:
        """``hydra.searchpath`` as Hydra reads it: the command line's, else the primary config's."""
        for o in overrides:
            if o.get_key_element() == "hydra.searchpath":
                value = o.value()
                return [str(v) for v in value] if isinstance(value, list) else []
        primary = self.load(self.config_name)
        if primary is None:
            return []
        try:
            value = OmegaConf.select(primary.config, "hydra.searchpath")
        except Exception:  # noqa: BLE001 - an unresolvable value is Hydra's to report
            return []
        return [str(v) for v in value] if isinstance(value, (list, ListConfig)) else []

    def load(self, path: str) -> ConfigResult | None:
        """One config (``experiment/quickstart``) from the first source that has it, or None."""
        try:
            return self.repo.load_config(path)
        except Exception:  # noqa: BLE001 - a broken file is reported by Hydra when it composes
            return None

    def is_group(self, group: str) -> bool:
        return self.repo.group_exists(group)

    def groups(self) -> list[str]:
        return self.repo.get_group_options("", ObjectType.GROUP)

    def options(self, group: str) -> list[str]:
        return self.repo.get_group_options(group, ObjectType.CONFIG)

    def has_option(self, group: str, option: str) -> bool:
        return self.repo.config_exists(f"{group}/{option}")

    def keys(self, group: str, option: str) -> set[str]:
        """The keys one option of a group sets (``scheme/none`` sets only ``name``)."""
        loaded = self.load(f"{group}/{option}")
        return set(loaded.config) if loaded is not None and OmegaConf.is_dict(loaded.config) else set()

    def body(self, path: str, depth: int = 0) -> dict:
        """A config's keys, with those of the configs its defaults list includes (``- config``).

        A user's own primary config (``-cn mine``) usually starts from ``- config`` and
        adds a little: its keys are the suite's keys and its own.
        """
        loaded = self.load(path)
        if loaded is None or depth > 8 or not OmegaConf.is_dict(loaded.config):
            return {}
        merged: dict = {}
        for d in loaded.defaults_list or []:
            if isinstance(d, ConfigDefault) and d.path and not d.is_self():
                _merge(merged, self.body(_absolute(d.path, path), depth + 1))
        _merge(merged, OmegaConf.to_container(loaded.config, resolve=False))
        return merged

    def choice(self, path: str, group: str, depth: int = 0) -> str | None:
        """The option of ``group`` that config ``path``'s defaults list picks, following nested presets.

        ``experiment/study_ptb_medium`` includes ``zaremba_medium``, which picks the scheme:
        the last entry that decides wins, as in Hydra's defaults list.
        """
        loaded = self.load(path)
        if loaded is None or depth > 8:
            return None
        found = None
        for d in loaded.defaults_list or []:
            if isinstance(d, GroupDefault) and d.group is not None and d.package is None:
                if _absolute(d.group, path) == group and isinstance(d.value, str):
                    found = d.value
            elif isinstance(d, ConfigDefault) and d.path and not d.is_self():
                found = self.choice(_absolute(d.path, path), group, depth + 1) or found
        return found


def _absolute(name: str, within: str) -> str:
    """A defaults-list entry's path from the config root: ``/scheme`` is absolute, ``zaremba_medium``
    in ``experiment/study_ptb_medium`` means ``experiment/zaremba_medium``."""
    if name.startswith("/"):
        return name[1:]
    here = within.rsplit("/", 1)[0] if "/" in within else ""
    return f"{here}/{name}" if here else name


def _merge(into: dict, more: dict) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = {**into[key], **value}
        else:
            into[key] = value


def group_options(group: str, tree: ConfigTree | None = None) -> list[str]:
    """The options of a config group Hydra can compose (the suite's own, by default)."""
    return (tree or ConfigTree.create()).options(group)


def check_overrides(argv: list[str], relative_to: Path | None = None) -> None:
    """Unknown config-group choices (``scheme=bogus``) as one line, before Hydra composes anything.

    Hydra's own message for this spans a dozen lines with its search path; users asked
    for the one thing that matters: what was wrong and what is allowed. What is allowed
    is what Hydra's search path holds, ``--config-dir`` and ``hydra.searchpath``
    included, so a user's own preset is never refused here.
    """
    args = hydra_args(argv)
    if args is None:
        return  # Hydra reports a malformed command line itself
    try:
        overrides: list[Override] = OverridesParser.create().parse_overrides(args.overrides)
    except HydraException:
        return  # Hydra reports syntax errors itself
    if args.config_dir is not None and not os.path.isdir(args.config_dir):
        return  # Hydra names the missing directory
    tree = ConfigTree.create(config_dir=args.config_dir, config_path=args.config_path, config_name=args.config_name,
                             overrides=overrides, relative_to=relative_to)
    if tree.load(tree.config_name) is None:
        return  # no primary config: Hydra says which and where it looked
    check_keys(overrides, tree)
    for o in overrides:
        group = o.key_or_group
        if o.package is not None or "." in group or o.is_delete() or not tree.is_group(group):
            continue
        if group.startswith("hydra/"):
            continue  # Hydra's own groups: plugins add options (launchers, sweepers) that conf/ does not list
        if o.is_sweep_override() and not o.is_discrete_sweep():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        allowed = tree.options(group)
        for v in values:
            if v not in allowed and v != "null":
                fail(f"{group}={v} is unknown; choose one of: {', '.join(allowed)}")
    check_option_keys(overrides, tree)
    check_search_over_a_sweep(overrides, tree)
    check_paths(overrides)
    check_launcher(overrides)
    if any(o.key_or_group in ("hparams_search", "hydra/sweeper") and not o.is_delete()
           and o.get_value_element_as_str() not in ("null", "basic") for o in overrides):
        require_optuna("hparams_search")


OPTUNA_EXTRA = 'pip install -c constraints.txt -e ".[optuna]"'


def require_optuna(what: str) -> None:
    """One line naming the extra when Hydra's Optuna sweeper is not installed.

    The sweeper and its pins (optuna 2, SQLAlchemy below 2) are the ``optuna`` extra, not the
    core install (issue 25); without it Hydra's own message is a dozen lines about a plugin.
    """
    try:
        import hydra_plugins.hydra_optuna_sweeper  # noqa: F401
        import optuna  # noqa: F401
    except ImportError:
        fail(f"{what} needs Hydra's Optuna sweeper, which is the optuna extra: {OPTUNA_EXTRA}")


def check_search_over_a_sweep(overrides: list[Override], tree: ConfigTree) -> None:
    """A dropout search over a preset that sweeps schemes with ``glob(*)``, as one line.

    The Optuna sweeper of ``hparams_search`` cannot expand Hydra's ``glob`` and stops with a
    bare AssertionError; the quickstart and synthetic presets sweep ``scheme: glob(*)``.
    """
    chosen = {o.key_or_group: o.get_value_element_as_str() for o in overrides
              if not o.is_sweep_override() and o.key_or_group in ("experiment", "hparams_search")}
    if "hparams_search" not in chosen or "experiment" not in chosen:
        return
    params = tree.body(f"experiment/{chosen['experiment']}").get("hydra", {}).get("sweeper", {}).get("params", {})
    given = {o.key_or_group for o in overrides}  # a key set on the command line replaces the preset's sweep of it
    globbed = sorted(k for k, v in params.items() if "glob(" in str(v) and k not in given)
    if globbed:
        fail(f"hparams_search={chosen['hparams_search']} cannot search over experiment={chosen['experiment']}, which "
             f"sweeps {', '.join(f'{k}: {params[k]}' for k in globbed)}; pick one scheme (scheme=naive) or a preset "
             "without its own sweep (the study presets run the search per scheme: python -m runners.study)")


def check_launcher(overrides: list[Override]) -> None:
    """``hydra.launcher.n_jobs``: joblib takes a positive count or a negative one (-1: every core), never 0.

    joblib's own refusal of 0 is a traceback from inside the launcher (issue 26).
    """
    for o in overrides:
        if o.key_or_group != "hydra.launcher.n_jobs" or o.is_delete() or o.is_sweep_override():
            continue
        value = o.value()
        if isinstance(value, bool) or not isinstance(value, int) or value == 0:
            fail(f"hydra.launcher.n_jobs={o.get_value_element_as_str()} must be a whole number of jobs at a time, "
                 f"at least 1, or -1 for one per core")


OUTPUT_KEYS = ("paths.output_dir", "hydra.run.dir", "hydra.sweep.dir")


def check_paths(overrides: list[Override]) -> None:
    """A run name that would leave its folder, or an output directory that cannot exist, as one line.

    Both reach Hydra, which creates the job directory before any of the suite's code runs:
    ``run_name=../../x`` put a run outside ``runs/`` and an unwritable ``paths.output_dir``
    was a chain of tracebacks (issue 15).
    """
    values = {o.key_or_group: o.get_value_element_as_str() for o in overrides
              if not o.is_sweep_override() and not o.is_delete() and o.package is None}
    name = values.get("run_name")
    if name is not None and "${" not in name and (
            not name.strip() or "/" in name or "\\" in name or name in (".", "..") or "\0" in name):
        fail(f"run_name={name!r} must be a plain name: no '/', not '.' or '..', not empty "
             f"(it names the run's folder and its W&B run)")
    for key in OUTPUT_KEYS:
        path = values.get(key)
        if path is None or "${" in path:
            continue
        problem = unusable_dir(Path(path).expanduser())
        if problem:
            fail(f"{key}={path} cannot hold the runs: {problem}; choose a writable directory")


def unusable_dir(path: Path) -> str | None:
    """Why ``path`` cannot be a directory of runs, or None when it can (it then exists).

    Creating it is the only reliable test (root passes every permission check, and
    /proc refuses new folders whatever the permissions say); Hydra would create it next.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"{path} is a file"
    except OSError as e:
        return f"{e.strerror.lower()}: {e.filename or path}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


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


def _is_global(result: ConfigResult) -> bool:
    return str(result.header.get("package") or "").startswith("_global_")


def known_keys(tree: ConfigTree | None = None) -> dict[str, set[str] | None]:
    """Top-level keys of the config tree; for a group, the keys its options may set.

    ``None`` marks a key whose contents are free-form (a mapping such as ``dropout`` or
    ``reference``), where any sub-key may be valid. A ``# @package _global_`` preset
    (a user's own, too) may add top-level keys of its own: they are known, free-form.
    """
    tree = tree or ConfigTree.create()
    body = tree.body(tree.config_name)
    keys: dict[str, set[str] | None] = {k: set(v) if isinstance(v, dict) else None
                                        for k, v in body.items() if k not in ("defaults", "hydra")}
    extra: set[str] = set()
    for group in tree.groups():
        if group == "hydra":
            continue
        fields: set[str] = set()
        for option in tree.options(group):
            loaded = tree.load(f"{group}/{option}")
            if loaded is None or not OmegaConf.is_dict(loaded.config):
                continue
            if _is_global(loaded):
                extra |= {k for k in loaded.config if k != "hydra"}
            elif loaded.header.get("package") in (None, "", "_group_"):
                fields |= set(loaded.config)
        keys[group] = fields or None
    for key in extra - set(keys):
        keys[key] = None
    return keys


def option_keys(group: str, option: str, tree: ConfigTree | None = None) -> set[str]:
    """The keys one option of a group sets (``scheme/none.yaml`` sets only ``name``)."""
    return (tree or ConfigTree.create()).keys(group, option)


def chosen_options(group: str, overrides: list[Override], tree: ConfigTree) -> list[str]:
    """Which options of ``group`` this command line composes: its override, a preset's, or the default."""
    for o in overrides:
        if o.key_or_group == group and o.package is None and not o.is_delete():
            if o.is_sweep_override():
                return list(o.sweep_string_iterator()) if o.is_discrete_sweep() else []
            return [o.get_value_element_as_str()]
    for preset_group in ("case", "experiment"):  # later defaults win: case is composed after experiment
        for o in overrides:
            if o.key_or_group == preset_group and not o.is_sweep_override():
                choice = tree.choice(f"{preset_group}/{o.get_value_element_as_str()}", group)
                if choice is not None:
                    return [choice]
    choice = tree.choice(tree.config_name, group)
    return [choice] if choice is not None else []


def check_option_keys(overrides: list[Override], tree: ConfigTree) -> None:
    """``scheme.granularity=element`` with ``scheme=none``: the chosen option has no such key.

    The key exists in other options of the group, so the group-wide check lets it
    through, and Hydra's own struct error would span several lines.
    """
    for o in overrides:
        parts = o.key_or_group.split(".")
        if len(parts) != 2 or o.is_add() or o.is_force_add() or o.is_delete() or o.package is not None:
            continue
        if parts[0] == "hydra" or not tree.is_group(parts[0]):
            continue
        for choice in chosen_options(parts[0], overrides, tree):
            if not tree.has_option(parts[0], choice):
                continue  # an unknown choice is reported by check_overrides
            keys = tree.keys(parts[0], choice)
            if parts[1] not in keys:
                takers = [c for c in tree.options(parts[0]) if parts[1] in tree.keys(parts[0], c)]
                fail(f"{o.key_or_group} does not apply to {parts[0]}={choice} (its keys: {', '.join(sorted(keys))}); "
                     f"{parts[0]} options that take it: {', '.join(takers)}")


def check_keys(overrides: list[Override], tree: ConfigTree | None = None) -> None:
    """A misspelt key (``trian.epochs=3``) as one line with the keys that exist.

    Hydra's own message spans five lines; a ``+key=`` override (adding a key on purpose)
    and Hydra's own keys are left to Hydra.
    """
    import difflib

    tree = tree or ConfigTree.create()
    keys = known_keys(tree)
    for o in overrides:
        if o.is_add() or o.is_force_add() or o.is_delete() or o.package is not None:
            continue
        parts = o.key_or_group.split(".")
        if parts[0] == "hydra" or "/" in parts[0] or (len(parts) == 1 and tree.is_group(parts[0])):
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
    if multirun and (Path(hc.sweep.dir) / SWEEP_STOPPED).exists():
        return float("inf")  # Ctrl-C reached the sweep before this job started: it stays unstarted
    ctx = JobContext(job_dir=Path(hc.runtime.output_dir),
                     group=sweep_group(hc.sweep.dir, hc.runtime.choices) if multirun else None, multirun=multirun)
    try:
        summary = run_job(cfg, ctx)
    except ConfigError as e:
        fail(str(e))
    except (Interrupted, KeyboardInterrupt):
        if multirun and joblib_worker():  # the launcher ends the sweep once every running job has stopped
            return float("inf")
        print(f"interrupted: {ctx.job_dir} keeps its checkpoint; resume with: {resume_command(hc)}",
              file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as e:
        if isinstance(e, ModelDoesNotFit) and not multirun:
            fail(str(e))
        if disk_full(e) and not multirun:
            fail(f"{e.strerror} while writing {e.filename or ctx.job_dir}; free some space and run the same "
                 f"command again: the job resumes from its last checkpoint")
        if not multirun:
            raise
        return float("inf")  # recorded as failed in summary.json; the sweep goes on
    return objective(summary)


TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}")


def sweep_group(sweep_dir: str, choices: Mapping[str, Any]) -> str:
    """A sweep's W&B group: its folder's name, led by what made it when the folder is a bare timestamp.

    A project page of groups named ``2026-12-07_10-31-02`` does not say what each one is
    (issue 25): the default sweep folder becomes ``quickstart-2026-12-07_10-31-02`` after the
    preset (``experiment``, else ``hparams_search``, else ``case``), or ``sweep-...`` without
    one. A folder the user named (``hydra.sweep.dir=outputs/search/variational``) is the name.
    The group still names the folder: the timestamp is its last part.
    """
    name = Path(sweep_dir).name
    if not TIMESTAMP.fullmatch(name):
        return name
    label = next((str(choices[g]) for g in ("experiment", "hparams_search", "case") if choices.get(g)), "sweep")
    return f"{label}-{name}"


def resume_command(hc: Any) -> str:
    """The command that continues this job or sweep: as typed, with its directory pinned."""
    if hc.mode == RunMode.MULTIRUN:
        return rerun_command("hydra.sweep.dir", hc.sweep.dir)
    return rerun_command("hydra.run.dir", hc.runtime.output_dir)


def objective(summary: dict) -> float:
    """What a hyperparameter search minimises: the best validation perplexity.

    A diverged or failed job scores +inf, so a search moves away from rates that blow up.
    """
    best = summary.get("best_val_ppl")
    return float(best) if summary.get("status") == "finished" and best is not None else float("inf")
