"""The fair study: every scheme on one feed-forward footing, two rates tuned on one grid, seeds, settings.

    python -m runners.study experiment=study_cpu [key=value ...] [--jobs N] [--out DIR]

A preset's ``study`` block names the schemes, cells, the two rate grids, the seeds and the
settings (issue 22). Every scheme is its own recurrent mechanism on the same feed-forward
footing: ``dropout={ff: rate_ff, rec: rate_rec}`` (``benchmark.engine.schemes``: ``ff`` is
naive's input/between/output dropout, with the scheme's own granularity where it has those
sites; ``rec`` the scheme's sites inside the recurrence), so ``naive`` is the footing alone
and the comparison is about the recurrent part. ``emb`` (word-type dropout) is left out for
every scheme. ``schemes: null`` means every scheme of the registry but ``none``.

For every scheme x cell the driver runs one Optuna grid search (``hparams_search=dropout``
with the search space replaced by the two axes, seeded, in SQLite) over ``rates_ff`` x
``rates_rec`` in the first setting with ``study.tuning_seed``, scored on the validation
split; ``naive``, which has no recurrent site, searches ``rates_ff`` alone at the same
points, and ``none`` skips the search. The best pair is then re-run with every seed in
``study.seeds`` in every setting (the first is the one tuned on; the others re-run the
tuned configuration at another scale), with MC-dropout evaluation (``study.mc_samples``).
Only seeded runs are compared, by ``analysis.study_report`` (``python -m analysis.publish``).

Each search and each seed sweep is one ``python run.py -m`` command; ``--jobs`` of them run
at a time, each on its share of the cores (or its own GPU). Everything lives under
``<paths.output_dir>/studies/<study.name>/``: ``tune/<scheme>-<cell>/`` (the trials and their
``optuna.db``), ``seeds/<setting>/<scheme>-<cell>/``, ``logs/`` (each command's output) and
``study.json`` (the design, the commands, the machine and the wall time).

Rerunning the same command continues an interrupted study: a search asks only for the
grid points its SQLite study has not finished (an interrupted trial's point is asked again
and its job directory resumes from its checkpoint), and the seed sweeps skip finished jobs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from hydra.errors import HydraException
from omegaconf import DictConfig

from analysis.store_format import SUMMARY, read_summary
from runners.hydra_app import CONF_DIR, CommandLine, one_line
from runners.hydra_checks import check_paths, require_optuna
from runners.study_spec import StudyError, StudySpec
from runners.study_trials import best_rates, param, storage_url, study_name, trials_to_ask

@dataclass
class Task:
    """One ``run.py -m`` command: a rate search, or one rate's seed sweep."""

    stage: str          # tune | seeds
    scheme: str
    cell: str
    sweep_dir: Path
    setting: str = ""
    rates: dict[str, float] | None = None                   # {group: rate} of a seed sweep
    tuned_by: "Task | None" = None                          # the search whose best rates a seed sweep uses
    after: list["Task"] = field(default_factory=list)       # what may start once this one has finished

    @property
    def label(self) -> str:
        return f"{self.stage} {self.setting + ' ' if self.setting else ''}{self.scheme}-{self.cell}"


def compose(overrides: Sequence[str]) -> DictConfig:
    """The job configuration these overrides give, as ``run.py`` would compose it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def study_dir(cfg: DictConfig, spec: StudySpec) -> Path:
    return Path(cfg.paths.output_dir).resolve() / "studies" / spec.name


def retire_stale_seeds(task: "Task", root: Path) -> Path | None:
    """Move a seed sweep that ran at other rates than ``task.rates`` to ``superseded/``; returns where.

    A seed sweep's job directories are named by seed, not by rate, and a finished job is never
    run again; so when a search's best pair changes (its grid was extended), the seeds at the
    old pair would be reported as the new one's. They are moved aside instead, kept for the
    record and out of the report, and the seeds run again at the tuned pair.
    """
    stale = False
    for path in task.sweep_dir.glob(f"*/{SUMMARY}"):
        summary = read_summary(path.parent)
        ran = None if summary is None else summary.dropout
        if isinstance(ran, dict) and any(not math.isclose(float(ran.get(g, math.nan)), r)
                                         for g, r in (task.rates or {}).items()):
            stale = True
            break
    if not stale:
        return None
    target = root / "superseded" / task.setting / f"{task.sweep_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    task.sweep_dir.rename(target)
    return target


def plan(spec: StudySpec, root: Path) -> list[Task]:
    """Every command of the study; a scheme's seed sweeps run after its search, in every setting."""
    def seeds(scheme: str, cell: str, setting: str, **kw: Any) -> Task:
        return Task("seeds", scheme, cell, root / "seeds" / setting / f"{scheme}-{cell}", setting=setting, **kw)

    tasks = [seeds("none", cell, setting, rates={}) for setting in spec.settings for cell in spec.cells]
    for scheme in spec.schemes:
        for cell in spec.cells:
            tune = Task("tune", scheme, cell, root / "tune" / f"{scheme}-{cell}", setting=spec.tuning_setting)
            tune.after.extend(seeds(scheme, cell, setting, tuned_by=tune) for setting in spec.settings)
            tasks.append(tune)
    return tasks


def total_runs(spec: StudySpec) -> int:
    """Every job of the study: the grid points of every search and every seeded run."""
    trials = sum(math.prod(len(r) for r in spec.grid(s, c).values()) for s in spec.schemes for c in spec.cells)
    return trials + len(spec.settings) * (len(spec.schemes) + 1) * len(spec.cells) * len(spec.seeds)


def command(task: Task, spec: StudySpec, overrides: Sequence[str], threads: int | None) -> list[str]:
    """The ``run.py -m`` command line of a task."""
    # runners.cli is run.py's installed twin: the study also works from a `pip install .`
    argv = [sys.executable, "-m", "runners.cli", "-m", *overrides, *spec.settings[task.setting],
            f"scheme={task.scheme}", f"model={task.cell}", f"hydra.sweep.dir={task.sweep_dir}"]
    if threads is not None and not any(o.startswith("threads=") for o in overrides):
        argv.append(f"threads={threads}")
    if task.stage == "tune":
        grid = spec.grid(task.scheme, task.cell)
        remaining = trials_to_ask(task.sweep_dir, task.scheme, task.cell, grid)
        argv += ["hparams_search=dropout", "~hydra.sweeper.params.dropout", f"seed={spec.tuning_seed}",
                 *(f"{param(g)}=choice({','.join(repr(r) for r in rates)})" for g, rates in grid.items()),
                 "hydra.sweep.subdir=${run_name}" + "".join(f"-{g}${{{param(g)}}}" for g in grid),
                 f"hydra.sweeper.study_name={study_name(task.scheme, task.cell, grid)}",
                 f"hydra.sweeper.storage={storage_url(task.sweep_dir)}",
                 f"hydra.sweeper.n_trials={max(remaining, 0)}"]
    else:
        argv.append(f"seed={','.join(str(s) for s in spec.seeds)}")
        argv += [f"{param(g)}={r!r}" for g, r in (task.rates or {}).items()]
        if spec.mc_samples and task.scheme != "none":  # nothing to average over without masks
            argv.append(f"train.mc_samples={spec.mc_samples}")
    return argv


def display(argv: Sequence[str]) -> str:
    """A command as a user would type it from the repository root."""
    shown = ["python", "run.py", *argv[3:]] if list(argv[1:3]) == ["-m", "runners.cli"] else list(argv)
    return shlex.join(shown)


def completed_runs(root: Path) -> int:
    """Job directories of the study with a final status: the progress bar's count."""
    done = 0
    for path in [*root.glob(f"tune/*/*/{SUMMARY}"), *root.glob(f"seeds/*/*/*/{SUMMARY}")]:
        summary = read_summary(path.parent)
        if summary is not None and summary.status in ("finished", "diverged", "failed"):
            done += 1
    return done


def machine() -> dict[str, Any]:
    """Where the study ran: the report prints it beside the results."""
    import torch

    from benchmark.machine import machine as describe

    return describe(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


class Runner:
    """Runs tasks ``jobs`` at a time; each command gets its share of the cores, or a GPU of its own."""

    def __init__(self, spec: StudySpec, root: Path, overrides: Sequence[str], jobs: int, gpus: int):
        self.spec, self.root, self.overrides, self.jobs = spec, root, list(overrides), jobs
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self.slots: queue.Queue[int] = queue.Queue()
        for slot in range(jobs):
            self.slots.put(slot)
        self.gpus = gpus
        self.commands: list[str] = []
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.lock = threading.Lock()

    def run(self, task: Task) -> Task:
        if task.tuned_by is not None:
            task.rates = best_rates(task.tuned_by.sweep_dir, task.scheme, task.cell,
                                    self.spec.grid(task.scheme, task.cell))
            moved = retire_stale_seeds(task, self.root)
            if moved is not None:
                note = f"{task.label}: seeds run at other rates than the tuned {task.rates} moved to {moved}"
                print(note, file=sys.stderr)
                with self.lock:
                    self.notes.append(note)
        argv = command(task, self.spec, self.overrides, None if self.gpus else self.threads)
        if task.stage == "tune" and argv[-1] == "hydra.sweeper.n_trials=0":
            return task  # every grid point has its result
        task.sweep_dir.mkdir(parents=True, exist_ok=True)  # SQLite creates the database file, not its folder
        slot = self.slots.get()
        env = dict(os.environ)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % self.gpus)
        log_path = self.root / "logs" / f"{task.stage}-{task.setting + '-' if task.stage == 'seeds' else ''}{task.scheme}-{task.cell}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.commands.append(display(argv))
        try:
            with open(log_path, "a") as log:
                log.write(f"$ {display(argv)}\n")
                log.flush()
                # the user's working directory: relative paths (data.path=./ptb) mean what they typed
                rc = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        finally:
            self.slots.put(slot)
        if rc != 0:
            with self.lock:
                self.failures.append(f"{task.label} exited with status {rc}; see {log_path}")
            raise RuntimeError(task.label)
        return task


def run_study(spec: StudySpec, root: Path, overrides: Sequence[str], jobs: int, progress: bool = True) -> int:
    """Run (or continue) every task; returns the number of commands that failed."""
    import torch
    from tqdm import tqdm

    gpus = torch.cuda.device_count()
    runner = Runner(spec, root, overrides, jobs, gpus)
    root.mkdir(parents=True, exist_ok=True)
    record_path = root / "study.json"
    previous = json.loads(record_path.read_text()) if record_path.is_file() else {}
    started = time.time()
    total = total_runs(spec)
    tasks = plan(spec, root)
    bar = tqdm(total=total, initial=completed_runs(root), unit="run", desc=spec.name, disable=not progress,
               file=sys.stderr, dynamic_ncols=True)

    where = machine()

    def record() -> None:
        """study.json, rewritten while the study runs: a killed invocation loses at most a poll's time."""
        data = {
            "name": spec.name,
            "study": spec.describe(),
            "command": shlex.join(["python", "-m", "runners.study", *overrides]),
            "overrides": list(overrides),
            "jobs": jobs,
            "machine": where,
            "started": previous.get("started")
            or datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            # Over every invocation, so a resumed study reports its whole cost.
            "wall_s": round(float(previous.get("wall_s") or 0.0) + time.time() - started, 1),
            "invocations": int(previous.get("invocations") or 0) + 1,
            "commands": sorted(set(previous.get("commands", [])) | set(runner.commands)),
            "failures": runner.failures,
            "superseded": [*previous.get("superseded", []), *runner.notes],
        }
        tmp = record_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(record_path)

    record()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending: dict[Future, Task] = {pool.submit(runner.run, t): t for t in tasks}
        while pending:
            done, _ = wait(pending, timeout=5, return_when=FIRST_COMPLETED)
            bar.n = completed_runs(root)
            bar.refresh()
            record()
            for future in done:
                task = pending.pop(future)
                if future.exception() is not None:
                    if not isinstance(future.exception(), RuntimeError):
                        runner.failures.append(f"{task.label}: {future.exception()}")
                    continue
                for follow in task.after:
                    pending[pool.submit(runner.run, follow)] = follow
                rate = (f" (best {best_rates(task.sweep_dir, task.scheme, task.cell, spec.grid(task.scheme, task.cell))})"
                        if task.stage == "tune" else "")
                bar.write(f"done: {task.label}{rate}")
    bar.close()
    record()
    for failure in runner.failures:
        print(f"error: {failure}", file=sys.stderr)
    return len(runner.failures)


def default_jobs() -> int:
    import torch

    return torch.cuda.device_count() or (os.cpu_count() or 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runners.study",
        description="Tune every scheme's two dropout rates (feed-forward, recurrent) on the same grid, re-run the "
                    "best pair with several seeds in every setting, and report. Rerun the same command to continue "
                    "an interrupted study.")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="Hydra overrides, e.g. experiment=study_cpu (a preset with a study block)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="commands at a time (default: one per GPU, else one per core)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the report goes (default: <study dir>/report)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs and CI)")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    require_optuna("python -m runners.study")
    try:
        cfg = compose(args.overrides)
    except HydraException as e:  # an unknown option or key: Hydra's refusal, in one line
        message = one_line(e, CommandLine(overrides=list(args.overrides)), CONF_DIR, "config")
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    check_paths(cfg)
    try:
        spec = StudySpec.from_config(cfg)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    root = study_dir(cfg, spec)
    print(f"study {spec.name}: {len(spec.schemes)} schemes x {len(spec.cells)} cells, rate_ff {list(spec.rates_ff)} x "
          f"rate_rec {list(spec.rates_rec)}, seeds {list(spec.seeds)}, settings {', '.join(spec.settings)}: "
          f"{total_runs(spec)} runs; in {root}", file=sys.stderr)
    failed = run_study(spec, root, args.overrides, args.jobs or default_jobs(), progress=not args.no_progress)
    from analysis.publish import publish

    out = args.out or root / "report"
    publish(out, source=root, command=f"python -m analysis.publish {out} --from {root}")
    print(f"report: {out / 'README.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
