"""python -m benchmark.keras_compare: the suite's side, the JSON and its table, a tiny real Keras run, no keras.

No timing assertions: the figures live in the README, measured by the command. The command
writes ``keras_compare.json``, nothing else; its table is rendered by ``analysis.timing_tables``
through ``python -m analysis.publish``, which ``tests/test_published.py`` checks against the
committed JSON.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from analysis.machine import machine_line
from analysis.timing_tables import keras_markdown
from benchmark import keras_compare as kc
from benchmark.timed_step import Settings, build, path_of

from conftest import ROOT

PUBLISHED = ROOT / "docs" / "results" / "keras_cpu" / "keras_compare.json"
TINY = Settings(widths=(("16", 16),), cells=("lstm",), schemes=("variational", "none"), vocab=50, batch=3, bptt=5,
                dropout=0.5, warmup=1, repeats=2, memory=False, threads=1)
TINY_ARGS = ["--widths", "16", "--vocab", "50", "--batch", "3", "--bptt", "5", "--repeats", "1", "--warmup", "1",
             "--threads", "1"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    return {**env, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def suite_result():
    messages: list[str] = []
    result = kc.compare(TINY, None, "python -m benchmark.keras_compare (suite only)", messages.append)
    return result, messages


def test_the_suite_side_times_both_schemes_on_their_own_paths(suite_result):
    result, messages = suite_result
    rows = result["rows"]
    paths = {scheme: path_of(build(scheme, "lstm", 16, TINY, torch.device("cpu"))) for scheme in ("variational", "none")}
    assert paths["variational"] != paths["none"]  # in the recurrence / on torch's fused kernel
    assert [(r["library"], r["dropout"], r["path"]) for r in rows] == [
        ("suite", "variational", paths["variational"]), ("suite", "none", paths["none"])]
    assert [len(r["step_ms_runs"]) for r in rows] == [4, 2]  # 2 rounds of variational, none, variational
    for r in rows:
        assert r["hidden"] == 16
        assert math.isfinite(r["step_ms"]) and r["step_ms"] > 0
        assert r["tokens_per_s"] == pytest.approx(3 * 5 / (r["step_ms"] / 1e3))
        assert r["keras_over_suite"] is None  # no Keras in this run
    variational, none = rows
    assert variational["over_no_dropout"] > 0 and none["over_no_dropout"] is None
    assert result["machine"]["threads"] == 1 and "vector" in result["machine"]
    assert any("round 2/2" in m for m in messages)


def test_the_json_is_written_and_its_table_rendered_from_it(suite_result, tmp_path):
    result, _ = suite_result
    json_path = kc.write(result, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keras_compare.json"]
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(result))
    md = keras_markdown(json.loads(json_path.read_text()))
    assert f"Command: `{result['command']}`" in md and f"Machine: {machine_line(result['machine'])}" in md
    table = [line for line in md.splitlines() if line.startswith("| 16 |")]
    v, n = result["rows"]
    assert table == [
        f"| 16 | suite | variational | {v['path']} | {v['step_ms']:.1f} | {v['tokens_per_s']:.0f} | - | "
        f"{v['over_no_dropout']:.2f} |",
        f"| 16 | suite | none | {n['path']} | {n['step_ms']:.1f} | {n['tokens_per_s']:.0f} | - | - |",
    ]


def test_rounds_close_the_cycle_from_a_moving_start_in_both_directions():
    assert [kc.round_order("abcd", r) for r in range(4)] == [
        list("abcda"), list("adcba"), list("bcdab"), list("badcb")]
    calls: list[str] = []
    steps = {name: (lambda name=name: calls.append(name) or 1.0) for name in "abcd"}
    rounds = kc.interleave(steps, warmup=1, repeats=2, progress=lambda _: None)
    assert calls == list("abcd") + list("abcda") + list("adcba")
    assert [[n for n, _ in measured] for measured in rounds] == [list("abcda"), list("adcba")]
    assert kc.cycle_of(["suite none", "keras none", "suite variational", "keras recurrent_dropout"]) == [
        "suite variational", "keras recurrent_dropout", "keras none", "suite none"]


def test_ratios_come_from_steps_run_back_to_back():
    sv, kv, kn, sn = "suite variational", "keras recurrent_dropout", "keras none", "suite none"
    rounds = [
        [(sv, 1.0), (kv, 3.0), (kn, 1.0), (sn, 0.5), (sv, 1.0)],
        [(sv, 2.0), (sn, 1.0), (kn, 2.0), (kv, 4.0), (sv, 2.0)],
        [(kv, 9.0), (kn, 3.0), (sn, 1.0), (sv, 3.0), (kv, 9.0)],
    ]
    assert kc.adjacent_ratios(rounds, kv, sv) == [3.0, 2.0, 3.0]  # either way round; kv next to kn ignored
    assert kc.adjacent_ratios(rounds, sv, kv) == [1 / 3, 1 / 2, 1 / 3]
    paths = dict.fromkeys([sv, kv, kn, sn], "p")
    rows = {(r.library, r.dropout): r for r in kc.rows_of(16, rounds, paths, TINY)}
    assert rows["keras", "recurrent_dropout"].keras_over_suite == 3.0
    assert rows["keras", "none"].keras_over_suite == 2.0  # 2, 2, 3
    assert rows["suite", "variational"].over_no_dropout == 2.0  # 2, 2, 3
    assert rows["keras", "recurrent_dropout"].over_no_dropout == 3.0  # 3, 2, 3
    assert rows["keras", "recurrent_dropout"].extra == {"keras_over_suite_runs": [3.0, 2.0, 3.0],
                                                        "over_no_dropout_runs": [3.0, 2.0, 3.0]}
    assert rows["suite", "variational"].keras_over_suite is None and rows["suite", "none"].over_no_dropout is None
    assert rows["suite", "variational"].step_ms_runs == [1000.0, 1000.0, 2000.0, 2000.0, 3000.0]
    assert rows["suite", "variational"].step_ms == 2000.0


@pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason=f"keras is not installed: {kc.INSTALL}")
def test_a_tiny_real_run_against_keras(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "benchmark.keras_compare", *TINY_ARGS, "--out", str(out)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "keras_compare.json").read_text())
    assert [(r["library"], r["dropout"]) for r in data["rows"]] == [
        ("suite", "variational"), ("suite", "none"), ("keras", "recurrent_dropout"), ("keras", "none")]
    keras_rows = [r for r in data["rows"] if r["library"] == "keras"]
    assert [r["path"] for r in keras_rows] == ["cell loop", "torch-op loop"]
    for r in keras_rows:
        assert math.isfinite(r["keras_over_suite"]) and r["keras_over_suite"] > 0
    assert data["machine"]["keras_backend"] == "torch" and data["machine"]["threads"] == 1
    assert data["command"] == "python -m benchmark.keras_compare " + " ".join([*TINY_ARGS, "--out", str(out)])
    assert f"keras {data['machine']['keras']} (torch backend)" in keras_markdown(data)
    assert "round 1/1" in proc.stderr


def test_without_keras_the_command_says_how_to_install_it(tmp_path):
    out = tmp_path / "out"
    code = ("import runpy, sys\n"
            "sys.modules['keras'] = None  # import keras now fails as if it were not installed\n"
            f"sys.argv = ['keras_compare', '--out', {str(out)!r}]\n"
            "runpy.run_module('benchmark.keras_compare', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: keras is not installed; install it with: ")
    assert '".[compare]"' in proc.stderr
    assert not out.exists()


def test_importing_the_module_does_not_import_keras():
    code = "import sys, benchmark.keras_compare; print('keras' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.strip() == "False"


def test_bad_arguments_exit_2_before_any_work(tmp_path, capsys):
    assert kc.main(["--repeats", "0", "--out", str(tmp_path / "out")]) == 2
    assert "--repeats=0 is too small" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert kc.main(["--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_the_published_measurement_names_its_machine_and_keras():
    data = json.loads(PUBLISHED.read_text())  # its table: tests/test_published.py
    assert {"cpu", "vector", "cores", "torch", "threads", "device", "keras", "keras_backend"} <= data["machine"].keys()
    assert data["command"].startswith("python -m benchmark.keras_compare --widths 200,650 --threads 1")
    assert data["settings"]["threads"] == 1 and [w for _, w in data["settings"]["widths"]] == [200, 650]
