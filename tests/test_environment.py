"""The install the README gives is the one CI runs, and constraints.txt is what the tests pass with."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The two set-up commands: the first bash block of the README's "Start here"."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Start here", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_ci_installs_exactly_as_the_readmes_test_command_says():
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = readme_commands()[1]
    installs = [part.strip() for part in test_command.split("&&") if part.strip().startswith("pip install")]
    assert installs == ["pip install torch==2.13.0", 'pip install -c constraints.txt -e ".[dev,optuna]"']
    for step in installs:
        assert re.search(rf"^{re.escape(step)}(\s|$)", ci, re.MULTILINE), f"{step!r} is not in .ci/run"
    assert test_command.rstrip().endswith("&& pytest") and re.search(r"^pytest$", ci, re.MULTILINE)


def test_the_installed_versions_are_the_constraints():
    """A fresh install with -c constraints.txt (as CI does) gives exactly these versions.

    Fails after an upgrade in a development environment: regenerate the file as its header says.
    """
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    assert "torch" not in pins  # GPU users keep their CUDA build
    for name in ("hydra-core", "omegaconf", "optuna", "sqlalchemy", "wandb", "pandas", "scipy"):
        assert canonicalize_name(name) in pins
    assert pins["omegaconf"].startswith("2.3.") and pins["sqlalchemy"].startswith("1.")
    wrong = {name: (version, metadata.version(name)) for name, version in pins.items()
             if _installed(name) and metadata.version(name) != version}
    assert not wrong, f"installed versions differ from constraints.txt: {wrong}"


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


OPTUNA_STACK = {"optuna", "sqlalchemy", "hydra-optuna-sweeper"}

WITHOUT_OPTUNA = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"optuna", "sqlalchemy", "alembic"} or name.startswith("hydra_plugins.hydra_optuna"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
"""


def test_the_optuna_sweeper_and_its_pins_are_an_extra_not_the_core_install():
    """Issue 25: SQLAlchemy < 2 in the core install would break a SQLAlchemy 2 project that imports the engine."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {canonicalize_name(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in requirements}

    assert not names(project["dependencies"]) & OPTUNA_STACK
    assert names(project["optional-dependencies"]["optuna"]) == OPTUNA_STACK


def test_without_the_extra_the_engine_trains_and_the_search_says_what_to_install(tmp_path):
    """The core modules import and train with optuna absent; the study and the search name the extra."""
    import subprocess
    import sys

    train = WITHOUT_OPTUNA + """
import torch
import benchmark, runners.cli, runners.job, analysis.report
from benchmark import LSTM
model = LSTM(8, 8, 1, scheme="variational", dropout=0.3)
out, _ = model(torch.randn(5, 2, 8))
out.sum().backward()
assert not [m for m in sys.modules if m.split(".")[0] in {"optuna", "sqlalchemy"}]
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", train], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    for module, args in (("runners.study", ["experiment=study_cpu"]),
                         ("runners.cli", ["-m", "hparams_search=dropout", "scheme=naive"])):
        script = WITHOUT_OPTUNA + f"import runpy; sys.argv = ['x', *{args!r}]; runpy.run_module({module!r}, run_name='__main__')"
        proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, (module, proc.stderr[-2000:])
        assert proc.stderr.strip().splitlines() == [
            f"error: {'python -m runners.study' if module == 'runners.study' else 'hparams_search'} needs Hydra's "
            "Optuna sweeper, which is the optuna extra: pip install -c constraints.txt -e \".[optuna]\""]
