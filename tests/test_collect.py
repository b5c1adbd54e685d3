"""Reading runs: real run-store files in tmp_path, the W&B mapping, the parquet cache.

The W&B test feeds ``collect_wandb`` what the real tracker (``runners.tracking``) sends
for a run written here, through a minimal stand-in for the public API (the service is
unreachable from tests), and requires the same tables as reading the files directly.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import analysis.store_reader as store_reader
from analysis.collect import main
from analysis.parquet_cache import CACHE_META, EVENTS_PARQUET, RUNS_PARQUET
from analysis.runs import RUN_COLUMNS, run_plan
from analysis.store_reader import collect
from analysis.wandb_reader import collect_wandb, history_events
from test_report import resolved_plan

PROBE_STEPS = 5
ZAREMBA = {"source": "Zaremba et al. 2014, Table 1", "valid_ppl": 120.7, "test_ppl": 114.5}


def config_for(scheme: str, cell: str, seed: int, *, dropout: float = 0.5, data: str = "kjv",
               scheme_options: dict | None = None, reference: Any = None) -> dict:
    """A resolved config as the job writes it to config.yaml (the keys analysis reads)."""
    return {"scheme": {"name": scheme, **(scheme_options or {})},
            "model": {"cell": cell, "hidden_size": 16, "num_layers": 1},
            "data": {"name": data, "size": 2000},
            "train": {"epochs": 2, "lr": 1.0, "log_interval": 5},
            "logger": {"name": "wandb", "project": "rnn-dropout"},
            "seed": seed, "dropout": dropout, "run_name": f"{scheme}-{cell}-s{seed}",
            "reference": reference, "paths": {"output_dir": "outputs"}}


def events_for(val: list[float], test: float | None, *, null_probe: bool = False) -> list[dict]:
    """The events a job logs: per epoch an interval and a whole-epoch train event, a
    validation event and a probe (lists of norms); a test event at the end."""
    lines: list[dict] = []
    for epoch, v in enumerate(val, start=1):
        step = 10 * epoch
        lines.append({"epoch": epoch, "step": step, "split": "train", "scope": "interval", "loss": math.log(v + 7),
                      "ppl": v + 7, "lr": 1.0, "grad_norm": 0.5 * epoch, "tokens_per_s": 900.0 + epoch})
        lines.append({"epoch": epoch, "step": step, "split": "train", "scope": "epoch", "loss": math.log(v - 3),
                      "ppl": v - 3, "lr": 1.0, "tokens_per_s": 950.0, "grad_norm_max": 1.5 * epoch})
        lines.append({"epoch": epoch, "step": step, "split": "val", "loss": math.log(v), "ppl": v})
        norms = [0.5 * (t + 1) * epoch for t in range(PROBE_STEPS)]
        if null_probe:  # a blown-up state: the store writes NaN as null
            norms[-1] = None
        lines.append({"epoch": epoch, "step": step, "split": "probe", "state_norm": norms,
                      "cell_norm": [n / 2 for n in norms if n is not None] if not null_probe else None,
                      "max_state": 0.9, "growth_per_step": 1.01 * epoch})
    if test is not None:
        lines.append({"epoch": len(val), "step": 10 * len(val), "split": "test", "loss": math.log(test), "ppl": test})
    return lines


def write_job(job: Path, *, scheme: str = "naive", cell: str = "lstm", seed: int = 0, val: tuple = (200.0, 150.0),
              test: float | None = 140.0, status: str = "finished", summary: bool = True, torn_tail: bool = False,
              reference: Any = None, summary_reference: Any = "from config", mc_test: float | None = None,
              null_probe: bool = False, plan: dict | None = None, **config_options: Any
              ) -> tuple[dict, dict, list[dict]]:
    """A job directory as the run store writes it; returns (config, summary, events).
    ``plan`` is the summary's recorded plan; without one the summary is as written before
    runs recorded it."""
    job.mkdir(parents=True)
    config = config_for(scheme, cell, seed, reference=reference, **config_options)
    (job / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    events = events_for(list(val), test if status == "finished" else None, null_probe=null_probe)
    text = "".join(json.dumps(e) + "\n" for e in events)
    if torn_tail:
        text += '{"epoch": 3, "step": 30, "split": "tr'
    (job / "metrics.jsonl").write_text(text)
    record = {"run_name": config["run_name"], "scheme": scheme, "cell": cell, "data": config["data"]["name"],
              "seed": seed, "dropout": 0.0 if scheme == "none" else config["dropout"], "status": status,
              "best_val_ppl": min(val), "test_ppl": test, "bayes_test_ppl": None, "mc_test_ppl": mc_test,
              "epochs": len(val), "wall_s": 3.5, "train_tokens_per_s": 950.0, "diverged_step": None,
              "error": None, "dir": str(job)}
    if plan is not None:
        record["plan"] = plan
    if summary_reference == "from config":
        record["reference"] = reference
    elif summary_reference != "absent":
        record["reference"] = summary_reference
    if summary:
        (job / "summary.json").write_text(json.dumps(record, indent=2))
    return config, record, events


# --- the run store ----------------------------------------------------------------------

def test_reads_reference_mc_and_location_columns(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    write_job(sweep / "0", scheme="naive", reference=ZAREMBA, mc_test=138.25)
    write_job(sweep / "1", scheme="none", seed=1)
    runs = collect([sweep]).runs
    assert tuple(runs.columns) == RUN_COLUMNS
    none, naive = runs.iloc[0], runs.iloc[1]  # ordered by SCHEME_ORDER
    assert (none["scheme"], naive["scheme"]) == ("none", "naive")
    assert naive["ref_source"] == ZAREMBA["source"]
    assert naive["ref_val_ppl"] == 120.7 and naive["ref_test_ppl"] == 114.5
    assert math.isnan(naive["ref_mc_test_ppl"]) and naive["mc_test_ppl"] == 138.25
    assert pd.isna(none["ref_source"]) and math.isnan(none["ref_test_ppl"]) and math.isnan(none["mc_test_ppl"])
    assert set(runs["source"]) == {"local"} and set(runs["url"]) == {""}
    assert json.loads(naive["config"])["train"]["lr"] == 1.0


def test_reference_resolved_from_config_when_summary_has_none(tmp_path: Path) -> None:
    """An older summary without ``reference``: the preset's per-variant numbers apply."""
    gal = {"source": "Gal & Ghahramani 2016, Table 1", "by": "scheme.gate_masks",
           "values": {"untied": {"test_ppl": 79.7, "mc_test_ppl": 78.6}, "tied": {}}}
    for i, masks in enumerate(("untied", "tied")):
        write_job(tmp_path / str(i), scheme="variational", reference=gal, summary_reference="absent",
                  scheme_options={"gate_masks": masks})
    runs = collect([tmp_path]).runs.set_index("variant")
    assert runs.loc["scheme.gate_masks=untied", "ref_test_ppl"] == 79.7
    assert runs.loc["scheme.gate_masks=untied", "ref_mc_test_ppl"] == 78.6
    assert math.isnan(runs.loc["scheme.gate_masks=tied", "ref_test_ppl"])
    assert set(runs["ref_source"]) == {gal["source"]}


def test_variant_is_what_differs_within_a_scheme_and_cell(tmp_path: Path) -> None:
    for seed in (0, 1):
        for drop_cell in (False, True):
            write_job(tmp_path / f"sd-{drop_cell}-{seed}", scheme="state_dropout", seed=seed,
                      scheme_options={"drop_cell": drop_cell})
        # the baseline ignores the rate: its summary says 0.0 whatever the config says
        write_job(tmp_path / f"none-{seed}", scheme="none", seed=seed, dropout=0.2 + 0.3 * seed)
        write_job(tmp_path / f"naive-{seed}", scheme="naive", seed=seed, dropout=0.25 * (seed + 1))
    runs = collect([tmp_path]).runs
    labels = runs.groupby("scheme")["variant"].agg(lambda s: sorted(set(s)))
    assert labels["state_dropout"] == ["scheme.drop_cell=false", "scheme.drop_cell=true"]
    assert labels["none"] == [""]
    assert labels["naive"] == ["dropout=0.25", "dropout=0.5"]


def test_torn_metrics_line_and_missing_summary_are_reported_not_fatal(tmp_path: Path) -> None:
    _, _, events = write_job(tmp_path / "torn", torn_tail=True)
    write_job(tmp_path / "killed", summary=False)
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "summary.json").write_text('{"status": "fini')
    result = collect([tmp_path])
    assert list(result.runs["rel_dir"]) == ["torn"]
    skipped = {Path(n.path).name: n.message for n in result.skipped}
    assert set(skipped) == {"killed", "garbled"}
    assert "no summary.json" in skipped["killed"] and "unreadable summary.json" in skipped["garbled"]
    assert [(Path(n.path).name, n.message) for n in result.warnings] == [
        ("torn", "1 unreadable line(s) in metrics.jsonl dropped")]
    assert len(result.events) == len(events)  # every whole line kept, the torn one dropped


def test_missing_path_is_an_error_before_reading(tmp_path: Path) -> None:
    write_job(tmp_path / "ok")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        collect([tmp_path, tmp_path / "typo"])


# --- parquet cache ----------------------------------------------------------------------

def test_parquet_cache_round_trip_reuse_and_invalidation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    _, summary, events = write_job(sweep / "0", null_probe=True)
    plan = resolved_plan("variational", "lstm", 0.5)
    write_job(sweep / "1", scheme="variational", seed=1, reference=ZAREMBA, plan=plan)
    write_job(sweep / "2", summary=False)  # skipped: the note must survive the cache too

    first = collect([sweep], cache=cache)
    assert (cache / RUNS_PARQUET).is_file() and (cache / EVENTS_PARQUET).is_file() and (cache / CACHE_META).is_file()
    # the recorded plan is a column of JSON text; a summary without one has None there
    assert [run_plan(r) for _, r in first.runs.iterrows()] == [None, plan]

    # The second call must not read the store at all: make reading it impossible.
    real = store_reader._collect_dirs
    monkeypatch.setattr(store_reader, "_collect_dirs", lambda roots: pytest.fail("store read again"))
    second = collect([sweep], cache=cache)
    pd.testing.assert_frame_equal(first.runs, second.runs)
    pd.testing.assert_frame_equal(first.events, second.events)
    assert [run_plan(r) for _, r in second.runs.iterrows()] == [None, plan]
    assert [str(n) for n in second.skipped] == [str(n) for n in first.skipped] and len(second.skipped) == 1

    # Lists survive as lists of floats, the store's null as NaN.
    probes = second.events[second.events["split"].eq("probe") & second.events["seed"].eq(0)]
    written = [e["state_norm"] for e in events if e["split"] == "probe"]
    for got, want in zip(probes["state_norm"], written):
        assert isinstance(got, list) and len(got) == PROBE_STEPS
        assert got[:-1] == want[:-1] and math.isnan(got[-1])
    assert probes["cell_norm"].isna().all()
    other = second.events[second.events["split"].eq("probe") & second.events["seed"].eq(1)]
    assert other["cell_norm"].iloc[0] == [0.25 * (t + 1) for t in range(PROBE_STEPS)]

    # A rewritten summary changes the fingerprint: the store is read again.
    monkeypatch.setattr(store_reader, "_collect_dirs", real)
    path = sweep / "0" / "summary.json"
    path.write_text(json.dumps({**summary, "best_val_ppl": 99.5}))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    third = collect([sweep], cache=cache)
    assert third.runs.loc[third.runs["seed"].eq(0), "best_val_ppl"].item() == 99.5
    assert collect([sweep], cache=cache).runs.loc[lambda r: r["seed"].eq(0), "best_val_ppl"].item() == 99.5


def test_cli_writes_parquet_and_fails_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_job(tmp_path / "sweep" / "0")
    write_job(tmp_path / "sweep" / "1", summary=False)
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "1 runs (1 finished), 1 skipped" in out and "warning: skipped" in err
    assert len(pd.read_parquet(tmp_path / "out" / RUNS_PARQUET)) == 1
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such directory" in err
    with pytest.raises(SystemExit) as e:
        main(["--group", "g", str(tmp_path / "sweep"), "--out", str(tmp_path / "out3")])
    assert e.value.code == 2
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


# --- W&B --------------------------------------------------------------------------------

class RecordingRun:
    """What ``wandb.init`` returns, as far as ``WandbTracker`` uses it: logs are merged
    per step into history rows, the way W&B's server keeps them, and the latest value of
    each key lands in the summary, as W&B does, unless the run declared the key (or a glob
    it matches) ``summary="none"`` (tests/test_tracking.py checks this summary against the
    one the real library keeps)."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self.summary: dict[str, Any] = {}
        self.unsummarised: list[str] = []  # names and globs declared summary="none"

    def define_metric(self, name: str, step_metric: str | None = None, summary: str | None = None) -> None:
        if summary == "none":
            self.unsummarised.append(name)

    def log(self, values: dict[str, Any], step: int) -> None:
        row = self.rows.setdefault(step, {"_step": step, "_runtime": 1.0 * step})
        for key, value in values.items():
            if isinstance(value, (int, float, str)) or value is None:
                row[key] = value
            else:  # a chart: the server keeps a reference to a table file
                row[f"{key}_table"] = {"_type": "table-file", "path": f"media/table/{step}.table.json"}
        self.summary.update({k: v for k, v in row.items() if not isinstance(v, dict)
                             and not any(fnmatch.fnmatchcase(k, name) for name in self.unsummarised)})

    def finish(self, exit_code: int = 0) -> None:
        pass


@dataclass
class PublicRun:
    """The attributes of ``wandb.apis.public.Run`` that ``collect_wandb`` reads."""

    id: str
    name: str
    group: str
    tags: list[str]
    url: str
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    state: str = "finished"

    def scan_history(self):
        return iter(self.history)


class PublicApi:
    """``wandb.Api()``'s ``runs(path, filters)``, over a fixed list of runs."""

    def __init__(self, runs: list[PublicRun]) -> None:
        self._runs = runs
        self.calls: list[tuple[str, Any]] = []

    def runs(self, path: str, filters: dict | None = None) -> list[PublicRun]:
        self.calls.append((path, filters))
        return [r for r in self._runs if not filters or r.group == filters.get("group")]


def tracked(run_id: str, config: dict, summary: dict, events: list[dict], group: str) -> PublicRun:
    """The public-API view of a run the real tracker logged ``events`` and ``summary`` to."""
    from runners.tracking import WandbTracker

    tracker = WandbTracker.around(recorder := RecordingRun())  # not __init__: that would start wandb
    for event in events:
        tracker.log(event)
    tracker.close(summary)
    return PublicRun(id=run_id, name=summary["run_name"], group=group,
                     tags=[summary["scheme"], summary["cell"], summary["data"]],
                     url=f"https://wandb.ai/me/rnn-dropout/runs/{run_id}", config=config,
                     summary=recorder.summary, history=[recorder.rows[s] for s in sorted(recorder.rows)])


def test_wandb_runs_map_to_the_same_tables_as_the_store(tmp_path: Path) -> None:
    sweep = tmp_path / "2026-01-01_00-00-00"
    jobs = {"a1": write_job(sweep / "0", scheme="naive", reference=ZAREMBA, mc_test=141.0),
            "b2": write_job(sweep / "1", scheme="variational", cell="gru", seed=3, val=(300.0, 250.0, 260.0)),
            "c3": write_job(sweep / "2", scheme="moon", status="diverged", val=(400.0,), null_probe=True,
                            scheme_options={"scaling": "inverted"},
                            plan=resolved_plan("moon", "lstm", 0.5, scaling="inverted"))}
    public = [tracked(run_id, *job, sweep.name) for run_id, job in jobs.items()]
    # killed before the tracker wrote the final summary: no status
    crashed = tracked("d4", jobs["a1"][0], {"run_name": "x", "scheme": "naive", "cell": "lstm", "data": "kjv"},
                      [], sweep.name)
    crashed.state = "crashed"
    elsewhere = tracked("e5", *jobs["a1"], "another-sweep")
    api = PublicApi(public + [crashed, elsewhere])

    local = collect([sweep])
    remote = collect_wandb("rnn-dropout", group=sweep.name, entity="me", api=api)

    assert api.calls == [("me/rnn-dropout", {"group": sweep.name})]
    assert [str(n.path) for n in remote.skipped] == ["wandb:me/rnn-dropout/d4"]
    assert "state crashed" in remote.skipped[0].message
    assert list(remote.runs.columns) == list(local.runs.columns)
    assert list(remote.events.columns) == list(local.events.columns)
    where = ["source", "url", "run_dir", "rel_dir", "root"]
    pd.testing.assert_frame_equal(remote.runs.drop(columns=where), local.runs.drop(columns=where))
    assert list(remote.runs["url"]) == [f"https://wandb.ai/me/rnn-dropout/runs/{i}" for i in ("a1", "b2", "c3")]
    assert list(remote.runs["run_dir"]) == [f"wandb:me/rnn-dropout/{i}" for i in ("a1", "b2", "c3")]
    assert set(remote.runs["source"]) == {"wandb"}

    # Events: the same rows and values; the probe's lists reach W&B only as a chart.
    lists = ["state_norm", "cell_norm"]
    pd.testing.assert_frame_equal(remote.events.drop(columns=lists + ["run_dir"]),
                                  local.events.drop(columns=lists + ["run_dir"]))
    assert remote.events[lists].isna().all().all()
    ref = remote.runs.set_index("scheme").loc["naive"]
    assert (ref["ref_test_ppl"], ref["mc_test_ppl"]) == (114.5, 141.0)
    # the plan the tracker copied into the W&B summary comes back as the store's
    plans = {r["scheme"]: run_plan(r) for _, r in remote.runs.iterrows()}
    assert plans["moon"] == jobs["c3"][1]["plan"] and plans["moon"]["sites"]["c"]["compounds"] is True
    assert plans["naive"] is None and plans["variational"] is None


def test_history_rows_split_into_one_event_per_prefix() -> None:
    row = {"_step": 20, "_runtime": 3.0, "epoch": 2, "train/ppl": 50.0, "train/lr": 0.5,
           "train_epoch/ppl": 48.0, "val/ppl": 60.0, "probe/state_norm_table": {"_type": "table-file"},
           "probe/max_state": 0.8}
    events = history_events([row, {"_step": 21, "epoch": 2, "val/ppl": None}])
    assert events == [
        {"epoch": 2, "step": 20, "split": "train", "scope": "interval", "ppl": 50.0, "lr": 0.5},
        {"epoch": 2, "step": 20, "split": "train", "scope": "epoch", "ppl": 48.0},
        {"epoch": 2, "step": 20, "split": "val", "ppl": 60.0},
        {"epoch": 2, "step": 20, "split": "probe", "max_state": 0.8},
    ]
