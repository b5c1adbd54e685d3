"""``python -m analysis.publish``: every published table is what its committed inputs give, and is checked.

Issue 27, item 2: one publisher renders the speed table, the Keras comparison, a sweep's table
and the study from the committed inputs under ``docs/results``, writes them beside the inputs and
into the README's marked blocks, and ``--check`` fails (exit 1, one line per file) where a file or
a block differs: a number edited by hand cannot pass. The check itself is held to fail here, for
every kind, on copies of the published directories.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import publish
from analysis.publication import replace_block

from conftest import ROOT

RESULTS = ROOT / "docs" / "results"
PUBLISHED = sorted(p for p in RESULTS.iterdir() if p.is_dir())
# results directory: (a part of a table row it derives, a file it derives)
EDITS = {"speed_cpu": ("| medium (650) | gru | zoneout |", "speed.md"),
         "keras_cpu": ("| 650 | keras | recurrent_dropout |", "keras_compare.md"),
         "quickstart": ("| GRU |", "table.md"),
         "study_cpu": ("| gru | **semeniuta** |", "headline.md")}


def test_every_published_directory_and_the_readme_are_what_their_inputs_give(capsys):
    assert {p.name for p in PUBLISHED} >= set(EDITS) | {"speed_cpu_avx2", "speed_cpu_intel", "speed_cpu_intel_avx2"}
    assert publish.main([*map(str, PUBLISHED), "--readme", str(ROOT / "README.md"), "--check"]) == 0, \
        capsys.readouterr().err


def test_each_kind_is_told_by_its_inputs_and_another_directory_is_one_line(tmp_path, capsys):
    kinds = {name: next(k for k, v in publish.KINDS.items() if v == publish.kind_of(RESULTS / name)) for name in EDITS}
    assert kinds == {"speed_cpu": "speed", "keras_cpu": "keras", "quickstart": "sweep", "study_cpu": "study"}
    for argv in ([str(tmp_path)], [str(tmp_path / "nowhere"), "--check"]):
        assert publish.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), err


def edit_a_number(text: str, row: str) -> str:
    """``text`` with the first number of its first line holding ``row`` changed."""
    line = next(line for line in text.splitlines() if row in line)
    cells = line.split(" | ")
    k = next(i for i, c in enumerate(cells) if c.replace(".", "").replace("*", "").strip().isdigit())
    cells[k] = cells[k].replace(cells[k].strip("* "), "1.5" if cells[k].strip("* ") != "1.5" else "2.5")
    return text.replace(line, " | ".join(cells), 1)


@pytest.fixture
def published(tmp_path: Path) -> Path:
    """A copy of the published results and the README, laid out as in the repository."""
    shutil.copytree(RESULTS, tmp_path / "docs" / "results")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_a_number_edited_by_hand_fails_the_check_and_publishing_writes_it_back(published, name, capsys):
    results, readme = published / "docs" / "results" / name, published / "README.md"
    row, derived = EDITS[name]  # the row stands in the derived file and in the README's block
    args = [str(results), "--readme", str(readme)]
    assert publish.main([*args, "--check"]) == 0, capsys.readouterr().err
    for path in (results / derived, readme):
        original = path.read_text()
        path.write_text(edit_a_number(original, row))
        before = snapshot(published)
        assert publish.main([*args, "--check"]) == 1
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path} differs from what {results} gives"), lines
        assert snapshot(published) == before  # --check writes nothing
        assert publish.main(args) == 0  # written again from the inputs
        assert path.read_text() == original
    capsys.readouterr()


def test_the_command_runs_without_torch_or_the_benchmark(published):
    """Publishing reads files only: it runs where torch (and keras) cannot be imported."""
    blocker = ("import importlib.abc, runpy, sys\n"
               "class Block(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('torch', 'keras', 'benchmark', 'runners', 'hydra'):\n"
               "            raise ImportError(f'blocked: {name}')\n"
               "sys.meta_path.insert(0, Block())\n"
               "sys.argv = ['publish', *sys.argv[1:]]\n"
               "runpy.run_module('analysis.publish', run_name='__main__')\n")
    dirs = [str(published / "docs" / "results" / name) for name in ("speed_cpu", "keras_cpu", "quickstart")]
    proc = subprocess.run([sys.executable, "-c", blocker, *dirs, "--readme", str(published / "README.md"), "--check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_readme_without_the_block_is_refused_before_anything_is_written(published, capsys):
    results = published / "docs" / "results" / "speed_cpu"
    bare = published / "BARE.md"
    bare.write_text("# Project\n")
    (results / "speed.md").unlink()
    assert publish.main([str(results), "--readme", str(bare)]) == 2
    assert "<!-- speed_cpu:table -->" in capsys.readouterr().err
    assert not (results / "speed.md").exists()
    assert publish.main([str(results), "--readme", str(bare), "--check"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "<!-- speed_cpu:table -->" in lines[0]


def test_a_block_is_its_body_then_where_it_came_from(published):
    results, readme = published / "docs" / "results" / "speed_cpu", published / "README.md"
    publication, wanted = publish.expected(results, readme)
    body = publication.blocks["table"]
    assert body == publication.files["speed.md"].split("\n", 2)[2]  # speed.md without its title
    assert body.startswith("Command: `python -m benchmark.speed --threads 1 --repeats 11 --out docs/results/speed_cpu` "
                           "(7 min of timing)\n\nMachine: AMD EPYC (AVX-512, AVX2; torch kernels AVX512)")
    block = wanted[readme].split("<!-- speed_cpu:table -->\n", 1)[1].split("<!-- /speed_cpu:table -->", 1)[0]
    assert block == (f"{body}\n*Written from [speed.json](docs/results/speed_cpu/speed.json) by `python -m analysis.publish "
                     "docs/results/speed_cpu --readme README.md`; with `--check` it fails if this block differs from "
                     "what it gives (tests/test_published.py).*\n")
    assert replace_block("a<!-- x -->old<!-- /x -->b", "x", "new\n") == "a<!-- x -->\nnew\n<!-- /x -->b"
    for broken in ("<!-- x -->", "<!-- /x --><!-- x -->", "<!-- x --><!-- x --><!-- /x -->"):
        with pytest.raises(publish.PublishError):
            replace_block(broken, "x", "")
