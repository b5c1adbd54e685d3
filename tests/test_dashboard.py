"""The dashboard command: a W&B report online, pointers to the local views offline.

The report's keys are checked the way W&B will read them: through ``wandb_workspaces``'
own serialisation (``--dry-run`` prints it) and parser (``expr.groupby_str_to_key``), then
looked up in what the sweep's offline runs really logged, read back with W&B's reader.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from analysis import dashboard
from conftest import ROOT, TINY, cli_env
from test_cli import leet_records


def run_dashboard(sweep: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis.dashboard", str(sweep), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir) -> Path:
    """One real two-job sweep, logged to W&B offline, shared by the tests that read it."""
    tmp = tmp_path_factory.mktemp("dashboard")
    sweep = tmp / "sweep"
    cmd = [sys.executable, "run.py", "-m", "scheme=none,state_dropout", "model=gru", *TINY, "train.epochs=1",
           f"hydra.sweep.dir={sweep}", f"paths.cache_dir={cache_dir}", "threads=1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=cli_env(tmp), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def offline_run(job: Path) -> dict[str, Any]:
    """What one job's offline W&B run holds, in the shapes W&B's backend keeps them.

    History keys and the summary as W&B wrote them (``wandb leet inspect``); the config
    as the backend stores it, each top-level key wrapped as ``{"value": ...}``, built
    with W&B's own ``config_util.dict_from_proto_list`` from the run's config record.
    """
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.lib import config_util

    (run_dir,) = (job / "wandb").glob("offline-run-*")
    records = leet_records(run_dir)
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    items = [pb.ConfigItem(key=k, value_json=json.dumps(v)) for k, v in run["config"]["update"].items()]
    summary = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json", str(run_dir)], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    history: set[str] = set()
    for record in records:
        if record["type"] == "history":
            history |= set(record["history"]["item"])
    return {"run": {"group": run["run_group"], "jobType": run["job_type"]}, "history": history,
            "summary": json.loads(summary)["summary"], "config": config_util.dict_from_proto_list(items)}


def lookup(section: str, name: str, logged: dict[str, Any]) -> Any:
    """The value a ``section:name`` key names in one run; KeyError when the run has no such key."""
    if section == "config":
        value = logged["config"]
        for part in name.split("."):
            value = value[part]
        return value
    if section == "run":
        return logged["run"][name]
    raise KeyError(f"no section {section!r} in a W&B run")


def resolve_metric(metric: str, panel_type: str, logged: dict[str, Any]) -> None:
    """Raise KeyError unless ``metric`` (backend form) is something the run logged."""
    if metric.startswith("summary_metrics."):
        logged["summary"][metric.removeprefix("summary_metrics.")]  # noqa: B018 - the lookup is the check
    elif panel_type == "Run History Line Plot":
        if metric not in logged["history"]:
            raise KeyError(metric)
    else:
        raise KeyError(f"{metric} in a {panel_type}")


def test_offline_it_points_to_leet_and_the_local_report_and_online_without_a_key_it_fails_in_one_line(sweep):
    env = cli_env(sweep.parent)
    proc = run_dashboard(sweep, env)
    assert proc.returncode == 0, proc.stderr
    assert "W&B is offline here" in proc.stdout
    assert f"local report:      {sweep / 'report' / 'index.html'}" in proc.stdout
    assert (sweep / "report" / "index.html").exists()
    leet_line = next(line for line in proc.stdout.splitlines() if "wandb leet " in line and "inspect" not in line)
    browse = Path(leet_line.split("wandb leet ", 1)[1].strip())
    assert browse.is_dir() and list(browse.glob("offline-run-*")), "the leet command must name a real run dir"
    assert f"wandb sync {sweep}/*/wandb/offline-run-*" in proc.stdout

    online = {**env, "WANDB_MODE": "online"}  # asked for online, with no API key configured
    proc = run_dashboard(sweep, online)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: W&B refused the report") and proc.stderr.strip().count("\n") == 0


def test_every_group_key_and_metric_resolves_to_what_the_runs_logged(sweep):
    proc = run_dashboard(sweep, cli_env(sweep.parent), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["project"] == "rnn-dropout" and plan["entity"] is None
    assert plan["title"] == f"Recurrent dropout schemes: sweep {sweep.name}"
    # the sweep's group, training runs only: the sweep's results run (job type "sweep") has no curves
    assert plan["filters"] == [{"key": "run:group", "op": "=", "value": sweep.name},
                               {"key": "run:jobType", "op": "=", "value": "train"}]
    panels = plan["panels"]
    assert [p["section"] for p in panels] == ["Perplexity by scheme and cell"] * 3 + ["Learning curves"] * 3 + \
        ["Stability probes"] * 2
    assert [p["title"] for p in panels if p["type"] == "Bar Chart"] == [t for _, t in dashboard.SUMMARY_METRICS]

    # The group keys are what W&B's own parser makes of dashboard.GROUP_BY: the config section.
    from wandb_workspaces import expr

    parsed = [expr.groupby_str_to_key(key) for key in dashboard.GROUP_BY]
    assert [(k.section, k.name) for k in parsed] == [("config", "scheme.value.name"), ("config", "model.value.cell")]
    assert all(p["group_by"] == [f"{k.section}:{k.name}" for k in parsed] for p in panels)

    # Every run is selected and grouped; every finished run (the GRU with state dropout
    # diverges in its first epoch and has no perplexity to plot) has every metric plotted.
    jobs = sorted(p.parent for p in sweep.glob("*/summary.json"))
    statuses = {job.name: json.loads((job / "summary.json").read_text())["status"] for job in jobs}
    assert statuses == {"0-none-gru-s0": "finished", "1-state_dropout-gru-s0": "diverged"}
    for job in jobs:
        logged = offline_run(job)
        summary = json.loads((job / "summary.json").read_text())
        assert logged["run"]["jobType"] == "train"
        for f in plan["filters"]:
            assert lookup(*f["key"].split(":", 1), logged) == f["value"], "the report selects this sweep's runs"
        groups = [lookup(*key.split(":", 1), logged) for key in panels[0]["group_by"]]
        assert groups == [summary["scheme"], summary["cell"]], "each run falls in its scheme x cell group"
        if summary["status"] != "finished":
            continue
        for panel in panels:
            for metric in panel["metrics"]:
                resolve_metric(metric, panel["type"], logged)
            if panel["x"] is not None:
                assert panel["x"] in logged["history"], f"{panel['title']}: x axis {panel['x']} never logged"
        assert [p["x"] for p in panels if p["metrics"] and p["metrics"][0].startswith("val/")] == ["epoch"]
        assert logged["summary"]["best_val_ppl"] == pytest.approx(summary["best_val_ppl"])
        assert "val/ppl" not in logged["summary"], "the bar's score has one name in the run's summary (issue 25)"

    # The same check catches the keys the dashboard used to send: "scheme.name" names a
    # section "scheme", which no run has, so the report would not have grouped.
    wrong = expr.groupby_str_to_key("scheme.name")
    with pytest.raises(KeyError):
        lookup(wrong.section, wrong.name, offline_run(jobs[0]))


def test_dry_run_needs_no_account_and_names_the_entity_and_project_asked_for(sweep):
    env = {**cli_env(sweep.parent), "WANDB_MODE": "online"}  # online, no key: saving would fail, a dry run does not
    proc = run_dashboard(sweep, env, "--dry-run", "--entity", "my-lab", "--project", "rnn-dropout-2", "--title", "T")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    plan = json.loads(proc.stdout)
    assert (plan["entity"], plan["project"], plan["title"]) == ("my-lab", "rnn-dropout-2", "T")


@pytest.mark.parametrize("make, needle", [
    (lambda d: d, "holds no job directories"),
    (lambda d: d / "missing", "holds no job directories"),
])
def test_a_directory_that_is_not_a_sweep_is_one_line(tmp_path, make, needle):
    proc = run_dashboard(make(tmp_path), cli_env(tmp_path))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and needle in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
