"""A sweep's table (``analysis.sweep_table``), exported from its runs and published and checked by
``python -m analysis.publish RESULTS --from SWEEP``.

The sweep here is real files written by the job's own writer (``runners.run_store.RunStore``)
with the config and events the job logs (``test_collect``): four schemes x LSTM/GRU, with a
failed run, a diverged run and a ``none`` run whose validation perplexity rises after its best
epoch. Running real jobs would take minutes; the reader sees the same files either way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.publish import check, main
from analysis.sweep_table import RUN_COLUMNS
from analysis.store_format import JobSummary
from runners.run_store import RunStore
from test_collect import config_for, events_for

OVERRIDES = ["experiment=quickstart", "logger=none"]

# (scheme, cell) -> (status, validation perplexity per epoch); Hydra numbers jobs in launch order.
JOBS = {
    ("naive", "lstm"): ("finished", (230.0, 200.0, 190.0, 195.0)),
    ("naive", "gru"): ("finished", (260.0, 210.0, 200.0, 199.96)),
    ("none", "lstm"): ("finished", (250.0, 220.0, 240.0, 260.0)),
    ("none", "gru"): ("finished", (300.0, 280.0, 270.0, 265.0)),
    ("state_dropout", "lstm"): ("failed", (240.0,)),
    ("state_dropout", "gru"): ("diverged", ()),
    ("variational", "lstm"): ("finished", (225.0, 195.0, 185.0, 180.0)),
    ("variational", "gru"): ("finished", (250.0, 205.0, 190.0, 185.04)),
}
DIVERGED_STEP = 4
# What ``runners.job`` records (``benchmark.machine.machine``); load and threads describe one job.
MACHINE = {"cpu": "AMD EPYC", "vector": "AVX-512, AVX2", "cores": 2, "torch": "2.13.0+cpu", "threads": 1,
           "python": "3.11.7", "platform": "Linux", "device": "cpu", "kernels": "AVX512", "load_avg_at_start": 0.4}

TABLE = """\
| | none | naive | variational | state_dropout |
|---|---|---|---|---|
| LSTM | 220.0 | 190.0 | **180.0** | failed |
| GRU | 265.0 | 200.0 | **185.0** | diverged |
"""
SENTENCES = (
    "Best scheme against `none`: on the LSTM `variational`, 18 % lower (180.0 against 220.0); "
    "on the GRU `variational`, 30 % lower (185.0 against 265.0). "
    "Without dropout the validation perplexity rises after its best epoch: "
    "on the LSTM from 220.0 at epoch 2 to 260.0 at epoch 4. "
    "`state_dropout` on the GRU diverged at step 4.\n")


def write_job(job: Path, scheme: str, cell: str, status: str, val: tuple[float, ...],
              machine: dict | None = MACHINE) -> None:
    """One job directory as ``runners.job`` leaves it, written by the run store itself."""
    config = config_for(scheme, cell, 0)
    store = RunStore(job)
    store.open(config)
    events = events_for(list(val), 140.0 if status == "finished" else None)
    if status == "diverged":
        events.append({"epoch": 1, "step": DIVERGED_STEP, "split": "train", "event": "diverged", "what": "loss",
                       "loss": math.nan, "ppl": math.nan})
    for event in events:
        store.log(event)
    finished = status == "finished"
    store.close(JobSummary.start(config, status=status, best_val_ppl=min(val) if val and status != "failed" else None,
                                 test_ppl=140.0 if finished else None, epochs=len(val) if status != "failed" else 0,
                                 wall_s=2.5, train_tokens_per_s=900.0,
                                 diverged_step=DIVERGED_STEP if status == "diverged" else None,
                                 error="RuntimeError: boom" if status == "failed" else None, dir=str(job),
                                 machine=machine))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "outputs" / "sweeps" / "2026-01-02_03-04-05"
    for num, ((scheme, cell), (status, val)) in enumerate(JOBS.items()):
        write_job(root / f"{num}-{scheme}-{cell}-s0", scheme, cell, status, val)
    multirun = {"hydra": {"overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": OVERRIDES}}}
    (root / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    return root


@pytest.fixture
def readme(tmp_path: Path) -> Path:
    path = tmp_path / "README.md"
    path.write_text("# Project\n\nIts results:\n\n<!-- quickstart:table -->\nhand-typed\n<!-- /quickstart:table -->\n\n"
                    "One seed of a toy run.\n")
    return path


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_writes_the_runs_the_record_and_the_table(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "docs" / "results" / "quickstart"
    assert main([str(out), "--from", str(sweep)]) == 0

    runs = pd.read_csv(out / "runs.csv")
    assert list(runs.columns) == RUN_COLUMNS
    assert list(zip(runs.cell, runs.scheme)) == [(c, s) for c in ("lstm", "gru")
                                                 for s in ("none", "naive", "variational", "state_dropout")]
    none_lstm = runs.iloc[0]
    assert (none_lstm.status, none_lstm.best_val_ppl, none_lstm.best_epoch) == ("finished", 220.0, 2)
    assert (none_lstm.last_val_ppl, none_lstm.last_epoch, none_lstm.epochs) == (260.0, 4, 4)
    diverged = runs.iloc[-1]
    assert diverged.status == "diverged" and diverged.diverged_step == DIVERGED_STEP
    assert math.isnan(diverged.best_val_ppl) and math.isnan(diverged.best_epoch)
    assert runs[runs.status == "failed"].scheme.tolist() == ["state_dropout"]

    record = json.loads((out / "sweep.json").read_text())
    assert record["name"] == "2026-01-02_03-04-05" and record["overrides"] == OVERRIDES
    assert record["command"] == f"python -m analysis.publish {out} --from {sweep}"
    assert record["machine"] == {k: v for k, v in MACHINE.items() if k not in ("threads", "load_avg_at_start")}

    table = (out / "table.md").read_text()
    title, provenance, rest = table.split("\n\n", 2)
    assert title == "# Sweep `2026-01-02_03-04-05`: best validation perplexity per scheme and cell"
    assert "`python run.py -m experiment=quickstart logger=none`, 8 runs, seed 0" in provenance
    assert record["machine"]["cpu"] in provenance and f"torch {record['machine']['torch']}" in provenance
    assert rest == f"{TABLE}\n{SENTENCES}"


def test_readme_block_and_check_catch_a_number_edited_by_hand(sweep: Path, tmp_path: Path, readme: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "docs" / "results" / "quickstart"
    assert main([str(out), "--from", str(sweep), "--readme", str(readme)]) == 0
    text = readme.read_text()
    head, block = text.split("<!-- quickstart:table -->\n")
    block, tail = block.split("<!-- /quickstart:table -->")
    assert head == "# Project\n\nIts results:\n\n" and tail == "\n\nOne seed of a toy run.\n"
    assert block.startswith("Best validation perplexity (lower is better) of sweep `2026-01-02_03-04-05`")
    assert f"\n\n{TABLE}\n{SENTENCES}\n*Written from [runs.csv](docs/results/quickstart/runs.csv) and " in block
    assert "by `python -m analysis.publish docs/results/quickstart --readme README.md`" in block
    assert block.endswith("it fails if this block differs from what they give (tests/test_published.py).*\n")

    capsys.readouterr()
    assert main([str(out), "--readme", str(readme), "--check"]) == 0
    assert capsys.readouterr().err == ""

    table = out / "table.md"
    for path, edited in ((table, table.read_text().replace("**180.0**", "**179.0**")),
                         (readme, text.replace("| GRU | 265.0 |", "| GRU | 255.0 |"))):
        original = path.read_text()
        path.write_text(edited)
        before = snapshot(tmp_path)
        assert main([str(out), "--readme", str(readme), "--check"]) == 1
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path} differs"), lines
        assert snapshot(tmp_path) == before  # --check writes nothing
        path.write_text(original)
    assert check(out, readme) == []


def test_a_readme_without_the_block(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results" / "quickstart"
    bare = tmp_path / "README.md"
    bare.write_text("# Project\n")
    assert main([str(out), "--from", str(sweep), "--readme", str(bare)]) == 2
    assert not out.exists()  # refused before writing anything
    assert "quickstart:table" in capsys.readouterr().err
    assert main([str(out), "--from", str(sweep)]) == 0
    capsys.readouterr()
    assert main([str(out), "--readme", str(bare), "--check"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "<!-- quickstart:table -->" in lines[0]


def test_missing_or_empty_directories_are_one_line_errors(tmp_path: Path, sweep: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    empty, no_jobs, two_seeds = tmp_path / "empty", tmp_path / "no_jobs", tmp_path / "two_seeds"
    unknown, two_machines = tmp_path / "unknown", tmp_path / "two_machines"
    write_job(unknown / "0-none-lstm-s0", "none", "lstm", "finished", (200.0,), machine=None)
    write_job(two_machines / "0-none-lstm-s0", "none", "lstm", "finished", (200.0,))
    write_job(two_machines / "1-none-gru-s0", "none", "gru", "finished", (200.0,), machine={**MACHINE, "cpu": "Intel"})
    empty.mkdir()
    no_jobs.mkdir()
    (no_jobs / "multirun.yaml").write_text((sweep / "multirun.yaml").read_text())
    for seed in (0, 1):
        write_job(two_seeds / f"{seed}-none-lstm-s{seed}", "none", "lstm", "finished", (200.0,))
    for root in (two_seeds, unknown, two_machines):
        (root / "multirun.yaml").write_text((sweep / "multirun.yaml").read_text())
    cases = [[str(tmp_path / "nowhere"), "--check"], [str(empty), "--check"],
             [str(tmp_path / "o1"), "--from", str(tmp_path / "nowhere")], [str(tmp_path / "o2"), "--from", str(empty)],
             [str(tmp_path / "o3"), "--from", str(no_jobs)], [str(tmp_path / "o4"), "--from", str(two_seeds)],
             [str(tmp_path / "o5"), "--from", str(unknown)], [str(tmp_path / "o6"), "--from", str(two_machines)]]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, (argv, lines)
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3", "o4", "o5", "o6"))
