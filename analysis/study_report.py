"""The study's report: its answer, tables (Markdown, CSV, LaTeX), figures and page, and their check.

    python -m analysis.study_report STUDY_DIR --out docs/results/study_cpu [--readme README.md]
    python -m analysis.study_report --render docs/results/study_cpu [--readme README.md]
    python -m analysis.study_report --check docs/results/study_cpu [--readme README.md]

The first form reads a study's run stores (``runners.study`` writes them) and writes, in
``--out``, the three inputs everything else derives from: ``runs.csv`` (every seeded run, with
its setting and tuned rates), ``trials.csv`` (the tuning trials) and ``study.json`` (the design,
commands, machine, wall time, and each setting's model and data read from its runs' configs);
then the tables of ``analysis.study_tables`` as ``<table>.{md,csv,tex}``, the figures
``tuning.{png,svg,pdf}`` and ``seeds.{png,svg,pdf}``, and ``README.md``. With ``--readme`` it
also writes the answer (``analysis.study_text``) and the headline table into the README between
``<!-- <name>:answer -->`` and ``<!-- <name>:headline -->`` markers.

``--check`` renders everything again from the committed CSVs and fails (exit 1) when a committed
table, the page or the README's copy differs: a number edited by hand cannot pass.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from analysis import study_tables as tables
from analysis.runs import CELL_ORDER, SCHEME_ORDER, config_value, ordered
from analysis.store_reader import collect
from analysis.study_text import answer, rates_line

INPUTS = ("runs.csv", "trials.csv", "study.json")
FIGURES = ("tuning", "seeds")


class StudyReportError(ValueError):
    """A study directory or results directory that cannot be reported."""


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
        raise StudyReportError(f"{study_dir} is not a study directory (no study.json); run python -m runners.study first")
    record = json.loads(record_path.read_text())
    settings = list(record.get("study", {}).get("settings") or [])
    if not settings or "rates_ff" not in record["study"]:
        raise StudyReportError(f"{study_dir} is a one-rate study (issue 14's design), which this version no longer "
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
        raise StudyReportError(f"{study_dir} has no seeded runs yet (nothing under seeds/)")
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
        raise StudyReportError(f"{results} lacks {', '.join(missing)}; write it with "
                               f"python -m analysis.study_report STUDY_DIR --out {results}")
    runs = pd.read_csv(results / "runs.csv", dtype={"setting": str})
    if "setting" not in runs:
        raise StudyReportError(f"{results}/runs.csv has no setting column: a one-rate study (issue 14's design); "
                               f"this version checks only two-rate studies")
    return runs, pd.read_csv(results / "trials.csv"), json.loads((results / "study.json").read_text())


# --- figures ----------------------------------------------------------------------------


def _save(fig: Any, out: Path, name: str) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = []
    for suffix in ("png", "svg", "pdf"):
        path = out / f"{name}.{suffix}"
        fig.savefig(path, dpi=130, **({"metadata": {"Date": None}} if suffix == "svg" else
                                      {"metadata": {"CreationDate": None}} if suffix == "pdf" else {}))
        paths.append(path)
    plt.close(fig)
    return paths


def tuning_figure(trials: pd.DataFrame, runs: pd.DataFrame, out: Path) -> list[Path]:
    """Every tuning trial's best validation perplexity: schemes down, grid points across, one panel per cell.

    The point each scheme was re-run at is boxed; a diverged trial is marked as such; ``naive``
    has no recurrent rate, so only its ``rec = -`` column is filled.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = ordered(trials.cell, CELL_ORDER)
    ffs = sorted(trials.rate_ff.dropna().unique())
    recs = [math.nan, *sorted(trials.rate_rec.dropna().unique())]
    columns = [(f, r) for f in ffs for r in recs]
    schemes = ordered(trials.scheme, SCHEME_ORDER)
    finite = trials[trials.status == "finished"].best_val_ppl
    low, high = (float(finite.min()), float(finite.quantile(0.9))) if len(finite) else (0.0, 1.0)
    fig, axes = plt.subplots(1, len(cells), figsize=(1.0 + 0.9 * len(columns) * len(cells), 1.2 + 0.5 * len(schemes)),
                             squeeze=False, layout="constrained")
    first = runs[runs.setting == tables.settings_of(runs)[0]] if len(runs) else runs
    image = None
    for ax, cell in zip(axes[0], cells):
        grid = np.full((len(schemes), len(columns)), np.nan)
        for i, scheme in enumerate(schemes):
            rows = trials[(trials.cell == cell) & (trials.scheme == scheme)]
            chosen = first[(first.cell == cell) & (first.scheme == scheme)]
            for j, (f, r) in enumerate(columns):
                hit = rows[np.isclose(rows.rate_ff, f) & (rows.rate_rec.isna() if math.isnan(r) else np.isclose(rows.rate_rec, r))]
                if hit.empty:
                    continue
                t = hit.iloc[0]
                if t.status == "finished":
                    grid[i, j] = t.best_val_ppl
                    ax.text(j, i, f"{t.best_val_ppl:.0f}", ha="center", va="center", fontsize=7)
                else:
                    ax.text(j, i, "div." if t.status == "diverged" else t.status[:4], ha="center", va="center",
                            fontsize=7, color="crimson")
                if len(chosen) and np.isclose(chosen.rate_ff.iloc[0], f) and (
                        (math.isnan(r) and chosen.rate_rec.isna().iloc[0]) or np.isclose(chosen.rate_rec.iloc[0], r)):
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, linewidth=2, edgecolor="black"))
        image = ax.imshow(grid, cmap="viridis_r", vmin=low, vmax=high, aspect="auto")
        ax.set_xticks(range(len(columns)), [f"ff {f:g}\nrec {'-' if math.isnan(r) else f'{r:g}'}" for f, r in columns],
                      fontsize=7)
        ax.set_yticks(range(len(schemes)), schemes, fontsize=8)
        ax.set_title(f"{cell.upper()}: best validation ppl per trial (seed {int(trials.seed.iloc[0])})", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="best validation perplexity")
    return _save(fig, out, "tuning")


def seeds_figure(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Test perplexity of every seeded run: one dot per seed, a bar at the mean, per setting x cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from analysis.plotting import scheme_colour

    settings, cells = tables.settings_of(runs), ordered(runs.cell, CELL_ORDER)
    fig, axes = plt.subplots(len(settings), len(cells), figsize=(5.2 * len(cells), 3.2 * len(settings)),
                             squeeze=False, layout="constrained")
    for row, setting in enumerate(settings):
        for col, cell in enumerate(cells):
            ax = axes[row][col]
            here = runs[(runs.setting == setting) & (runs.cell == cell)]
            schemes = ordered(here.scheme, SCHEME_ORDER)
            for i, scheme in enumerate(schemes):
                done = here[(here.scheme == scheme) & (here.status == "finished")].test_ppl.astype(float)
                jitter = np.linspace(-0.18, 0.18, len(done)) if len(done) else []
                ax.plot(i + np.asarray(jitter), done, "o", markersize=3, alpha=0.7, color=scheme_colour(scheme))
                if len(done):
                    ax.hlines(done.mean(), i - 0.3, i + 0.3, color="black", linewidth=1.2)
                failed = int((here.scheme == scheme).sum() - len(done))
                if failed:
                    ax.annotate(f"{failed} div.", (i, 1.0), xycoords=("data", "axes fraction"), ha="center",
                                va="top", fontsize=7, color="crimson")
            ax.set_xticks(range(len(schemes)), schemes, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{setting}, {cell.upper()}", fontsize=9)
            ax.set_ylabel("test perplexity")
            ax.grid(axis="y", alpha=0.3)
    return _save(fig, out, "seeds")


# --- the page ---------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def job_seconds(runs: pd.DataFrame, trials: pd.DataFrame) -> float:
    """The study's compute as the sum of its runs' own wall times (seeded runs and tuning trials)."""
    return float(sum(pd.to_numeric(frame.get("wall_s", pd.Series(dtype=float)), errors="coerce").fillna(0).sum()
                     for frame in (runs, trials)))


def machine_line(record: dict[str, Any]) -> str:
    m = record["machine"]
    return f"{m['cpu']} ({m.get('vector', '?')}), {m['cores']} cores, torch {m['torch']}, device {m['device']}"


def readme_text(record: dict[str, Any], files: dict[str, str], runs: pd.DataFrame, trials: pd.DataFrame,
                text: str) -> str:
    s = record["study"]
    commands = "\n".join(record.get("commands", []))
    settings = "\n".join(f"  - `{name}`: {record.get('scope', {}).get(name, ', '.join(o) or 'the preset as it is')}"
                         f" (overrides: {' '.join(o) or 'none'})" for name, o in s["settings"].items())
    head = tables.headline(runs)
    return f"""# Study `{record['name']}`: every scheme on one feed-forward footing, two rates tuned, {len(s['seeds'])} seeds, {len(s['settings'])} settings

Generated by `python -m analysis.study_report` from this folder's `runs.csv`, `trials.csv` and
`study.json`; `tests/test_study_results.py` fails if a table here differs from what those files give.

- **Ran with:** `{record['command']}`, then
  `python -m analysis.study_report <output dir>/studies/{record['name']} --out docs/results/{record['name']} --readme README.md`
- **Machine:** {machine_line(record)}; {record['jobs']} commands at a time, each on its share of the cores.
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


README_BLOCKS = ("answer", "headline")


def provenance(record: dict[str, Any], runs: pd.DataFrame, trials: pd.DataFrame) -> str:
    """One line: the command, the machine and the wall time, from ``study.json``."""
    return (f"*{len(runs)} seeded runs and {len(trials)} tuning trials from `{record['command']}`, "
            f"{_duration(record['wall_s'])} on {machine_line(record)}.*\n")


def readme_blocks(record: dict[str, Any], files: dict[str, str], runs: pd.DataFrame, trials: pd.DataFrame,
                  text: str) -> list[tuple[str, str, str]]:
    name = record["name"]
    first = tables.settings_of(runs)[0]
    head = tables.headline(runs)
    table = tables.markdown(tables.headline_display(head[head.setting == first], grid(record)).drop(columns="setting"))
    legend = "Bold: the cell's best scheme on validation. †: a tuned rate on the end of its grid.\n"
    bodies = {"answer": text, "headline": f"{table}\n{legend}\n{provenance(record, runs, trials)}"}
    blocks = []
    for block in README_BLOCKS:
        start, end = f"<!-- {name}:{block} -->", f"<!-- /{name}:{block} -->"
        blocks.append((start, end, f"{start}\n{bodies[block]}{end}"))
    return blocks


def replace_blocks(text: str, blocks: list[tuple[str, str, str]]) -> str:
    for start, end, block in blocks:
        if start not in text or end not in text:
            raise StudyReportError(f"the README has no {start} ... {end} block")
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    return text


def grid(record: dict[str, Any]) -> dict[str, list[float]]:
    """The tuning grid, ``{"ff": rates_ff, "rec": rates_rec}``, from the study record."""
    return {g: record["study"][f"rates_{g}"] for g in ("ff", "rec")}


def rendered(results: Path) -> tuple[dict[str, str], list[tuple[str, str, str]], pd.DataFrame, pd.DataFrame]:
    """Every text file of ``results`` and the README blocks, from its three inputs."""
    runs, trials, record = load(results)
    files = tables.render_tables(runs, grid(record))
    pairs, mc = tables.paired_table(runs), tables.mc_table(runs)
    text = answer(record, tables.headline(runs), pairs, mc, tables.rank_stability(runs), tables.survival(pairs))
    files["README.md"] = readme_text(record, files, runs, trials, text)
    return files, readme_blocks(record, files, runs, trials, text), runs, trials


def render(results: Path, readme: Path | None = None) -> None:
    """Every derived file of ``results``, from its three inputs."""
    files, blocks, runs, trials = rendered(results)
    for name, text in files.items():
        (results / name).write_text(text)
    if len(trials):
        tuning_figure(trials, runs, results)
    seeds_figure(runs, results)
    if readme is not None:
        readme.write_text(replace_blocks(readme.read_text(), blocks))


def check(results: Path, readme: Path | None = None) -> list[str]:
    """The committed files (and README blocks) that differ from what the committed runs give."""
    files, blocks, _, _ = rendered(results)
    stale = [name for name, text in files.items()
             if not (results / name).is_file() or (results / name).read_text() != text]
    stale += [f"{name}.png" for name in FIGURES if not (results / f"{name}.png").is_file()]
    if readme is not None and any(block not in readme.read_text() for _, _, block in blocks):
        stale.append(str(readme))
    return stale


def write_study_report(study_dir: Path, out: Path, readme: Path | None = None) -> Path:
    export(study_dir, out)
    render(out, readme)
    return out / "README.md"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.study_report",
                                     description="The answer, tables, figures and page of a study, and their check.")
    parser.add_argument("path", type=Path, help="the study directory (<output dir>/studies/NAME); with --render or "
                                                "--check, a results directory (docs/results/NAME)")
    parser.add_argument("--out", type=Path, help="where the results go (default: STUDY_DIR/report)")
    parser.add_argument("--readme", type=Path, help="also update (with --check: check) this README's answer and "
                                                    "headline blocks")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--render", action="store_true",
                      help="only re-derive the tables, figures and page from the results directory's CSVs")
    mode.add_argument("--check", action="store_true",
                      help="fail when a committed file differs from what the committed CSVs give")
    args = parser.parse_args(argv)
    if args.out is not None and (args.render or args.check):
        parser.error("--out goes with a study directory, not with --render or --check")
    if not args.path.is_dir():
        print(f"error: {args.path} is not a directory; give a study directory or a results directory", file=sys.stderr)
        return 2
    try:
        if args.check:
            stale = check(args.path, args.readme)
            for name in stale:
                print(f"error: {name} differs from what {args.path}/runs.csv gives; regenerate it with "
                      f"python -m analysis.study_report --render {args.path}"
                      f"{' --readme ' + str(args.readme) if args.readme else ''}", file=sys.stderr)
            return 1 if stale else 0
        if args.render:
            render(args.path, args.readme)
            out = args.path / "README.md"
        else:
            out = write_study_report(args.path, args.out or args.path / "report", args.readme)
    except StudyReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
