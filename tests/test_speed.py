"""The speed benchmark's output contract (no timing assertions: targets live in its table)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from benchmark import speed
from benchmark.engine import SCHEMES

from conftest import ROOT

TINY = ["--quick", "--widths", "16", "--vocab", "50", "--bptt", "5", "--batch", "3", "--repeats", "2",
        "--warmup", "1", "--threads", "1"]
FIELDS = {"width", "hidden", "cell", "scheme", "path", "step_ms", "step_ms_runs", "tokens_per_s", "ratio",
          "peak_mem_mb", "target", "status"}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    before = torch.get_num_threads()
    out = tmp_path_factory.mktemp("speed")
    try:
        assert speed.main([*TINY, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    return json.loads((out / "speed.json").read_text()), (out / "speed.md").read_text()


def test_every_scheme_and_cell_has_a_row_with_the_expected_fields(result):
    data, _ = result
    rows = data["rows"]
    expected = {(cell, s) for cell in ("lstm", "gru") for s in ("native", *SCHEMES)}
    assert {(r["cell"], r["scheme"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for r in rows:
        assert FIELDS <= r.keys()
        assert len(r["step_ms_runs"]) == 2
        for key in ("step_ms", "tokens_per_s", "ratio"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (r["scheme"], key)
        assert r["peak_mem_mb"] is None  # --quick skips memory unless --memory
        assert r["target"] is None and r["status"] == "-"  # width 16 is not the target width
    paths = {r["scheme"]: r["path"] for r in rows if r["cell"] == "lstm"}
    assert paths["native"] == "torch.nn" and paths["naive"] == "native" and paths["weightdrop"] == "native"
    assert paths["variational"] == "segment" and paths["zoneout"] == "segment"
    assert {"cpu", "cores", "torch", "threads"} <= data["machine"].keys()
    assert data["machine"]["threads"] == 1
    assert data["command"].startswith("python -m benchmark.speed --quick")


def test_markdown_table_has_the_command_the_machine_and_one_line_per_row(result):
    data, md = result
    assert data["command"] in md
    assert f"Machine: {speed.machine_line(data['machine'])}" in md
    table = [line for line in md.splitlines() if line.startswith("| 16 (16) |")]
    assert len(table) == len(data["rows"])
    assert "| x native |" in md and "| status |" in md


def test_targets_apply_at_medium_width_only():
    assert speed.target_for("variational", "segment", "medium", "cpu") == speed.LOOP_TARGET
    assert speed.target_for("weightdrop", "native", "medium", "cpu") == speed.KERNEL_TARGET
    assert speed.target_for("zoneout", "segment", "medium", "cuda") == speed.CUDA_LOOP_TARGET
    assert speed.target_for("variational", "segment", "small", "cpu") is None
    assert speed.target_for("native", "native", "medium", "cpu") is None


def test_memory_probe_reports_a_growth_on_linux(tmp_path):
    """The forked-child peak-RSS probe, on a tiny model (Linux only)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("peak RSS via /proc is Linux-only")
    s = speed.Settings(widths=(), cells=(), schemes=(), vocab=50, batch=3, bptt=5, threads=1)
    mem = speed.CpuMemory(s)
    try:
        value = mem.measure("zoneout", "gru", 16)
    finally:
        mem.close()
    assert value is not None and math.isfinite(value) and value >= 0


def test_cuda_without_cuda_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "-m", "benchmark.speed", "--device", "cuda"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cuda" in lines[0].lower()
    assert proc.stdout == ""


def test_benchmark_imports_no_hydra_runners_or_analysis():
    code = ("import sys, benchmark.speed; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('hydra', 'omegaconf', 'runners', 'analysis')]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_scheme_is_timed_next_to_a_native_step():
    """Rounds are N A N B N ...: each scheme's ratio uses the native steps on both sides of it."""
    assert speed.round_sequence([]) == ["native"]
    assert speed.round_sequence(["a"]) == ["native", "a", "native"]
    seq = speed.round_sequence(list("abcdefgh"))
    assert len(seq) == 17
    for k, name in enumerate(seq):
        if name != "native":
            assert seq[k - 1] == seq[k + 1] == "native"
    measured = [("native", 1.0), ("a", 5.0), ("native", 3.0)]
    assert speed.adjacent_native(measured, 1) == 2.0  # both neighbours: their mean
    measured = [("native", 1.0), ("a", 5.0), ("b", 7.0), ("native", 3.0)]
    assert (speed.adjacent_native(measured, 1), speed.adjacent_native(measured, 2)) == (1.0, 3.0)
