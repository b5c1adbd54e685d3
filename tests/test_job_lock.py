"""One job directory, one job: a second process aimed at it gets a one-line error (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT, TINY, cli_env
from runners.run_store import job_lock


def test_a_second_job_into_a_busy_directory_is_refused_and_writes_nothing(run_cli, tmp_path):
    job = tmp_path / "job"
    with job_lock(job):  # this process holds the directory, as a running job would
        proc = run_cli("scheme=naive", *TINY, "logger=none", f"hydra.run.dir={job}", check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert f"(pid {os.getpid()})" in err and "in use by a running job" in err
    assert not (job / "metrics.jsonl").exists() and not (job / "summary.json").exists()

    # Released (the holder ended): the same command runs.
    run_cli("scheme=naive", *TINY, "logger=none", f"hydra.run.dir={job}")
    assert json.loads((job / "summary.json").read_text())["status"] == "finished"


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    job = tmp_path / "job"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from runners.run_store import job_lock;\n"
                               f"with job_lock(__import__('pathlib').Path({str(job)!r})):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, env=cli_env(tmp_path), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with job_lock(job):  # the kernel released it with the process
        pass
