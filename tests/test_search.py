"""The fair-tuning search: Hydra's Optuna sweeper over a scheme's dropout rate, on a grid."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from conftest import TINY
from runners.hydra_task import objective


def test_the_search_tries_distinct_grid_rates_and_reports_the_best(run_cli, tmp_path):
    sweep = tmp_path / "search"
    run_cli("-m", "hparams_search=dropout", "scheme=naive", "hydra.sweeper.n_trials=3", *TINY, "train.epochs=1",
            "logger=none", f"hydra.sweep.dir={sweep}")
    trials = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    assert len(trials) == 3 and all(t["status"] == "finished" for t in trials)
    rates = [t["dropout"] for t in trials]
    assert len(set(rates)) == 3 and set(rates) <= {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7}
    assert {p.name for p in sweep.glob("naive-*")} == {f"naive-lstm-s0-p{r}" for r in rates}  # found again on resume
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = min(trials, key=lambda t: t["best_val_ppl"])
    assert result["best_value"] == pytest.approx(best["best_val_ppl"])
    assert result["best_params"]["dropout"] == pytest.approx(best["dropout"])


def test_a_run_that_blew_up_or_failed_scores_infinity():
    assert objective({"status": "finished", "best_val_ppl": 123.4}) == 123.4
    assert math.isinf(objective({"status": "diverged", "best_val_ppl": None}))
    assert math.isinf(objective({"status": "diverged", "best_val_ppl": 300.0}))  # diverged after a good epoch
    assert math.isinf(objective({"status": "failed", "best_val_ppl": None}))
