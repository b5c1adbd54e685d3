"""Denormal floats flushed to zero on the CPU (issue 24): on by default in jobs and the speed
benchmark, switchable, recorded, and without effect on what the explosion study measures.

The GRU under TensorFlow's state dropout grows like (1/keep)^t by design, and its saturated gates
leave denormals behind, which some CPUs compute at a fraction of normal speed. Flushing them
must not change the divergence the suite reports nor the growth rate its probes measure.
"""

from __future__ import annotations

import json

import pytest
import torch

from analysis.machine import machine_line
from benchmark.machine import flushes_denormals, machine, set_flush_denormal
from conftest import TINY


@pytest.fixture
def restore_flush():
    before = flushes_denormals()
    yield
    set_flush_denormal(before)


def test_the_switch_is_read_back_from_the_arithmetic(restore_flush):
    assert set_flush_denormal(True) is True and flushes_denormals()
    assert (torch.tensor([1e-39]) * 1.0).item() == 0.0
    assert set_flush_denormal(False) is False and not flushes_denormals()
    assert (torch.tensor([1e-39]) * 1.0).item() > 0.0
    assert machine(torch.device("cpu"))["flush_denormal"] is False


def test_the_machine_line_says_so_and_older_records_read_as_before(restore_flush):
    set_flush_denormal(True)
    record = machine(torch.device("cpu"))
    assert record["flush_denormal"] is True and "denormals flushed to zero" in machine_line(record)
    assert "denormals kept" in machine_line({**record, "flush_denormal": False})
    old = {k: v for k, v in record.items() if k != "flush_denormal"}
    assert "denormal" not in machine_line(old)


EXPLOSION = ["scheme=state_dropout", "model=gru", "dropout=0.5", *TINY, "model.num_layers=1", "train.epochs=1",
             "train.bptt=40", "train.probe_steps=30", "logger=none"]


def _growth(job) -> list[float]:
    events = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    return [e["growth_per_step"] for e in events if e.get("growth_per_step") is not None]


def test_a_flushed_explosion_reports_the_same_divergence_and_growth_rate(run_cli, tmp_path):
    for flush in ("true", "false"):
        run_cli(*EXPLOSION, f"flush_denormal={flush}", f"hydra.run.dir={tmp_path / flush}")
    flushed, kept = (json.loads((tmp_path / f / "summary.json").read_text()) for f in ("true", "false"))
    assert flushed["machine"]["flush_denormal"] is True and kept["machine"]["flush_denormal"] is False
    assert flushed["status"] == kept["status"] == "diverged"
    assert flushed["diverged_step"] == kept["diverged_step"]
    growth = _growth(tmp_path / "true")
    assert growth and growth == pytest.approx(_growth(tmp_path / "false"), rel=1e-6)
    assert growth[0] == pytest.approx(2.0, rel=0.05)  # 1/keep per step


def test_the_default_job_flushes_and_a_bad_value_is_one_line(run_cli, tmp_path):
    run_cli(*TINY, "train.epochs=1", "logger=none", f"hydra.run.dir={tmp_path / 'job'}")
    assert json.loads((tmp_path / "job" / "summary.json").read_text())["machine"]["flush_denormal"] is True
    proc = run_cli(*TINY, "flush_denormal=maybe", "logger=none", f"hydra.run.dir={tmp_path / 'bad'}", check=False)
    assert proc.returncode == 2 and "flush_denormal=maybe must be true or false" in proc.stderr
    assert not (tmp_path / "bad" / "summary.json").exists()
