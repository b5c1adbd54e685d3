"""The speed benchmark's output contract (no timing assertions: targets live in its table).

The command measures and writes ``speed.json``, nothing else; its table is rendered from that
JSON by ``analysis.timing_tables`` through ``python -m analysis.publish``, and the published
tables are checked against their committed JSON in ``tests/test_published.py``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from analysis.machine import machine_line
from analysis.timing_tables import speed_markdown
from benchmark import speed
from benchmark.engine import SCHEMES
from benchmark.machine import ISA_CAPS, flushes_denormals, set_flush_denormal
from benchmark.step_memory import CpuMemory

from conftest import ROOT

TINY = ["--quick", "--widths", "16", "--vocab", "50", "--bptt", "5", "--batch", "3", "--repeats", "2",
        "--warmup", "1", "--threads", "1"]
FIELDS = {"width", "hidden", "cell", "scheme", "path", "step_ms", "step_ms_runs", "tokens_per_s", "ratio",
          "peak_mem_mb", "target", "status"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny real run's speed.json."""
    before, flushed = torch.get_num_threads(), flushes_denormals()
    out = tmp_path_factory.mktemp("speed")
    try:
        assert speed.main([*TINY, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
        set_flush_denormal(flushed)
    return out


@pytest.fixture(scope="module")
def result(run_dir):
    assert [p.name for p in run_dir.iterdir()] == ["speed.json"]  # the command writes its JSON, nothing else
    data = json.loads((run_dir / "speed.json").read_text())
    return data, speed_markdown(data)


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
    assert data["machine"]["flush_denormal"] is True  # flushed by default, as in training jobs (issue 24)
    assert data["command"].startswith("python -m benchmark.speed --quick")


def test_markdown_table_has_the_command_the_machine_and_one_line_per_row(result):
    data, md = result
    assert data["command"] in md
    assert f"Machine: {machine_line(data['machine'])}" in md
    line = md.splitlines()[4]  # the machine line names the vector flags and what torch's kernels dispatch to
    assert f" ({data['machine']['vector']}; torch kernels {data['machine']['kernels']}; denormals flushed to zero)" in line
    table = [line for line in md.splitlines() if line.startswith("| 16 (16) |")]
    assert len(table) == len(data["rows"])
    assert "| x native |" in md and "| status |" in md


def test_the_table_says_which_way_ran_the_segment_products(result):
    """Issue 24: the products are chosen per CPU at run time, and the table says how they were run."""
    data, md = result
    assert data["gemm_choices"] == {}  # width 16: every product under the floor, none timed
    assert "Segment products: none large enough to be timed" in md
    timed = {**data, "gemm_choices": {
        "linear 700x2600x650x0x1 float32 threads=1": {"choice": "blas", "ms": {"onednn": 16.0, "blas": 14.7}},
        "weight_grad 2600x650x700 float32 threads=1": {"choice": "blas", "ms": {"onednn": 19.1, "blas": 16.7}},
        "packed_linear 20x2600x650x0 float32 threads=1": {"choice": "onednn", "ms": {"onednn": 0.6, "blas": 0.8}}}}
    assert ("Segment products: each shape timed both ways on first use on this CPU; the BLAS for 2, oneDNN for 1 "
            "of the 3 shapes") in speed_markdown(timed)
    older = {k: v for k, v in data.items() if k != "gemm_choices"}  # measured before the choice existed
    assert "oneDNN for every product and a loop over gates" in speed_markdown(older)


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
    mem = CpuMemory(s)
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


@pytest.mark.parametrize("name", ["speed_cpu", "speed_cpu_avx2", "speed_cpu_intel", "speed_cpu_intel_avx2"])
def test_the_published_measurements_name_their_machine_and_meet_every_target(name):
    """Every CPU kind measured holds every target (issues 16 and 24)."""
    published = ROOT / "docs" / "results" / name / "speed.json"
    data = json.loads(published.read_text())
    assert {"cpu", "vector", "cores", "torch", "threads", "device", "kernels"} <= data["machine"].keys()
    assert data["command"].startswith("python -m benchmark.speed") and data["settings"] and data["rows"]
    checked = [row for row in data["rows"] if row["target"] is not None]
    assert checked and all(row["status"] == "PASS" for row in checked), "every speed target holds (issue 16)"
    if published.parent.name.endswith("avx2"):  # run as on a CPU without AVX-512
        assert data["machine"]["kernels"] == "AVX2" and data["machine"]["isa_caps"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"


@pytest.mark.parametrize("name", ["speed_cpu_intel", "speed_cpu_intel_avx2"])
def test_the_intel_tables_were_measured_with_the_products_chosen_on_their_cpu(name):
    """Issue 24: one table per CPU kind; the Intel Xeon's were measured with each product timed on it,
    the untied gates' per-gate products among them."""
    data = json.loads((ROOT / "docs" / "results" / name / "speed.json").read_text())
    assert data["machine"]["cpu"].startswith("Intel") and "AVX-512" in data["machine"]["vector"]
    assert data["machine"]["flush_denormal"] is True
    choices = data["gemm_choices"]
    assert choices and all(set(c["ms"]) == {"onednn", "blas"} or set(c["ms"]) == {"looped", "batched"}
                           for c in choices.values())
    assert all(c["choice"] in c["ms"] for c in choices.values())
    assert {"recurrent_gates", "gate_input_grads", "gate_weight_grads"} <= {key.split()[0] for key in choices}
    assert "medium" in {r["width"] for r in data["rows"]} and data["settings"]["repeats"] >= 9


def test_a_bad_out_is_one_line_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert speed.main([*TINY, "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --out") and "is a file" in err


def test_the_machine_records_the_instruction_set_caps_in_effect(monkeypatch):
    """A run capped to another CPU kind's instruction sets says so in its machine line (issue 16)."""
    for key in ISA_CAPS:
        monkeypatch.delenv(key, raising=False)
    plain = speed.machine(torch.device("cpu"))
    assert "isa_caps" not in plain and "capped" not in machine_line(plain)
    assert plain["kernels"] == torch.backends.cpu.get_cpu_capability()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = speed.machine(torch.device("cpu"))
    assert capped["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert "capped with ONEDNN_MAX_CPU_ISA=AVX2" in machine_line(capped)
