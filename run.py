"""Hydra entry point: ``python run.py [-m] key=value ...``; installed, the same command is ``rnn-bench``.

Thin on purpose: compose the config, then hand over to ``runners``.
"""

import hydra
from omegaconf import DictConfig

from runners.hydra_task import main, task


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def compose_and_run(cfg: DictConfig) -> float:
    return task(cfg)  # the objective a hyperparameter search minimises


if __name__ == "__main__":
    main(compose_and_run)  # Hydra's refusals as one line each
