"""The debug group (issue 25): ``debug=smoke`` runs any preset's sweep at toy size in seconds,
``debug=overfit`` checks a scheme's wiring by memorising a few batches; sweeps are named for W&B."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from analysis import dashboard
from analysis.figures import write_figures
from analysis.store_reader import collect
from runners.hydra_task import sweep_group
from test_cli import leet_records


def summaries(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]


@pytest.mark.slow
def test_smoke_runs_the_quickstarts_sweep_of_every_scheme_at_toy_size_with_its_report(run_cli, tmp_path):
    out = tmp_path / "out"
    run_cli("-m", "experiment=quickstart", "debug=smoke", "model=gru", f"paths.output_dir={out}", timeout=600)
    (sweep,) = (out / "sweeps").iterdir()
    jobs = summaries(sweep)
    assert len(jobs) == 8 and {j["status"] for j in jobs} <= {"finished", "diverged"}  # every scheme: glob(*)
    assert {j["scheme"] for j in jobs} >= {"none", "naive", "state_dropout"}
    config = yaml.safe_load((sweep / "0-moon-gru-s0" / "config.yaml").read_text())
    assert config["model"]["hidden_size"] == 16 and config["train"]["epochs"] == 1 and config["data"]["size"] == 2000
    assert config["logger"]["name"] == "none" and not list(sweep.glob("*/wandb"))
    assert (sweep / "report" / "index.html").is_file()
    # its figures, read as a reader would (issue 25): whole epochs on the axis, and a scheme whose
    # runs diverged (the GRU under state dropout) marked above its panel, not at the foot
    figures = {f.name: f for f in write_figures(collect([sweep]), tmp_path / "figures")}
    assert figures["val_ppl"].drawn["x_ticks"] and all(t == int(t) for t in figures["val_ppl"].drawn["x_ticks"])
    diverged = {j["scheme"] for j in jobs if j["status"] == "diverged"}
    assert "state_dropout" in diverged
    (panel,) = figures["test_ppl"].drawn["panels"].values()
    for group, record in panel.items():
        assert (record["marker"] == "top") == (group in diverged), group
    assert "explosion" in figures  # state dropout compounds: the explosion figure has something to show


@pytest.mark.slow
def test_the_command_line_still_wins_over_smoke_and_the_wandb_group_is_named_for_the_preset(run_cli, tmp_path):
    out = tmp_path / "out"
    run_cli("-m", "experiment=quickstart", "debug=smoke", "logger=wandb", "scheme=none,naive", "model=lstm",
            "train.epochs=2", f"paths.output_dir={out}", timeout=600)
    (sweep,) = (out / "sweeps").iterdir()
    jobs = summaries(sweep)
    assert [j["epochs"] for j in jobs] == [2, 2]
    for job in sweep.glob("*-lstm-s0"):
        (run_dir,) = (job / "wandb").glob("offline-run-*")
        (run,) = [r["run"] for r in leet_records(run_dir) if r["type"] == "run"]
        assert run["run_group"] == f"quickstart-{sweep.name}"
    # the dashboard filters on the group the jobs logged to, not on the folder's name
    assert dashboard.sweep_settings(sweep)["group"] == f"quickstart-{sweep.name}"
    # the sweep's results as one W&B table, in a run of its own in the same group (job type "sweep")
    (results_run,) = (sweep / "report" / "wandb").glob("offline-run-*")
    (run,) = [r["run"] for r in leet_records(results_run) if r["type"] == "run"]
    assert run["job_type"] == "sweep" and run["run_group"] == f"quickstart-{sweep.name}"
    (table_file,) = results_run.glob("files/media/table/sweep/results*.table.json")
    table = json.loads(table_file.read_text())
    assert len(table["data"]) == 2 and {row[table["columns"].index("scheme")] for row in table["data"]} == \
        {"none", "naive"}
    # no state that compounds and nothing diverged: no explosion figure in its report
    assert (sweep / "report" / "index.html").is_file() and not list((sweep / "report").rglob("explosion.*"))


@pytest.mark.slow
def test_overfit_drives_the_training_perplexity_to_near_one_with_the_masks_on(run_cli, tmp_path):
    run_cli("debug=overfit", "scheme=semeniuta", "model=lstm", f"hydra.run.dir={tmp_path / 'run'}", timeout=600)
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [e["ppl"] for e in events if e["split"] == "train" and e.get("scope") == "epoch"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # validation goes far past 10 x the tiny vocabulary: over-fitting, not a blow-up
    assert summary["status"] == "finished" and summary["plan"]["sites"]
    assert len(train) == 50 and train[0] > 50 and train[-1] < 1.5


def test_a_sweep_group_names_what_made_it_and_keeps_a_name_the_user_chose():
    assert sweep_group("outputs/sweeps/2026-12-07_10-31-02", {"experiment": "quickstart"}) == \
        "quickstart-2026-12-07_10-31-02"
    assert sweep_group("outputs/sweeps/2026-12-07_10-31-02", {"experiment": None, "hparams_search": "dropout"}) == \
        "dropout-2026-12-07_10-31-02"
    assert sweep_group("outputs/sweeps/2026-12-07_10-31-02", {"experiment": None}) == "sweep-2026-12-07_10-31-02"
    assert sweep_group("outputs/search/variational-gru", {"experiment": "quickstart"}) == "variational-gru"
