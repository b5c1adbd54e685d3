"""The resolved plan travels with every run (issue 16): real training jobs, run as a user
runs them, record the engine's ``DropoutPlan.describe()`` in ``summary.json``, and the
stability analysis takes the compounding site and its rate from there, not from a list of
scheme names: Moon's memory dropout compounds under ``scheme.scaling=inverted`` and not
under its default test-time scaling, on the same scheme and cell.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from analysis.runs import run_plan
from analysis.probes import probe_records
from analysis.store_reader import collect
from benchmark.engine.schemes import resolve
from conftest import TINY

RATE = 0.25
# job directory -> overrides; one layer and one epoch: the plan, not the training, is under test
JOBS = {"state_dropout-gru": ["scheme=state_dropout", "model=gru"],
        "moon-lstm": ["scheme=moon", "model=lstm"],
        "moon-lstm-inverted": ["scheme=moon", "model=lstm", "scheme.scaling=inverted"]}


@pytest.fixture
def sweep(run_cli, tmp_path: Path) -> Path:
    for name, overrides in JOBS.items():
        run_cli(*overrides, *TINY, "model.num_layers=1", "train.epochs=1", "train.probe_steps=30",
                f"dropout={RATE}", "logger=none", f"hydra.run.dir={tmp_path / 'sweep' / name}")
    return tmp_path / "sweep"


def summary_of(job: Path) -> dict:
    return json.loads((job / "summary.json").read_text())


def test_jobs_record_their_plan_and_the_stability_analysis_reads_it(sweep: Path) -> None:
    for name in JOBS:
        summary = summary_of(sweep / name)
        config = yaml.safe_load((sweep / name / "config.yaml").read_text())
        options = {k: v for k, v in config["scheme"].items() if k != "name"}
        assert summary["status"] == "finished"
        # Where it ran, for a table published from the sweep on another machine (analysis.sweep_table).
        assert summary["machine"]["device"] == "cpu" and summary["machine"]["torch"] == torch.__version__
        assert summary["machine"]["cpu"] and "vector" in summary["machine"]
        assert summary["plan"] == resolve(config["scheme"]["name"], config["model"]["cell"], config["dropout"],
                                          **options).describe(), name

    sites = {name: summary_of(sweep / name)["plan"]["sites"] for name in JOBS}
    assert sites["state_dropout-gru"]["state"]["rate"] == RATE
    assert sites["state_dropout-gru"]["state"]["compounds"] is True
    assert not any(site["compounds"] for site in sites["moon-lstm"].values())  # {0, 1} mask: nothing grows
    assert sites["moon-lstm"]["c"]["scaling"] == "test"
    assert sites["moon-lstm-inverted"]["c"]["compounds"] is True
    assert sites["moon-lstm-inverted"]["c"]["scaling"] == "inverted"

    runs = collect([sweep])
    assert {r["rel_dir"]: run_plan(r) for _, r in runs.runs.iterrows()} == \
        {name: summary_of(sweep / name)["plan"] for name in JOBS}
    records = {Path(r.run_dir).name: r for r in probe_records(runs)}
    assert set(records) == set(JOBS)
    assert (records["state_dropout-gru"].site, records["state_dropout-gru"].rate) == ("state", RATE)
    assert records["state_dropout-gru"].inv_keep == pytest.approx(1 / (1 - RATE))
    assert (records["moon-lstm-inverted"].site, records["moon-lstm-inverted"].rate) == ("c", RATE)
    assert records["moon-lstm"].site is None and records["moon-lstm"].inv_keep is None
