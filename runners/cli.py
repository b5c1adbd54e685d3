"""The installed command ``rnn-bench [-m] key=value ...``: the same as ``python run.py`` in a checkout.

``run.py`` lives at the repository root and is not installed; a console script needs a
function inside a package, and its configs must come from the package data when the
suite is installed without ``-e`` (``runners.hydra_app.CONF_DIR`` finds them). Also
runnable as ``python -m runners.cli``. Jobs are named ``run`` by ``conf/config.yaml``
(``hydra.job.name``), so a job directory looks the same whichever command made it.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from runners.hydra_app import CONF_DIR
from runners.hydra_task import main as run_main
from runners.hydra_task import task


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _compose_and_run(cfg: DictConfig) -> float:
    return task(cfg)  # the objective a hyperparameter search minimises


def main() -> None:
    """Let Hydra compose and run, exactly as ``run.py`` does, with the suite's one-line errors."""
    run_main(_compose_and_run)


if __name__ == "__main__":
    main()
