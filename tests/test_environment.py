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
    assert installs == ["pip install torch==2.13.0", 'pip install -c constraints.txt -e ".[dev]"']
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
