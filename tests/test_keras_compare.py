"""python -m benchmark.keras_compare: the suite's side, the table and JSON, a tiny real Keras run, no keras.

No timing assertions: the figures live in the README, measured by the command. The published
table (docs/results/keras_cpu/keras_compare.json, its keras_compare.md and the README's copy
between the keras_compare:table markers) is re-rendered here from the committed JSON, as
``python -m benchmark.keras_compare --render`` does, and compared character for character: no
number of it is typed by hand.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from benchmark import keras_compare as kc
from benchmark.speed import Settings, build, path_of

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


def test_table_and_json_are_written_from_the_result(suite_result, tmp_path):
    result, _ = suite_result
    json_path, md_path = kc.write(result, tmp_path / "out")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(result))
    md = md_path.read_text()
    assert f"Command: `{result['command']}`" in md and f"Machine: {result['machine_line']}" in md
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
    md = (out / "keras_compare.md").read_text()
    assert md in proc.stdout and f"keras {data['machine']['keras']} (torch backend)" in md
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


# ---------------------------------------------------------------------------- the published table
def _block(text: str) -> str:
    return text.split("<!-- keras_compare:table -->\n", 1)[1].split("<!-- /keras_compare:table -->", 1)[0]


def edit_a_number(text: str, row_start: str) -> str:
    """``text`` with the step time of its first table row starting with ``row_start`` changed by 0.1."""
    line = next(line for line in text.splitlines() if line.startswith(row_start))
    cells = line.split(" | ")
    cells[4] = f"{float(cells[4]) + 0.1:.1f}"  # step ms (median)
    return text.replace(line, " | ".join(cells), 1)


def test_the_published_table_and_the_readmes_copy_are_what_the_json_gives(capsys):
    assert kc.render(PUBLISHED, readme=ROOT / "README.md", check=True) == 0, capsys.readouterr().err
    data = json.loads(PUBLISHED.read_text())
    md = (PUBLISHED.parent / "keras_compare.md").read_text()
    assert md == kc.markdown(data)
    assert {"cpu", "vector", "cores", "torch", "threads", "device", "keras", "keras_backend"} <= data["machine"].keys()
    assert data["command"].startswith("python -m benchmark.keras_compare --widths 200,650 --threads 1")
    assert data["settings"]["threads"] == 1 and [w for _, w in data["settings"]["widths"]] == [200, 650]
    block = _block((ROOT / "README.md").read_text())
    assert block.startswith(f"Command: `{data['command']}`\n\nMachine: {data['machine_line']}\n")
    assert md.split("\n", 2)[2] in block  # keras_compare.md without its title
    assert "`python -m benchmark.keras_compare --render docs/results/keras_cpu/keras_compare.json --readme README.md`" \
        in block


def test_an_edited_number_in_the_readme_or_the_markdown_fails_the_check_without_keras(tmp_path):
    results = tmp_path / "docs" / "results" / "keras_cpu"
    shutil.copytree(PUBLISHED.parent, results)
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    readme.write_text(text)
    json_path = results / "keras_compare.json"

    def check() -> subprocess.CompletedProcess:
        code = ("import runpy, sys\n"
                "sys.modules['keras'] = None  # rendering needs no keras\n"
                f"sys.argv = ['keras_compare', '--render', {str(json_path)!r}, '--readme', {str(readme)!r}, "
                "'--check']\n"
                "runpy.run_module('benchmark.keras_compare', run_name='__main__')\n")
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=120)

    assert kc.main(["--render", str(json_path), "--readme", str(readme), "--check"]) == 0  # the copy is published
    readme.write_text(edit_a_number(text, "| 650 | keras | recurrent_dropout |"))
    proc = check()
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {readme} differs from what {json_path} renders")
    assert kc.main(["--render", str(json_path), "--readme", str(readme)]) == 0  # rewritten from the JSON
    assert readme.read_text() == text
    md = results / "keras_compare.md"
    md.write_text(edit_a_number(md.read_text(), "| 200 | suite | none |"))
    proc = check()
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: {md} differs") and proc.stderr.count("\n") == 1


def test_render_writes_the_markdown_next_to_the_json_or_in_out(tmp_path, capsys):
    shutil.copy(PUBLISHED, tmp_path / "keras_compare.json")
    assert kc.main(["--render", str(tmp_path / "keras_compare.json")]) == 0
    assert (tmp_path / "keras_compare.md").read_text() == (PUBLISHED.parent / "keras_compare.md").read_text()
    assert kc.main(["--render", str(PUBLISHED), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "keras_compare.md").read_text() == (tmp_path / "keras_compare.md").read_text()
    capsys.readouterr()
    assert kc.main(["--check"]) == 2
    assert capsys.readouterr().err.startswith("error: --check goes with --render")
    assert kc.main(["--render", str(PUBLISHED), "--repeats", "3"]) == 2
    assert capsys.readouterr().err == "error: --render measures nothing; --repeats is a measuring option\n"
    (tmp_path / "README.md").write_text("# no block\n")
    no_block = ["--readme", str(tmp_path / "README.md")]
    assert kc.main(["--render", str(PUBLISHED), "--out", str(tmp_path / "o2"), *no_block]) == 2
    assert "<!-- keras_compare:table -->" in capsys.readouterr().err
