"""Checks of a composed config that Hydra itself would fail on later, with a traceback, or not at all.

Hydra refuses unknown options and keys while it composes (``runners.hydra_app`` puts those in
one line). What it cannot know: a run name that would leave its folder, an output directory
that cannot exist (Hydra creates the job directory before any of the suite's code runs),
joblib's ``n_jobs=0`` and a dropout search over a preset that sweeps ``glob(*)`` (both a
traceback from inside a plugin). ``Checks`` runs them as a Hydra callback, on the composed
config, after composition and before Hydra creates a directory or starts a sweeper; every
refusal is one ``error: ...`` line and exit status 2 (``SystemExit``: Hydra turns a callback's
ordinary exception into a warning and goes on).
"""

from __future__ import annotations

import atexit
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runners.hydra_app import fail

OPTUNA_EXTRA = 'pip install -c constraints.txt -e ".[optuna]"'


def require_optuna(what: str) -> None:
    """One line naming the extra when Hydra's Optuna sweeper is not installed.

    The sweeper and its pins (optuna 2, SQLAlchemy below 2) are the ``optuna`` extra, not the
    core install (issue 25); without it Hydra's own message is a dozen lines about a plugin.
    Checked on the command line, before Hydra scans its plugins (and warns about the missing one).
    """
    try:
        import hydra_plugins.hydra_optuna_sweeper  # noqa: F401
        import optuna  # noqa: F401
    except ImportError:
        fail(f"{what} needs Hydra's Optuna sweeper, which is the optuna extra: {OPTUNA_EXTRA}")


def require_optuna_for(overrides: Iterable[str]) -> None:
    """``hparams_search=...`` or ``hydra/sweeper=optuna`` on the command line: the sweeper must be installed."""
    for override in overrides:
        key, _, value = override.lstrip("+").partition("=")
        if key in ("hparams_search", "hydra/sweeper") and value not in ("", "null", "basic"):
            require_optuna("hparams_search")


def check_paths(cfg: DictConfig, keys: Iterable[str] = ("paths.output_dir",)) -> None:
    """A run name that would leave its folder, or an output directory that cannot exist, as one line.

    ``run_name=../../x`` put a run outside ``runs/`` and an unwritable ``paths.output_dir``
    was a chain of tracebacks (issue 15). ``keys`` are the directories about to be made,
    checked as resolved (so ``hydra.run.dir`` under a bad ``paths.output_dir`` names the latter).
    """
    name = OmegaConf.select(cfg, "run_name")
    if name is not None and (not str(name).strip() or any(c in str(name) for c in "/\\\0") or name in (".", "..")):
        fail(f"run_name={str(name)!r} must be a plain name: no '/', not '.' or '..', not empty "
             f"(it names the run's folder and its W&B run)")
    for key in keys:
        path = OmegaConf.select(cfg, key)
        problem = None if path is None else unusable_dir(Path(str(path)).expanduser())
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


def check_launcher(cfg: DictConfig) -> None:
    """``hydra.launcher.n_jobs``: joblib takes a positive count or a negative one (-1: every core), never 0.

    joblib's own refusal of 0 is a traceback from inside the launcher (issue 26).
    """
    n_jobs = OmegaConf.select(cfg, "hydra.launcher.n_jobs")
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0):
        fail(f"hydra.launcher.n_jobs={n_jobs} must be a whole number of jobs at a time, at least 1, or -1 for one "
             f"per core")


def check_search_over_a_sweep(cfg: DictConfig) -> None:
    """A dropout search over a preset that sweeps with ``glob(*)``, as one line.

    The Optuna sweeper of ``hparams_search`` cannot expand Hydra's ``glob`` and stops with a
    bare AssertionError; the quickstart and synthetic presets sweep ``scheme: glob(*)``.
    A key set on the command line replaces the preset's sweep of it.
    """
    choices = cfg.hydra.runtime.choices
    search, preset = choices.get("hparams_search"), choices.get("experiment")
    if not search:
        return
    given = given_keys(cfg)
    params: dict[str, Any] = OmegaConf.to_container(cfg.hydra.sweeper.get("params") or {})
    globbed = sorted(k for k, v in params.items() if "glob(" in str(v) and k not in given)
    if globbed:
        fail(f"hparams_search={search} cannot search over {f'experiment={preset}' if preset else 'this config'}, "
             f"which sweeps {', '.join(f'{k}: {params[k]}' for k in globbed)}; pick one scheme (scheme=naive) or a "
             "preset without its own sweep (the study presets run the search per scheme: python -m runners.study)")


def given_keys(cfg: DictConfig) -> set[str]:
    """The keys and groups the command line set (Hydra records its overrides in the composed config)."""
    return {o.key_or_group for o in OverridesParser.create().parse_overrides(list(cfg.hydra.overrides.task))}


class Checks(Callback):
    """``run.py`` and ``rnn-bench``: the checks above, before Hydra makes the job or sweep directory.

    ``paths.output_dir`` is made here only when the command line names it: by default nothing
    may appear in the working directory that the job does not write to.
    """

    @staticmethod
    def _dirs(config: DictConfig, made_by_hydra: str) -> list[str]:
        return [*(["paths.output_dir"] if "paths.output_dir" in given_keys(config) else []), made_by_hydra]

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_paths(config, self._dirs(config, "hydra.run.dir"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_launcher(config)
        check_search_over_a_sweep(config)
        # Hydra refuses a job's unknown option (model=lstm,rnn) after writing multirun.yaml: no empty sweep is left
        remove_at_exit(Path(str(config.hydra.sweep.dir)), unless=lambda sweep: any(
            p.name != "multirun.yaml" for p in sweep.iterdir()))
        check_paths(config, self._dirs(config, "hydra.sweep.dir"))


def remove_at_exit(folder: Path, unless: Callable[[Path], bool]) -> None:
    """At exit, remove ``folder`` and the parents made for it, if this process makes it and ``unless(folder)`` is false.

    Only a folder that does not exist yet is ever removed: everything in it is this process's.
    """
    folder = folder.expanduser().absolute()
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    if not made:
        return

    def remove() -> None:
        if folder.is_dir() and not unless(folder):
            shutil.rmtree(folder)
            for parent in made[1:]:
                if parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()

    atexit.register(remove)


class EvalChecks(Callback):
    """``python -m runners.evaluate``: the run and the options, before Hydra makes ``<run>/eval/<time>/``.

    A directory that is not a run must not become one because Hydra created its output
    folder inside it, and a failed evaluation leaves no folder behind: only one that wrote
    its result (``evaluation.json``) is kept.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from runners.build import ConfigError
        from runners.scoring import EVALUATION, EvalError, check_request

        try:
            check_request(config)
        except (EvalError, ConfigError) as e:
            fail(str(e))
        # a checkpoint found corrupt, or a corpus that cannot be read, is only found later: its folder goes
        remove_at_exit(Path(str(config.hydra.run.dir)), unless=lambda out: (out / EVALUATION).is_file())
