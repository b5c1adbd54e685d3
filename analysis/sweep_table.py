"""One sweep's result table: best validation perplexity per scheme x cell, never typed by hand.

``export`` reads a finished sweep's job directories (``analysis.store_reader.collect``) into
a results directory's two inputs: ``runs.csv`` (one row per job) and ``sweep.json`` (the
sweep's name, its Hydra overrides from ``multirun.yaml``, the command that exported it and
the machine its jobs recorded). ``render`` derives from those two files alone ``table.md``
and the README block ``<!-- DIR:table -->``. Both run through the one publisher:

    python -m analysis.publish docs/results/quickstart --from outputs/sweeps/TIMESTAMP --readme README.md
    python -m analysis.publish docs/results/quickstart --readme README.md --check
"""

from __future__ import annotations

import json
import math
import os
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from analysis.machine import machine_line, of_jobs
from analysis.publication import Publication, PublishError
from analysis.runs import CELL_ORDER, SCHEME_ORDER, ordered
from analysis.store_format import SUMMARY, read_summary
from analysis.store_reader import collect

RUN_COLUMNS = ["scheme", "cell", "seed", "status", "best_val_ppl", "best_epoch", "last_val_ppl", "last_epoch",
               "epochs", "diverged_step", "wall_s"]
RUNS, RECORD, TABLE = "runs.csv", "sweep.json", "table.md"
INPUTS = (RUNS, RECORD)

# --- reading the sweep ------------------------------------------------------------------


def _val_curve(events: pd.DataFrame, best_val_ppl: float) -> dict[str, Any]:
    """Where one run's validation curve had its best value and where it ended.

    The best epoch is the validation event whose perplexity is the summary's ``best_val_ppl``
    (so the table's number and its epoch agree); the last is the run's last validation event,
    which is what says whether the run was over-fitting or still improving when it stopped.
    """
    val = events[events["split"] == "val"]
    best = val[np.isclose(val["ppl"], best_val_ppl)] if math.isfinite(best_val_ppl) else val.iloc[:0]
    last = val.iloc[-1] if len(val) else None
    return {"best_epoch": best["epoch"].iloc[0] if len(best) else pd.NA,
            "last_val_ppl": math.nan if last is None else last["ppl"],
            "last_epoch": pd.NA if last is None else last["epoch"]}


def _sorted(runs: pd.DataFrame) -> pd.DataFrame:
    """Cells in ``CELL_ORDER``, schemes in ``SCHEME_ORDER`` within a cell, then seeds."""
    cell_rank = {c: i for i, c in enumerate(ordered(runs["cell"].tolist(), CELL_ORDER))}
    scheme_rank = {s: i for i, s in enumerate(ordered(runs["scheme"].tolist(), SCHEME_ORDER))}
    keys = pd.DataFrame({"cell": runs["cell"].map(cell_rank), "scheme": runs["scheme"].map(scheme_rank),
                         "seed": runs["seed"]})
    return runs.loc[keys.sort_values(list(keys.columns), kind="stable").index].reset_index(drop=True)


def sweep_runs(sweep: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The sweep's jobs as ``runs.csv`` rows, and the machine they ran on; a job without a summary is an
    error, not a gap.

    A published table with a silently missing run would misreport the sweep, so an unfinished
    or killed job stops the publication (rerunning the sweep's command finishes it).
    """
    read = collect([sweep])
    if read.skipped:
        raise PublishError(f"{sweep}: {len(read.skipped)} job(s) not readable, e.g. {read.skipped[0]}; "
                           f"finish the sweep (rerun its command) first")
    if read.runs.empty:
        raise PublishError(f"{sweep} holds no job directories (none has a summary.json or metrics.jsonl)")
    rows = []
    for run in read.runs.to_dict("records"):
        events = read.events[read.events["run_dir"] == run["run_dir"]]
        rows.append({**{k: run[k] for k in RUN_COLUMNS if k in run}, **_val_curve(events, run["best_val_ppl"])})
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for key in ("seed", "best_epoch", "last_epoch", "epochs", "diverged_step"):
        runs[key] = runs[key].astype("Int64")
    _one_run_each(runs)
    return _sorted(runs), sweep_machine(read.runs)


def sweep_overrides(sweep: Path) -> list[str]:
    """The overrides the sweep was launched with (``hydra.overrides.task`` of ``multirun.yaml``)."""
    path = sweep / "multirun.yaml"
    try:
        overrides = yaml.safe_load(path.read_text(encoding="utf-8"))["hydra"]["overrides"]["task"]
    except OSError as e:
        raise PublishError(f"{sweep} is not a Hydra sweep directory: cannot read multirun.yaml "
                           f"({e.strerror or type(e).__name__})") from None
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise PublishError(f"{path} has no hydra.overrides.task ({type(e).__name__})") from None
    return [str(o) for o in overrides or []]


def sweep_machine(runs: pd.DataFrame) -> dict[str, Any]:
    """Where the sweep's jobs ran, as each job's ``summary.json`` records it (``runners.job``).

    Read from the jobs, not from the publishing process: a sweep run on a cluster is published
    from a laptop. What describes one job's process (its threads, its load) is left out.
    """
    seen: dict[str, dict[str, Any]] = {}
    for run_dir in runs["run_dir"]:
        summary = read_summary(Path(run_dir))
        found = None if summary is None else summary.machine
        if not isinstance(found, dict):
            raise PublishError(f"{run_dir}/{SUMMARY} records no machine (written before jobs recorded it); "
                               f"run the sweep again to publish it")
        found = of_jobs(found)
        seen[json.dumps(found, sort_keys=True)] = found
    if len(seen) > 1:
        raise PublishError(f"the sweep's jobs ran on {len(seen)} different machines; this table names one")
    return next(iter(seen.values()))


# --- the table --------------------------------------------------------------------------


def load(results: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The committed inputs of a results directory: ``runs.csv`` and ``sweep.json``."""
    if not results.is_dir():
        raise PublishError(f"no such results directory: {results}")
    try:
        runs = pd.read_csv(results / RUNS)
        record = json.loads((results / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PublishError(f"{results}: cannot read {RUNS} and {RECORD} ({type(e).__name__}: {e}); "
                           f"write them with python -m analysis.publish {results} --from SWEEP_DIR") from None
    missing = [c for c in RUN_COLUMNS if c not in runs.columns]
    if missing or not isinstance(record, dict) or not {"name", "overrides", "machine"} <= record.keys():
        raise PublishError(f"{results}: {RUNS} or {RECORD} lacks {', '.join(missing) or 'name/overrides/machine'}")
    if runs.empty:
        raise PublishError(f"{results}/{RUNS} holds no runs")
    return runs, record


def _one_run_each(runs: pd.DataFrame) -> None:
    """The table shows one number per scheme x cell: a sweep over seeds or rates needs the study."""
    counts = runs.groupby(["cell", "scheme"]).size()
    if (counts > 1).any():
        cell, scheme = counts[counts > 1].index[0]
        raise PublishError(f"{scheme} on {cell} has {counts[(cell, scheme)]} runs; this table shows one run per "
                           f"scheme and cell (seeds or rates are compared by python -m runners.study)")


def _number(value: float) -> str:
    return f"{value:.1f}"


def _cell_name(cell: str) -> str:
    return cell.upper()


def _shown(run: pd.Series | None) -> str:
    """What the table shows for one run: its best validation perplexity, or why there is none."""
    if run is None:
        return "-"
    if run["status"] != "finished":
        return str(run["status"])
    return "-" if pd.isna(run["best_val_ppl"]) else _number(run["best_val_ppl"])


def _best(runs: pd.DataFrame) -> pd.Series | None:
    """The finished run with the lowest best validation perplexity (as shown), or None."""
    done = runs[(runs["status"] == "finished") & runs["best_val_ppl"].notna()]
    return None if done.empty else done.loc[done["best_val_ppl"].round(1).idxmin()]


def table(runs: pd.DataFrame) -> str:
    """The scheme x cell table: one column per scheme, one row per cell, each row's best in bold."""
    schemes = ordered(runs["scheme"].tolist(), SCHEME_ORDER)
    lines = ["| | " + " | ".join(schemes) + " |", "|---" * (len(schemes) + 1) + "|"]
    for cell in ordered(runs["cell"].tolist(), CELL_ORDER):
        rows = runs[runs["cell"] == cell]
        best = _best(rows)
        shown = []
        for scheme in schemes:
            match = rows[rows["scheme"] == scheme]
            text = _shown(match.iloc[0] if len(match) else None)
            shown.append(f"**{text}**" if best is not None and text == _number(best["best_val_ppl"]) else text)
        lines.append(f"| {_cell_name(cell)} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def sentences(runs: pd.DataFrame) -> str:
    """What the numbers say, and nothing more: best vs ``none``, ``none``'s rise, divergences.

    Percentages are computed from the values as the table shows them (one decimal), so a
    reader can check them against the table.
    """
    versus, rises, diverged = [], [], []
    for cell in ordered(runs["cell"].tolist(), CELL_ORDER):
        rows = runs[runs["cell"] == cell]
        name = f"the {_cell_name(cell)}"
        none = rows[(rows["scheme"] == "none") & (rows["status"] == "finished") & rows["best_val_ppl"].notna()]
        best = _best(rows)
        if none.empty or best is None:
            versus.append(f"on {name} no finished `none` run to compare with")
        elif best["scheme"] == "none":
            versus.append(f"on {name} `none` itself")
        else:
            base, top = round(none.iloc[0]["best_val_ppl"], 1), round(best["best_val_ppl"], 1)
            versus.append(f"on {name} `{best['scheme']}`, {round(100 * (base - top) / base)} % lower "
                          f"({_number(top)} against {_number(base)})")
        for run in rows[rows["scheme"] == "none"].to_dict("records"):
            curve = (run["best_epoch"], run["last_epoch"], run["last_val_ppl"], run["best_val_ppl"])
            if not any(pd.isna(v) for v in curve) and run["last_epoch"] > run["best_epoch"] \
                    and run["last_val_ppl"] > run["best_val_ppl"]:
                rises.append(f"on {name} from {_number(run['best_val_ppl'])} at epoch {int(run['best_epoch'])} "
                             f"to {_number(run['last_val_ppl'])} at epoch {int(run['last_epoch'])}")
        for run in rows[rows["status"] == "diverged"].to_dict("records"):
            at = "" if pd.isna(run["diverged_step"]) else f" at step {int(run['diverged_step'])}"
            diverged.append(f"`{run['scheme']}` on {name} diverged{at}.")
    text = [f"Best scheme against `none`: {'; '.join(versus)}."]
    if rises:
        text.append(f"Without dropout the validation perplexity rises after its best epoch: {'; '.join(rises)}.")
    return " ".join(text + diverged) + "\n"


def _seeds(runs: pd.DataFrame) -> str:
    seeds = sorted({int(s) for s in runs["seed"].dropna()})
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds)) if seeds else "seed unknown"


def markdown(runs: pd.DataFrame, record: dict[str, Any]) -> str:
    """``table.md``: title, provenance, the table and its sentences, from the two inputs alone."""
    _one_run_each(runs)
    command = shlex.join(["python", "run.py", "-m", *record["overrides"]])
    provenance = (f"Best validation perplexity (lower is better) of sweep `{record['name']}`: `{command}`, "
                  f"{len(runs)} runs, {_seeds(runs)}; on {machine_line(record['machine'])}.")
    return (f"# Sweep `{record['name']}`: best validation perplexity per scheme and cell\n\n"
            f"{provenance}\n\n{table(runs)}\n{sentences(runs)}")


def render(results: Path) -> Publication:
    """``table.md`` and the README's copy of it (without its title), from the committed inputs."""
    text = markdown(*load(results))
    return Publication(files={TABLE: text}, blocks={"table": text.split("\n", 2)[2]})


def export(sweep: Path, out: Path, command: str) -> None:
    """Write ``runs.csv`` and ``sweep.json`` into ``out`` from the sweep's job directories."""
    if not sweep.is_dir():
        raise PublishError(f"no such sweep directory: {sweep}")
    overrides = sweep_overrides(sweep)
    runs, where = sweep_runs(sweep)
    record = {"name": Path(os.path.abspath(sweep)).name, "overrides": overrides, "command": command,
              "machine": where}
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / RUNS, index=False)
    (out / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
