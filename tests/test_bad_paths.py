"""Where a run's files go, and what happens when they cannot: one line each, nothing left half-made (issue 15)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, TINY, cli_env


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("name", ["../../escaped", "a/b", ".."])
def test_a_run_name_that_would_leave_its_folder_is_refused(run_cli, tmp_path, name):
    err = one_line_error(run_cli("scheme=naive", *TINY, "logger=none", f"paths.output_dir={tmp_path / 'out'}",
                                 f"run_name={name}", check=False))
    assert "must be a plain name" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped").exists()


def test_an_output_directory_that_cannot_exist_is_one_line(run_cli, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    err = one_line_error(run_cli("scheme=naive", *TINY, "logger=none", f"paths.output_dir={a_file / 'out'}",
                                 check=False))
    assert f"paths.output_dir={a_file / 'out'} cannot hold the runs" in err
    err = one_line_error(run_cli("-m", "scheme=naive", *TINY, "logger=none", f"hydra.sweep.dir={a_file}", check=False))
    assert "is a file" in err


def test_a_corpus_too_small_for_the_batch_is_one_line_before_any_work(run_cli, tmp_path):
    job = tmp_path / "job"
    err = one_line_error(run_cli("scheme=naive", *TINY, "data.size=100", "train.batch_size=200", "logger=none",
                                 f"hydra.run.dir={job}", check=False))
    assert "the training split has 100 tokens, too few for train.batch_size=200" in err
    assert not (job / "metrics.jsonl").exists() and not (job / "summary.json").exists()


def test_a_corpus_of_empty_lines_is_refused_and_one_of_a_single_word_is_scored_with_a_warning(run_cli, tmp_path):
    """Issue 26: empty lines trained on <eos> alone and ended "diverged"; a one-word corpus "finished"
    with every evaluation token <unk>. The first is refused, the second warned about in the log and summary."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text("\n" * 3000)
    (data / "valid.txt").write_text("the cat sat\n" * 100)
    (data / "test.txt").write_text("on the mat\n" * 100)
    common = ("data=text", f"data.path={data}", "model.emb_size=16", "model.hidden_size=16", "model.num_layers=1",
              "train.epochs=1", "train.bptt=10", "train.test_batch_size=10", "logger=none")
    err = one_line_error(run_cli(*common, f"hydra.run.dir={tmp_path / 'empty'}", check=False))
    assert "the train split" in err and "holds no words, only empty lines" in err
    (data / "train.txt").write_text("word\n" * 1500)
    job = tmp_path / "one-word"
    proc = run_cli(*common, f"hydra.run.dir={job}")
    summary = json.loads((job / "summary.json").read_text())
    assert summary["unk_share"]["valid"] == 0.75  # 'the cat sat' <eos>: three of four tokens unknown
    assert len(summary["warnings"]) == 2 and summary["warnings"][0].startswith("75% of the valid tokens are <unk>")
    assert "75% of the valid tokens are <unk>" in proc.stdout + proc.stderr


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: a real full disk (needs root and mount rights; skipped without them)."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_that_says_what_to_do(run_cli, tiny_disk):
    proc = run_cli("scheme=naive", "data.size=2000", "model.emb_size=16", "model.hidden_size=16", "model.num_layers=1",
                   "train.epochs=3", "logger=none", f"hydra.run.dir={Path(tiny_disk) / 'job'}", check=False)
    err = one_line_error(proc)
    assert "No space left on device" in err and "run the same command again" in err


def test_a_full_disk_while_caching_the_corpus_is_the_same_one_line(tmp_path, tiny_disk):
    """Issue 26: the corpus cache on a full disk was a raw torch traceback ("unexpected pos ...").
    The output root on the full disk, its default cache_dir with it (not the tests' shared cache)."""
    proc = subprocess.run([sys.executable, "run.py", "scheme=naive", "data.size=2000", "model.emb_size=16",
                           "model.hidden_size=16", "train.epochs=1", "logger=none", "threads=1",
                           f"paths.output_dir={tiny_disk}"], cwd=ROOT, env=cli_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    err = one_line_error(proc)
    assert "No space left on device while writing " + str(Path(tiny_disk) / "cache" / "kjv-") in err
    assert "run the same command again" in err
    assert not [p for p in (Path(tiny_disk) / "cache").glob("*") if p.suffix == ".tmp"]  # no half-written cache left


def test_a_model_too_big_for_memory_is_one_line(run_cli, tmp_path):
    """Found hunting beyond issue 26's list: torch's allocator traceback for a model that cannot fit."""
    err = one_line_error(run_cli("model.hidden_size=2000000000", "data.size=2000", "logger=none",
                                 f"hydra.run.dir={tmp_path / 'job'}", check=False))
    assert err.startswith("error: the model does not fit in memory (one of its weights alone needs ")
    assert "model.hidden_size=2000000000" in err and err.endswith("use a smaller model")
