"""What a study's grid searches have found: their trials in Optuna's SQLite database, and the best rates.

``runners.study`` runs each search as a Hydra sweep with the Optuna sweeper, one SQLite database
per scheme x cell (``optuna.db`` in the search's directory), and reads back from here which grid
points have a result, how many trials a rerun must still ask for, and the pair the seeds run at.
Optuna is imported only when a database exists: composing and checking a study needs none.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from runners.study_spec import StudyError

# Trial states that hold a result; an interrupted trial stays RUNNING and is asked again.
DONE_STATES = ("COMPLETE", "FAIL", "PRUNED")


def storage_url(sweep_dir: Path) -> str:
    return f"sqlite:///{sweep_dir / 'optuna.db'}"


def study_name(scheme: str, cell: str, grid: dict[str, tuple[float, ...]] | None = None) -> str:
    """The Optuna study of one search: ``dropout-<scheme>-<cell>``, then its grid.

    One study per grid, because Optuna fixes a parameter's choices for the life of a study: a
    grid extended later (a rate added) is searched in a study of its own in the same database,
    where the points already run answer at once from their finished job directories.
    """
    base = f"dropout-{scheme}-{cell}"
    if not grid:
        return base
    return base + "".join(f"-{g}{'_'.join(f'{r:g}' for r in rates)}" for g, rates in grid.items())


def finished_trials(sweep_dir: Path, scheme: str, cell: str, grid: dict[str, tuple[float, ...]] | None = None
                    ) -> list[Any]:
    """The search's trials that have a result (an interrupted one stays RUNNING and is asked again).

    With ``grid``, those of that grid's study; without, those of every study of the scheme and
    cell in the database (every grid it was searched on).
    """
    if not (sweep_dir / "optuna.db").is_file():
        return []
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage_url(sweep_dir)
    names = ([study_name(scheme, cell, grid)] if grid is not None else
             [s.study_name for s in optuna.get_all_study_summaries(storage)
              if s.study_name == study_name(scheme, cell) or s.study_name.startswith(study_name(scheme, cell) + "-")])
    trials = []
    for name in names:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            continue
        trials += [t for t in study.get_trials(deepcopy=False) if t.state.name in DONE_STATES]
    return trials


def param(group: str) -> str:
    """The config key a rate group is searched on: ``dropout.ff``, ``dropout.rec``."""
    return f"dropout.{group}"


def grid_points(grid: dict[str, tuple[float, ...]]) -> list[tuple[float, ...]]:
    """Every point of a search grid, one rate per group in ``grid``'s order."""
    return list(itertools.product(*grid.values()))


def _point(trial: Any, grid: dict[str, tuple[float, ...]]) -> tuple[float, ...] | None:
    try:
        return tuple(float(trial.params[param(g)]) for g in grid)
    except KeyError:
        return None


def missing_points(sweep_dir: Path, scheme: str, cell: str, grid: dict[str, tuple[float, ...]]) -> list[tuple]:
    """The grid points without a finished trial."""
    done = {_point(t, grid) for t in finished_trials(sweep_dir, scheme, cell)}
    return [p for p in grid_points(grid) if p not in done]


def trials_to_ask(sweep_dir: Path, scheme: str, cell: str, grid: dict[str, tuple[float, ...]]) -> int:
    """How many trials the sweeper must ask so that every grid point has a result (0: none).

    Optuna's grid sampler asks the points its own study (this grid's) has not finished. Points
    run under an earlier grid are asked again there and answer at once from their finished job
    directories (named by their rates), so only the points new to the search train.
    """
    if not missing_points(sweep_dir, scheme, cell, grid):
        return 0
    points = set(grid_points(grid))
    visited = {_point(t, grid) for t in finished_trials(sweep_dir, scheme, cell, grid)} & points
    return len(points) - len(visited)


def best_rates(sweep_dir: Path, scheme: str, cell: str, grid: dict[str, tuple[float, ...]] | None = None
               ) -> dict[str, float]:
    """``{group: rate}`` of the grid point with the lowest best-validation perplexity.

    Ties go to the weaker regularisation (lower ``ff``, then lower ``rec``). A point whose
    run diverged scores +inf, so a scheme that blows up everywhere is still compared at its
    weakest point, and its seeded runs show it. Chosen on validation only, never on test.
    With ``grid``, only trials at its points count (a point dropped from the grid does not).
    """
    trials = [t for t in finished_trials(sweep_dir, scheme, cell) if t.values]
    if grid is not None:
        points = set(grid_points(grid))
        trials = [t for t in trials if _point(t, grid) in points]
    if not trials:
        raise StudyError(f"the search in {sweep_dir} has no finished trial")
    groups = [g for g in ("ff", "rec") if param(g) in trials[0].params]
    best = min(trials, key=lambda t: (t.values[0], *(t.params[param(g)] for g in groups)))
    return {g: float(best.params[param(g)]) for g in groups}
