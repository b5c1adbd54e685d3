"""The dashboard command: a W&B report online, pointers to the local views offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import dashboard
from conftest import ROOT, TINY, cli_env
from test_cli import leet_records


def run_dashboard(sweep: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis.dashboard", str(sweep), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_offline_it_points_to_leet_and_the_local_report_and_online_without_a_key_it_fails_in_one_line(
        run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("-m", "scheme=none,state_dropout", "model=gru", *TINY, "train.epochs=1", f"hydra.sweep.dir={sweep}")

    env = cli_env(tmp_path)
    proc = run_dashboard(sweep, env)
    assert proc.returncode == 0, proc.stderr
    assert "W&B is offline here" in proc.stdout
    assert f"local report:      {sweep / 'report' / 'index.html'}" in proc.stdout
    assert (sweep / "report" / "index.html").exists()
    leet_line = next(line for line in proc.stdout.splitlines() if "wandb leet " in line and "inspect" not in line)
    browse = Path(leet_line.split("wandb leet ", 1)[1].strip())
    assert browse.is_dir() and list(browse.glob("offline-run-*")), "the leet command must name a real run dir"
    assert f"wandb sync {sweep}/*/wandb/offline-run-*" in proc.stdout

    # Every metric the online report plots is one the jobs really log.
    logged: set[str] = set()
    for run_dir in sweep.glob("*/wandb/offline-run-*"):
        for record in leet_records(run_dir):
            if record["type"] == "history":
                logged |= set(record["history"]["item"])
    summary = json.loads(next(sweep.glob("0-*/summary.json")).read_text())
    plotted = [key for key, *_ in dashboard.CURVES + dashboard.PROBES]
    assert set(plotted) <= logged, f"plotted but never logged: {set(plotted) - logged}"
    assert {key for key, _ in dashboard.SUMMARY_METRICS} <= set(summary)

    online = {**env, "WANDB_MODE": "online"}  # asked for online, with no API key configured
    proc = run_dashboard(sweep, online)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: W&B refused the report") and proc.stderr.strip().count("\n") == 0


def test_the_report_groups_one_sweep_by_scheme_and_cell():
    report = dashboard.build_report("lab", "rnn-dropout", "2026-11-23_10-00-00")
    grids = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
    assert len(grids) == 3
    for grid in grids:
        (runset,) = grid.runsets
        assert runset.filters == "Metric('Group') == '2026-11-23_10-00-00'"
        assert runset.groupby == ["scheme.name", "model.cell"] and runset.project == "rnn-dropout"
    bars = [p for p in grids[0].panels if type(p).__name__ == "BarPlot"]
    assert [m.name for p in bars for m in p.metrics] == ["best_val_ppl", "test_ppl"]
    assert [p.y for p in grids[2].panels] == [["probe/growth_per_step"], ["probe/max_state"]]


@pytest.mark.parametrize("make, needle", [
    (lambda d: d, "holds no job directories"),
    (lambda d: d / "missing", "holds no job directories"),
])
def test_a_directory_that_is_not_a_sweep_is_one_line(tmp_path, make, needle):
    proc = run_dashboard(make(tmp_path), cli_env(tmp_path))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and needle in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
