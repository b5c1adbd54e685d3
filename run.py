"""Hydra entry point: ``python run.py [-m] key=value ...``.

Thin on purpose: compose the config, then hand over to ``runners``.
"""

import sys

import hydra
from omegaconf import DictConfig

from runners.hydra_task import check_overrides, task


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return task(cfg)  # the objective a hyperparameter search minimises


if __name__ == "__main__":
    check_overrides(sys.argv[1:])
    main()
