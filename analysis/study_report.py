"""The study's report: its answer, tables (Markdown, CSV, LaTeX), figures and page, from its runs.

``export`` reads a study's run stores (``runners.study`` writes them) into a results
directory's three inputs: ``runs.csv`` (every seeded run, with its setting and tuned rates),
``trials.csv`` (the tuning trials) and ``study.json`` (the design, commands, machine, wall
time, and each setting's model and data read from its runs' configs). ``render`` derives
everything else from those three files: the tables of ``analysis.study_tables`` as
``<table>.{md,csv,tex}``, the figures (``analysis.study_figures``), ``README.md``, and the
README blocks ``<!-- DIR:answer -->`` (``analysis.study_text``) and ``<!-- DIR:headline -->``.
Both run through the one publisher, which writes and checks them:

    python -m analysis.publish docs/results/study_cpu --from <output dir>/studies/study_cpu --readme README.md
    python -m analysis.publish docs/results/study_cpu --readme README.md --check
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import study_tables as tables
from analysis.machine import machine_line, of_jobs
from analysis.publication import Publication, PublishError
from analysis.runs import CELL_ORDER, SCHEME_ORDER, config_value, ordered
from analysis.store_reader import collect
from analysis.study_figures import FIGURES, seeds_figure, tuning_figure
from analysis.study_text import answer, rates_line

INPUTS = ("runs.csv", "trials.csv", "study.json")


# --- reading a study --------------------------------------------------------------------


def _frame(root: Path, columns: list[str]) -> tuple[pd.DataFrame, list[dict]]:
    runs = collect([root]).runs
    rates = pd.DataFrame([tables.group_rates(p) for p in runs.get("plan", pd.Series([None] * len(runs)))],
                         index=runs.index, columns=["rate_ff", "rate_rec"])
    runs = pd.concat([runs.drop(columns=[c for c in ("rate_ff", "rate_rec") if c in runs]), rates], axis=1)
    for column in columns:
        if column not in runs:
            runs[column] = math.nan
    frame = runs[columns].copy()
    frame["scheme"] = pd.Categorical(frame["scheme"], ordered(frame["scheme"], SCHEME_ORDER), ordered=True)
    frame["cell"] = pd.Categorical(frame["cell"], ordered(frame["cell"], CELL_ORDER), ordered=True)
    frame = frame.sort_values([c for c in ("cell", "scheme", "rate_ff", "rate_rec", "seed") if c in frame])
    frame["scheme"] = frame["scheme"].astype(str)
    frame["cell"] = frame["cell"].astype(str)
    configs = [json.loads(c) for c in runs.get("config", pd.Series(dtype=object)).dropna()]
    return frame.reset_index(drop=True), configs


def describe_setting(config: dict[str, Any]) -> str:
    """A setting as measured: model, data and epochs, from one of its runs' resolved configs."""
    get = lambda key: config_value(config, key)  # noqa: E731
    tokens = get("data.size")
    data = f"{tokens:,} training tokens of `{get('data.name')}`" if tokens else f"`{get('data.name')}`"
    return (f"{get('model.num_layers')} x {get('model.hidden_size')} (embedding {get('model.emb_size')}), "
            f"{data}, {get('train.epochs')} epoch{'' if get('train.epochs') == 1 else 's'}")


def export(study_dir: Path, out: Path) -> None:
    """The study's three inputs, from its run stores, into ``out``."""
    record_path = study_dir / "study.json"
    if not record_path.is_file():
        raise PublishError(f"{study_dir} is not a study directory (no study.json); run python -m runners.study first")
    record = json.loads(record_path.read_text())
    settings = list(record.get("study", {}).get("settings") or [])
    if not settings or "rates_ff" not in record["study"]:
        raise PublishError(f"{study_dir} is a one-rate study (issue 14's design), which this version no longer "
                               f"reports; rerun it with python -m runners.study")
    frames, scope = [], {}
    for setting in settings:
        where = study_dir / "seeds" / setting
        if not where.is_dir():
            continue
        frame, configs = _frame(where, [c for c in tables.RUN_COLUMNS if c != "setting"])
        frames.append(frame.assign(setting=setting)[tables.RUN_COLUMNS])
        if configs:
            scope[setting] = describe_setting(configs[0])
    if not frames:
        raise PublishError(f"{study_dir} has no seeded runs yet (nothing under seeds/)")
    out.mkdir(parents=True, exist_ok=True)
    pd.concat(frames, ignore_index=True).to_csv(out / "runs.csv", index=False)
    tune = study_dir / "tune"
    trials = (_frame(tune, tables.TRIAL_COLUMNS)[0] if tune.is_dir() and any(tune.iterdir())
              else pd.DataFrame(columns=tables.TRIAL_COLUMNS))
    trials.to_csv(out / "trials.csv", index=False)
    (out / "study.json").write_text(json.dumps({**record, "scope": scope}, indent=2) + "\n")


def load(results: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    missing = [name for name in INPUTS if not (results / name).is_file()]
    if missing:
        raise PublishError(f"{results} lacks {', '.join(missing)}; write it with "
                           f"python -m analysis.publish {results} --from STUDY_DIR")
    runs = pd.read_csv(results / "runs.csv", dtype={"setting": str})
    if "setting" not in runs:
        raise PublishError(f"{results}/runs.csv has no setting column: a one-rate study (issue 14's design); "
                               f"this version checks only two-rate studies")
    return runs, pd.read_csv(results / "trials.csv"), json.loads((results / "study.json").read_text())


# --- the page ---------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def job_seconds(runs: pd.DataFrame, trials: pd.DataFrame) -> float:
    """The study's compute as the sum of its runs' own wall times (seeded runs and tuning trials)."""
    return float(sum(pd.to_numeric(frame.get("wall_s", pd.Series(dtype=float)), errors="coerce").fillna(0).sum()
                     for frame in (runs, trials)))


def readme_text(record: dict[str, Any], files: dict[str, str], runs: pd.DataFrame, trials: pd.DataFrame,
                text: str) -> str:
    s = record["study"]
    commands = "\n".join(record.get("commands", []))
    settings = "\n".join(f"  - `{name}`: {record.get('scope', {}).get(name, ', '.join(o) or 'the preset as it is')}"
                         f" (overrides: {' '.join(o) or 'none'})" for name, o in s["settings"].items())
    head = tables.headline(runs)
    return f"""# Study `{record['name']}`: every scheme on one feed-forward footing, two rates tuned, {len(s['seeds'])} seeds, {len(s['settings'])} settings

Generated by `python -m analysis.publish docs/results/{record['name']}` from this folder's `runs.csv`, `trials.csv`
and `study.json`; with `--check` it fails if a table here differs from what those files give (`tests/test_published.py`).

- **Ran with:** `{record['command']}`, then
  `python -m analysis.publish docs/results/{record['name']} --from <output dir>/studies/{record['name']} --readme README.md`
- **Machine:** {machine_line(of_jobs(record['machine']))}; {record['jobs']} commands at a time, each on its share of the cores.
- **Wall time:** {_duration(record['wall_s'])} for {len(trials)} tuning trials and {len(runs)} seeded runs
  ({record.get('invocations', 1)} invocation(s) of the study command, on a machine shared with other work).
  The runs' own wall times sum to {_duration(job_seconds(runs, trials))}: {record['jobs']} at a time, a quiet
  machine needs about {_duration(job_seconds(runs, trials) / max(int(record['jobs']), 1))}.
- **Settings:**
{settings}

## Design

- **One footing.** Every scheme is `naive`'s feed-forward dropout (layer inputs `x`, between layers,
  output `out`; the scheme's own granularity where it has those sites, `naive`'s per-step mask where
  it has none) plus its own recurrent mechanism. `naive` is the footing alone; `none` has no dropout.
  Word-type dropout (`emb`) is {s.get('emb', 'left out for every scheme')}: it is orthogonal to the question.
- **Equal budget.** Two rates, tuned jointly: `rate_ff` on {s['rates_ff']} and `rate_rec` on
  {s['rates_rec']}, the same {len(s['rates_ff']) * len(s['rates_rec'])}-point grid for every scheme
  with a recurrent site, and `naive` on the same {len(s['rates_ff'])} `rate_ff` points; Optuna's
  grid sampler in SQLite, validation split, seed {s['tuning_seed']}, in `{next(iter(s['settings']))}`
  only. A diverged trial scores +inf. Tuned pairs: {rates_line(head)}.
- **Seeds and selection.** The tuned pair of every scheme x cell, and `none`, re-run with seeds
  {s['seeds']} (never the tuning seed) in every setting. The cell's best scheme, which the third block
  of comparisons is measured against, is chosen on **validation** (bold in the tables), never on test.
- **Statistics.** Every comparison is paired over seeds (same seed: same initialisation and data
  order): mean Δ with a 95 % t interval, the paired t-test, the exact sign-flip test (all 2^n sign
  assignments; with {len(s['seeds'])} seeds its smallest p is {2 / 2 ** len(s['seeds']):.2g}), and Holm's
  adjustment of the exact p over every comparison of the setting. Claims use the Holm-adjusted exact p.
- **MC dropout.** {s.get('mc_samples', 0)} samples of the masks averaged in probability (Gal &
  Ghahramani 2016, eq. 4), beside the standard test of the same weights.

## The answer

{text}
## Test perplexity at the tuned rates

{files['headline.md']}
Bold: the cell's best scheme on validation. †: a tuned rate on the end of its grid, where the
optimum may lie beyond the grid.

![test perplexity of every seeded run](seeds.png)

## Paired comparisons

Against `none` (does the scheme help at all), against `naive` (does the recurrent part add to the
footing) and against the cell's best scheme on validation.

{files['paired.md']}
## Does the ranking hold in the other setting?

{files['rank_stability.md']}
{files['survival.md']}
## MC dropout against the standard test

{files['mc.md']}
## Tuning: every trial

![best validation perplexity of every tuning trial](tuning.png)

Boxed: the pair re-run with seeds. Also as [SVG](tuning.svg) and [PDF](tuning.pdf); every table as
LaTeX (booktabs) and CSV beside its Markdown.

## The commands the study ran

```
{commands}
```
"""


def provenance(record: dict[str, Any], runs: pd.DataFrame, trials: pd.DataFrame) -> str:
    """One line: the command, the machine and the wall time, from ``study.json``."""
    return (f"*{len(runs)} seeded runs and {len(trials)} tuning trials from `{record['command']}`, "
            f"{_duration(record['wall_s'])} on {machine_line(of_jobs(record['machine']))}.*\n")


def grid(record: dict[str, Any]) -> dict[str, list[float]]:
    """The tuning grid, ``{"ff": rates_ff, "rec": rates_rec}``, from the study record."""
    return {g: record["study"][f"rates_{g}"] for g in ("ff", "rec")}


def render(results: Path) -> Publication:
    """Every text file of ``results``, its figures and the README blocks, from its three inputs."""
    runs, trials, record = load(results)
    files = tables.render_tables(runs, grid(record))
    head, pairs, mc = tables.headline(runs), tables.paired_table(runs), tables.mc_table(runs)
    text = answer(record, head, pairs, mc, tables.rank_stability(runs), tables.survival(pairs))
    files["README.md"] = readme_text(record, files, runs, trials, text)
    first = tables.settings_of(runs)[0]
    table = tables.markdown(tables.headline_display(head[head.setting == first], grid(record)).drop(columns="setting"))
    legend = "Bold: the cell's best scheme on validation. †: a tuned rate on the end of its grid.\n"
    blocks = {"answer": text, "headline": f"{table}\n{legend}\n{provenance(record, runs, trials)}"}

    def draw(out: Path) -> None:
        if len(trials):
            tuning_figure(trials, runs, out)
        seeds_figure(runs, out)

    return Publication(files=files, blocks=blocks, figures=tuple(f"{name}.png" for name in FIGURES), draw=draw)
