"""Hydra entry point: ``python run.py [-m] key=value ...``; installed, the same command is ``rnn-bench``.

Thin on purpose: compose the config, then hand over to ``runners``.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from runners.hydra_task import check_overrides, task


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return task(cfg)  # the objective a hyperparameter search minimises


if __name__ == "__main__":
    check_overrides(sys.argv[1:], relative_to=Path(__file__).resolve().parent)
    main()
