"""The run store's contract (``analysis.store_format``) is what the writers write and the readers read.

Issue 27, item 1: the file names, the summary's fields and the event keys are written down in
one torch-free module; the training loop (which may not import it) is held to its event keys
here, a real job's files to its names and fields, and no other module types the names again.
"""

from __future__ import annotations

import json
import re

import torch

from analysis.store_format import (CHECKPOINT, CONFIG, CONFIG_KEYS, EVENT_KEYS, MARKS, METRICS, REQUIRED_EVENT_KEYS,
                                   SCOPES, SPLITS, SUMMARY, JobSummary, read_summary, resolve_reference)
from benchmark.data import Corpus

from conftest import ROOT, TINY
from test_training import _run


def check_event(event: dict) -> None:
    assert REQUIRED_EVENT_KEYS <= event.keys() and event.keys() <= EVENT_KEYS, sorted(event.keys() - EVENT_KEYS)
    assert event["split"] in SPLITS
    assert event.get("scope") in (None, *SCOPES) and event.get("event") in (None, *MARKS)


def test_a_job_writes_the_formats_files_summary_fields_and_event_keys(run_cli, tmp_path):
    job = tmp_path / "job"
    run_cli(*TINY, "scheme=zoneout", "model=gru", "logger=none", "train.optimizer=ntasgd", "train.nonmono=1", "train.lr=30", "train.clip=0.25", "train.loss_reduction=mean_tokens",
            "train.epochs=3", "train.mc_samples=2", "train.probe_steps=8", "train.probe_batch=2",
            f"hydra.run.dir={job}")
    assert {CONFIG, METRICS, SUMMARY, CHECKPOINT} <= {p.name for p in job.iterdir()}
    written = json.loads((job / SUMMARY).read_text())
    assert list(written) == list(JobSummary().to_json()), "summary.json holds the JobSummary's fields, in order"
    summary = read_summary(job)
    assert summary.status == "finished" and summary.scheme == "zoneout" and summary.cell == "gru"
    assert summary.machine["cpu"] and summary.plan["sites"] and summary.mc_test_ppl > 0
    events = [json.loads(line) for line in (job / METRICS).read_text().splitlines()]
    for event in events:
        check_event(event)
    seen = {(e["split"], e.get("scope"), e.get("event")) for e in events}
    assert {("train", "interval", None), ("train", "epoch", None), ("val", None, None), ("test", None, None),
            ("probe", None, None), ("train", None, "averaging")} <= seen


def test_a_divergence_event_keeps_to_the_keys():
    corpus = Corpus("toy", *(torch.randint(0, 30, (n,)) for n in (800, 200, 200)), tuple(f"w{i}" for i in range(30)))
    result, events = _run(corpus, epochs=1, poison=True, probe_steps=5, probe_batch=2)
    assert result.status == "diverged"
    for event in events:
        check_event(event)
    assert events[-1]["event"] == "diverged" and events[-1]["what"]


def test_a_summary_starts_from_its_config_and_reads_any_mapping():
    config = {"run_name": "none-gru-s3", "scheme": {"name": "none"}, "model": {"cell": "gru"}, "data": {"name": "kjv"},
              "seed": 3, "dropout": 0.5, "reference": {"source": "paper", "by": "model.cell",
                                                       "values": {"gru": {"test_ppl": 90.0}}}}
    summary = JobSummary.start(config)
    assert (summary.scheme, summary.cell, summary.data, summary.seed, summary.run_name) == \
        ("none", "gru", "kjv", 3, "none-gru-s3")
    assert summary.dropout == 0.0 and summary.status == "failed" and summary.epochs == 0  # none applies no rate
    assert summary.reference == {"source": "paper", "test_ppl": 90.0} == resolve_reference(config)
    assert set(CONFIG_KEYS) <= set(summary.to_json())
    read = JobSummary.from_json({"status": "finished", "_runtime": 12, "val/ppl": 3.0})  # a W&B summary
    assert read.status == "finished" and read.best_val_ppl is None


# A file name typed as a literal anywhere else would drift from the format (issue 27).
LITERAL = re.compile(r"""["'](config\.yaml|metrics\.jsonl|summary\.json|checkpoint\.pt)["']""")
# Not a job's file: the root of the config tree, conf/config.yaml.
NOT_THE_STORE = {"runners/hydra_app.py": 'if (candidate / "config.yaml").is_file():'}


def test_no_other_module_types_the_store_file_names():
    typed = []
    for package in ("analysis", "runners", "hydra_plugins", "benchmark"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "store_format.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if LITERAL.search(line) and NOT_THE_STORE.get(str(path.relative_to(ROOT))) != line.strip():
                    typed.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert typed == [], "\n".join(typed)
