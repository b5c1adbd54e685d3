"""The installed command ``rnn-bench [-m] key=value ...``: the same as ``python run.py`` in a checkout.

``run.py`` lives at the repository root and is not installed; a console script needs a
function inside a package, and its configs must come from the package data when the
suite is installed without ``-e`` (``runners.hydra_task.CONF_DIR`` finds them). Also
runnable as ``python -m runners.cli``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from runners.hydra_task import CONF_DIR, check_overrides, task

JOB_NAME = "run"  # as under run.py: the job's log is run.log, whichever command started it


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _compose_and_run(cfg: DictConfig) -> float:
    return task(cfg)  # the objective a hyperparameter search minimises


def main() -> None:
    """Check the overrides in one line each, then let Hydra compose and run, exactly as ``run.py`` does.

    Hydra names a job after the module that calls it (here ``cli``); the job name is set
    to ``run`` so a job directory looks the same whichever command made it.
    """
    check_overrides(sys.argv[1:], relative_to=Path(__file__).resolve().parent)
    if not any(a.lstrip("+").startswith("hydra.job.name=") for a in sys.argv[1:]):
        sys.argv.append(f"hydra.job.name={JOB_NAME}")
    _compose_and_run()


if __name__ == "__main__":
    main()
