"""The speed benchmark's output contract (no timing assertions: targets live in its table).

The published table (docs/results/speed_cpu/speed.json, its speed.md and the README's copy
between the speed:table markers) is re-rendered here from the committed JSON, as
``python -m benchmark.speed --render`` does, and compared character for character: no number
of it is typed by hand.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark import speed
from benchmark.engine import SCHEMES
from benchmark.machine import ISA_CAPS, flushes_denormals, set_flush_denormal

from conftest import ROOT

TINY = ["--quick", "--widths", "16", "--vocab", "50", "--bptt", "5", "--batch", "3", "--repeats", "2",
        "--warmup", "1", "--threads", "1"]
PUBLISHED = ROOT / "docs" / "results" / "speed_cpu" / "speed.json"
FIELDS = {"width", "hidden", "cell", "scheme", "path", "step_ms", "step_ms_runs", "tokens_per_s", "ratio",
          "peak_mem_mb", "target", "status"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny real run's speed.json and speed.md."""
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
    return json.loads((run_dir / "speed.json").read_text()), (run_dir / "speed.md").read_text()


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


# ---------------------------------------------------------------------------- the published table
def edit_a_number(text: str, row_start: str) -> str:
    """``text`` with the step time of its first table row starting with ``row_start`` changed by 0.1."""
    line = next(line for line in text.splitlines() if line.startswith(row_start))
    cells = line.split(" | ")
    cells[4] = f"{float(cells[4]) + 0.1:.1f}"  # step ms (median)
    return text.replace(line, " | ".join(cells), 1)


def published_copy(run_dir: Path, root: Path) -> tuple[Path, Path]:
    """The tiny run laid out as it is published: root/docs/results/speed_cpu/ and root/README.md."""
    results = root / "docs" / "results" / "speed_cpu"
    results.mkdir(parents=True)
    for name in ("speed.json", "speed.md"):
        shutil.copy(run_dir / name, results / name)
    readme = root / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    return results / "speed.json", readme


def test_the_readme_has_one_speed_block_for_the_command_to_fill():
    text = (ROOT / "README.md").read_text()
    assert text.count("<!-- speed:table -->") == 1 and text.count("<!-- /speed:table -->") == 1
    assert text.index("<!-- speed:table -->") < text.index("<!-- /speed:table -->") < text.index("### Against Keras")


def test_render_from_the_json_gives_the_markdown_the_run_wrote(run_dir, tmp_path, capsys):
    assert speed.main(["--render", str(run_dir / "speed.json"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "speed.md").read_text() == (run_dir / "speed.md").read_text()
    assert speed.main(["--render", str(run_dir / "speed.json"), "--check"]) == 0
    assert capsys.readouterr().err == ""


def test_the_readme_block_is_the_rendering_and_an_edited_number_fails_the_check(run_dir, tmp_path):
    json_path, readme = published_copy(run_dir, tmp_path)
    assert speed.main(["--render", str(json_path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    block = text.split("<!-- speed:table -->\n", 1)[1].split("<!-- /speed:table -->", 1)[0]
    md = (json_path.parent / "speed.md").read_text()
    data = json.loads(json_path.read_text())
    assert block.startswith(f"Command: `{data['command']}`\n\nMachine: {speed.machine_line(data['machine'])}\n")
    assert block.startswith(md.split("\n", 2)[2])  # speed.md without its title
    assert block.endswith("by `python -m benchmark.speed --render docs/results/speed_cpu/speed.json "
                          "--readme README.md`; `tests/test_speed.py` fails if this block differs from what "
                          "that file renders.*\n")
    line = block.splitlines()[2]  # the machine line names the vector flags and what torch's kernels dispatch to
    assert f" ({data['machine']['vector']}; torch kernels {data['machine']['kernels']}; denormals flushed to zero)" in line
    assert speed.main(["--render", str(json_path), "--readme", str(readme), "--check"]) == 0
    readme.write_text(edit_a_number(text, "| 16 (16) | gru | zoneout |"))
    proc = subprocess.run([sys.executable, "-m", "benchmark.speed", "--render", str(json_path), "--readme",
                           str(readme), "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {readme} differs from what {json_path} renders")
    readme.write_text(text)
    md_path = json_path.parent / "speed.md"
    md_path.write_text(edit_a_number(md, "| 16 (16) | lstm | native |"))
    assert speed.main(["--render", str(json_path), "--readme", str(readme), "--check"]) == 1


@pytest.mark.parametrize("published", [PUBLISHED, ROOT / "docs" / "results" / "speed_cpu_avx2" / "speed.json"],
                         ids=["speed_cpu", "speed_cpu_avx2"])
def test_the_published_speed_table_is_what_its_json_gives(published, capsys):
    if not published.is_file():
        pytest.skip(f"{published.relative_to(ROOT)} is not committed yet: measure it with python -m benchmark.speed "
                    f"--threads 1 --out {published.parent.relative_to(ROOT)} --readme README.md, then commit the JSON, "
                    "speed.md and the README")
    assert speed.render(published, readme=ROOT / "README.md", check=True) == 0, capsys.readouterr().err
    data = json.loads(published.read_text())
    assert {"cpu", "vector", "cores", "torch", "threads", "device", "kernels"} <= data["machine"].keys()
    assert data["command"].startswith("python -m benchmark.speed") and data["settings"] and data["rows"]
    checked = [row for row in data["rows"] if row["target"] is not None]
    assert checked and all(row["status"] == "PASS" for row in checked), "every speed target holds (issue 16)"
    if published.parent.name.endswith("avx2"):  # run as on a CPU without AVX-512
        assert data["machine"]["kernels"] == "AVX2" and data["machine"]["isa_caps"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_render_and_check_arguments_fail_in_one_line_before_any_work(tmp_path, capsys):
    assert speed.main(["--check"]) == 2
    assert capsys.readouterr().err.startswith("error: --check goes with --render")
    assert speed.main(["--render", str(tmp_path / "speed.json"), "--widths", "16"]) == 2
    assert capsys.readouterr().err == "error: --render measures nothing; --widths is a measuring option\n"
    assert speed.main(["--render", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot render {tmp_path / 'missing.json'}: ")
    (tmp_path / "README.md").write_text("# no block\n")
    assert speed.main([*TINY, "--out", str(tmp_path / "speed_cpu"), "--readme", str(tmp_path / "README.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "<!-- speed:table -->" in err
    assert not (tmp_path / "speed_cpu").exists()  # nothing measured
    assert speed.main([*TINY, "--out", str(tmp_path / "speed_cpu_avx2"), "--readme", str(tmp_path / "README.md")]) == 2
    assert "<!-- speed_cpu_avx2:table -->" in capsys.readouterr().err  # another directory, its own block


def test_the_machine_records_the_instruction_set_caps_in_effect(monkeypatch):
    """A run capped to another CPU kind's instruction sets says so in its machine line (issue 16)."""
    for key in ISA_CAPS:
        monkeypatch.delenv(key, raising=False)
    plain = speed.machine(torch.device("cpu"))
    assert "isa_caps" not in plain and "capped" not in speed.machine_line(plain)
    assert plain["kernels"] == torch.backends.cpu.get_cpu_capability()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = speed.machine(torch.device("cpu"))
    assert capped["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert "capped with ONEDNN_MAX_CPU_ISA=AVX2" in speed.machine_line(capped)
