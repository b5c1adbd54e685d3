"""Shared fixtures: one corpus cache per test session, and a way to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Small enough for a CPU test, big enough to exercise every code path. ``data.size`` cuts only the
# training split, so the test split keeps its ~21k tokens: scored one sequence at a time (the
# recipes' test batch of 1) a segment scheme spends seconds in its per-step loop, and MC dropout
# K times that; a test batch of 10 scores the same tokens through the same code.
TINY = ["data.size=2000", "model.emb_size=16", "model.hidden_size=16", "model.num_layers=2", "train.epochs=2",
        "train.bptt=10", "train.log_interval=5", "train.test_batch_size=10"]


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny tensors; on a shared 2-core machine extra intra-op threads only
    contend (measured: tiny engine forwards up to 100x slower with 2 threads)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _gemm_choices_kept_apart(tmp_path_factory):
    """The GEMM choices measured in tests (benchmark.engine.gemm_choice) go to a file of the
    session's, inherited by every command a test runs, never to the user's cache."""
    from benchmark.engine import gemm_choice

    before = os.environ.get(gemm_choice.CACHE_ENV)
    os.environ[gemm_choice.CACHE_ENV] = str(tmp_path_factory.mktemp("gemm") / "gemm-choices.json")
    yield
    if before is None:
        os.environ.pop(gemm_choice.CACHE_ENV)
    else:
        os.environ[gemm_choice.CACHE_ENV] = before


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus-cache")


def cli_env(tmp: Path) -> dict:
    """No network, no prompt, no account: W&B offline, its settings kept in ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp), WANDB_CONFIG_DIR=str(tmp / "wandb-config"),
               WANDB_CACHE_DIR=str(tmp / "wandb-cache"), WANDB_DATA_DIR=str(tmp / "wandb-data"),
               HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1")
    return env


@pytest.fixture
def run_cli(tmp_path, cache_dir):
    """Run ``python run.py ...`` in a subprocess, as a user would, with the corpus cache shared."""

    def run(*args: str, check: bool = True, timeout: float = 300, env: dict | None = None
            ) -> subprocess.CompletedProcess:
        pinned = [] if any(a.startswith("threads=") for a in args) else ["threads=1"]
        cmd = [sys.executable, "run.py", *args, f"paths.cache_dir={cache_dir}", *pinned]
        proc = subprocess.run(cmd, cwd=ROOT, env={**cli_env(tmp_path), **(env or {})}, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    return run
