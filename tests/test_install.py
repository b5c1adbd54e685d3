"""Installed without ``-e``: the wheel carries every module and config, and ``rnn-bench`` runs from anywhere.

Offline, as this machine is: the wheel is built with the environment's own setuptools
(``--no-build-isolation``) and installed with ``--target`` beside it, so the test
environment's dependencies serve it and nothing is downloaded. The sources are copied
first, so the build writes nothing into the working tree.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, cli_env

SOURCES = ("benchmark", "runners", "analysis", "hydra_plugins")


def _copy_sources(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (*SOURCES, "conf"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, dest / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the built wheel, the directory it is installed into)."""
    tmp = tmp_path_factory.mktemp("install")
    src, wheels, target = tmp / "src", tmp / "wheels", tmp / "site"
    _copy_sources(src)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    build = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels),
                            str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = wheels.glob("*.whl")
    install = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    return wheel, target


def _env(tmp: Path, target: Path) -> dict:
    """Only the installed copy on the path: the checkout is neither the working directory nor importable."""
    return {**cli_env(tmp), "PYTHONPATH": str(target)}


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_every_config(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in SOURCES:
        for path in (ROOT / package).rglob("*.py"):
            assert path.relative_to(ROOT).as_posix() in names, f"{path} is missing from the wheel: list its package " \
                                                               "in pyproject.toml's [tool.setuptools] packages"
    for path in (ROOT / "conf").rglob("*.yaml"):
        assert f"runners/conf/{path.relative_to(ROOT / 'conf').as_posix()}" in names, path
    for path in (ROOT / "analysis" / "assets").glob("*"):
        assert path.relative_to(ROOT).as_posix() in names, path
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "rnn-bench = runners.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    # pyproject.toml declares MIT: the licence text ships in the wheel's metadata (issue 25)
    licence = next(n for n in names if ".dist-info/" in n and n.rsplit("/", 1)[-1] == "LICENSE")
    assert zipfile.ZipFile(wheel).read(licence).decode() == (ROOT / "LICENSE").read_text()


@pytest.mark.slow
def test_rnn_bench_runs_a_job_from_another_directory(installed, tmp_path, cache_dir):
    _, target = installed
    env = _env(tmp_path, target)
    where = subprocess.run([sys.executable, "-c", "import runners; print(runners.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(target), where.stdout + where.stderr

    rnn_bench = str(target / "bin" / "rnn-bench")
    help_text = subprocess.run([rnn_bench, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=120)
    assert help_text.returncode == 0, help_text.stderr[-2000:]
    assert "quickstart" in help_text.stdout and "variational" in help_text.stdout  # the packaged presets

    job = tmp_path / "job"
    proc = subprocess.run([rnn_bench, "scheme=naive", "data.size=2000", "model.emb_size=16", "model.hidden_size=16",
                           "model.num_layers=1", "train.epochs=1", "logger=none", f"hydra.run.dir={job}",
                           f"paths.cache_dir={cache_dir}", "threads=1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((job / "summary.json").read_text())["status"] == "finished"
    assert (job / "run.log").exists(), "the same job directory as python run.py makes"
    assert not (tmp_path / "outputs").exists()

    bad = subprocess.run([rnn_bench, "scheme=bogus"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: scheme=bogus is unknown; choose one of: moon, ")

    completion = subprocess.run([rnn_bench, "-sc", "install=bash"], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=120)
    assert completion.returncode == 0 and "hydra_bash_completion()" in completion.stdout, completion.stderr[-2000:]

    evaluated = subprocess.run([sys.executable, "-m", "runners.evaluate", f"run={job}", "json=true"], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=120)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    summary = json.loads((job / "summary.json").read_text())
    assert json.loads(evaluated.stdout)["ppl"] == pytest.approx(summary["test_ppl"], rel=1e-6)
