"""``python -m runners.evaluate run=RUN_DIR [key=value ...]``: a finished run scored again, as a Hydra app.

The same override syntax as training (``python run.py``): its primary config is
``conf/eval.yaml``, so ``data.path=DIR`` means the same in both commands, ``-m`` sweeps
(``mc=0,10,100``), ``--cfg job`` shows what will run and ``logger=wandb`` (the training
config's ``logger`` group) logs the result to W&B as a run of job type ``eval``, in the group
of the training run's sweep. What is computed is ``runners.scoring``'s; this module turns a
composed config into its arguments and its result into output.

Each evaluation writes its result (``evaluation.json``), Hydra's record of it (``.hydra/``,
``evaluate.log``) and its W&B files into ``<run>/eval/<time>/`` (``hydra.run.dir``), beside the
run's own files and never over them. The run and every option are checked before Hydra makes
that folder, and a failed evaluation's folder is removed (``runners.hydra_checks.EvalChecks``).
Bad input is one ``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import MISSING, DictConfig, OmegaConf

from benchmark.data.registry import BUILDERS, corpus_loader
from runners.build import schema_of
from runners.hydra_app import CONF_DIR, fail, run_app
from runners.scoring import EVALUATION, OPTIONS, EvalError, Evaluation, evaluate_run, given_data, read_run, render
from runners.tracking import WandbTracker

log = logging.getLogger("runners.evaluate")


def data_options() -> type:
    """Every option of every corpus, unset: the ``data`` node an evaluation's command line changes.

    Unset (``???``) means "as the run had it", so ``data.size=2500`` changes one option of the
    run's own corpus while ``data=text`` (a ``conf/data/`` option, composed on top) names
    another; a key no corpus has is refused by Hydra itself. The keys are the loaders'
    arguments (``runners.build.schema_of``), so the list lives in one place.
    """
    keys = {"name"}.union(*(schema_of(corpus_loader(name)) for name in BUILDERS))
    return dataclasses.make_dataclass("DataOptions", [(k, Any, dataclasses.field(default=MISSING))
                                                      for k in sorted(keys)])


ConfigStore.instance().store(name="data_options", node=data_options(), package="data")


def track(cfg: DictConfig, result: Evaluation, out_dir: Path) -> None:
    """The result as a W&B run of its own: job type ``eval``, in the training run's group where it had one.

    Its config is the run's, with the evaluation's options under ``eval``, so W&B's run table
    filters evaluations by scheme and cell as it filters training runs; its summary is the
    evaluation (the training run's status as ``run_status``). A broken W&B costs a warning.
    """
    run_cfg, summary = read_run(Path(str(cfg.run)))
    options = {key: cfg.get(key) for key in ("run", *OPTIONS)} | {"data": given_data(cfg)}
    tracker = WandbTracker(project=cfg.logger.project, entity=cfg.logger.get("entity"),
                           mode=cfg.logger.get("mode", "auto"), job_dir=out_dir, name=f"{result.run_name}-eval",
                           group=(summary or {}).get("wandb_group"),
                           tags=[result.scheme, result.cell, result.data, result.split], job_type="eval",
                           config={**OmegaConf.to_container(run_cfg, resolve=True), "eval": options})
    record = dataclasses.asdict(result)
    record["run_status"] = record.pop("status")  # the evaluation itself finished: W&B's exit code says so
    tracker.close({**record, "status": "finished"})


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _evaluate(cfg: DictConfig) -> None:
    """Score the run; print the result, keep it in the evaluation's folder, and log it to W&B when asked."""
    hc = HydraConfig.get()
    try:
        result = evaluate_run(Path(str(cfg.run)), split=cfg.split, mc=cfg.mc, data=given_data(cfg),
                              device=cfg.device, seed=cfg.seed, weights=cfg.weights)
    except EvalError as e:
        if hc.mode == RunMode.MULTIRUN:  # one bad job of a sweep: said, and the sweep goes on
            log.error("%s: %s", cfg.run, e)
            return
        fail(str(e))
    print(json.dumps(dataclasses.asdict(result)) if cfg.json else render(result), flush=True)
    out_dir = Path(hc.runtime.output_dir)
    if cfg.logger.name == "wandb":
        track(cfg, result, out_dir)
    (out_dir / EVALUATION).write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")


def main() -> None:
    """Compose ``conf/eval.yaml`` with the command line and score the run, with the suite's one-line errors."""
    run_app(_evaluate, CONF_DIR, "eval")


if __name__ == "__main__":
    main()
