"""The one-rate study's report (issue 14's design), kept only to check the results it published.

Issue 22 replaced that design (one rate over each scheme's own sites, the best scheme picked on
test, uncorrected t-tests) with ``analysis.study``. ``docs/results/study_cpu`` still holds the
one-rate study until the fair study is published there; this module renders and checks it,
and goes with it:

    python -m analysis.study_v1 --check docs/results/study_cpu --readme README.md

The first form reads a study's run stores (``runners.study`` writes them) and writes, in
``--out``: ``runs.csv`` (the seeded runs that are compared), ``trials.csv`` (the tuning
trials), ``study.json`` (commands, machine, wall time), then everything derived from those
three files: ``headline.{md,csv,tex}``, ``paired.{md,csv,tex}``, ``ppl_vs_rate.{png,svg,pdf}``
and ``README.md``. With ``--readme`` it also puts the headline table into the README
between ``<!-- <name>:headline -->`` markers, and the paired table between
``<!-- <name>:paired -->`` markers.

``--check`` renders the tables again from the committed CSVs and fails (exit 1) when a
committed table, or the README's copy, differs: a number edited by hand cannot pass.

The statistics follow issue 14. Per scheme x cell: mean and sd of the test perplexity over
the finished seeds, and a 95 % t interval. Against ``none`` and against the cell's best
scheme: a paired comparison over the seeds both finished (the same seed gives both runs the
same initialisation and data order), with the mean difference, its 95 % t interval, a
two-sided paired t-test's p-value and how many seeds the scheme won. A diverged run is
counted as diverged in every table, never dropped silently.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.runs import CELL_ORDER, SCHEME_ORDER, ordered
from analysis.store_reader import collect

SEEDED_RUN_COLUMNS = ["scheme", "cell", "dropout", "seed", "status", "best_val_ppl", "test_ppl", "epochs",
               "diverged_step", "wall_s", "train_tokens_per_s"]
TRIAL_COLUMNS = ["scheme", "cell", "dropout", "seed", "status", "best_val_ppl", "diverged_step", "wall_s"]
INPUTS = ("runs.csv", "trials.csv", "study.json")
TABLES = ("headline.md", "headline.csv", "headline.tex", "paired.md", "paired.csv", "paired.tex")


class StudyReportError(ValueError):
    """A study directory or results directory that cannot be reported."""


# --- statistics -------------------------------------------------------------------------


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The t interval for the mean of ``values`` (NaN with fewer than 2 values)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Mean, sd (n - 1) and 95 % interval of the finished seeds' test perplexities."""
    x = np.asarray(values, dtype=float)
    low, high = t_interval(x)
    return {"n": len(x), "mean": float(x.mean()) if len(x) else math.nan,
            "sd": float(x.std(ddof=1)) if len(x) > 1 else math.nan, "ci_low": low, "ci_high": high}


def paired(a: pd.Series, b: pd.Series) -> dict[str, float]:
    """``a - b`` over the seeds where both finished: mean, 95 % interval, paired t-test p, wins of a.

    Both series are indexed by seed. Pairing removes what the seed decides (initialisation,
    data order, masks' stream) from the comparison, which is why the study re-runs every
    scheme with the same seeds.
    """
    from scipy import stats

    both = pd.concat([a, b], axis=1, keys=["a", "b"]).dropna()
    d = (both["a"] - both["b"]).to_numpy(dtype=float)
    low, high = t_interval(d)
    p = float(stats.ttest_rel(both["a"], both["b"]).pvalue) if len(d) > 1 and d.std() > 0 else math.nan
    return {"pairs": len(d), "diff": float(d.mean()) if len(d) else math.nan, "diff_low": low,
            "diff_high": high, "p": p, "wins": int((d < 0).sum())}


# --- reading a study --------------------------------------------------------------------


def _frame(root: Path, columns: list[str]) -> pd.DataFrame:
    runs = collect([root]).runs
    for column in columns:
        if column not in runs:
            runs[column] = math.nan
    frame = runs[columns].copy()
    frame["scheme"] = pd.Categorical(frame["scheme"], ordered(frame["scheme"], SCHEME_ORDER), ordered=True)
    frame["cell"] = pd.Categorical(frame["cell"], ordered(frame["cell"], CELL_ORDER), ordered=True)
    frame = frame.sort_values(["cell", "scheme", "dropout", "seed"]).reset_index(drop=True)
    frame["scheme"] = frame["scheme"].astype(str)
    frame["cell"] = frame["cell"].astype(str)
    return frame


def export(study_dir: Path, out: Path) -> None:
    """The study's three inputs, from its run stores, into ``out``."""
    record_path = study_dir / "study.json"
    if not record_path.is_file():
        raise StudyReportError(f"{study_dir} is not a study directory (no study.json); "
                               f"run python -m runners.study first")
    if not (study_dir / "seeds").is_dir():
        raise StudyReportError(f"{study_dir} has no seeded runs yet (no seeds/ folder)")
    out.mkdir(parents=True, exist_ok=True)
    _frame(study_dir / "seeds", SEEDED_RUN_COLUMNS).to_csv(out / "runs.csv", index=False)
    tune = study_dir / "tune"
    trials = _frame(tune, TRIAL_COLUMNS) if tune.is_dir() else pd.DataFrame(columns=TRIAL_COLUMNS)
    trials.to_csv(out / "trials.csv", index=False)
    (out / "study.json").write_text(record_path.read_text())


def load(results: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    missing = [name for name in INPUTS if not (results / name).is_file()]
    if missing:
        raise StudyReportError(f"{results} lacks {', '.join(missing)}; write it with "
                               f"python -m analysis.study STUDY_DIR --out {results}")
    return (pd.read_csv(results / "runs.csv"), pd.read_csv(results / "trials.csv"),
            json.loads((results / "study.json").read_text()))


# --- tables -----------------------------------------------------------------------------


def _test_ppl(runs: pd.DataFrame, scheme: str, cell: str) -> pd.Series:
    rows = runs[(runs.scheme == scheme) & (runs.cell == cell)]
    finished = rows[rows.status == "finished"]
    return finished.set_index("seed")["test_ppl"].astype(float)


def best_schemes(runs: pd.DataFrame) -> dict[str, str]:
    """Per cell, the scheme with the lowest mean test perplexity among those whose seeds all finished."""
    best: dict[str, str] = {}
    for cell, rows in runs.groupby("cell", sort=False):
        complete = rows.groupby("scheme").filter(lambda g: (g.status == "finished").all())
        if not complete.empty:
            best[str(cell)] = str(complete.groupby("scheme")["test_ppl"].mean().idxmin())
    return best


def headline(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell x scheme, best first within a cell."""
    rows = []
    best = best_schemes(runs)
    for cell in ordered(runs.cell, CELL_ORDER):
        none = _test_ppl(runs, "none", cell)
        for scheme in ordered(runs[runs.cell == cell].scheme, SCHEME_ORDER):
            group = runs[(runs.cell == cell) & (runs.scheme == scheme)]
            ppl = _test_ppl(runs, scheme, cell)
            s = summarise(ppl.to_numpy())
            vs_none = paired(ppl, none) if scheme != "none" else {}
            rate = group.dropout.iloc[0] if scheme != "none" else math.nan
            rows.append({"cell": cell, "scheme": scheme, "rate": rate, "seeds": len(group),
                         "finished": int((group.status == "finished").sum()),
                         "diverged": int((group.status == "diverged").sum()),
                         "test_mean": s["mean"], "test_sd": s["sd"], "test_ci_low": s["ci_low"],
                         "test_ci_high": s["ci_high"],
                         "val_mean": float(group[group.status == "finished"].best_val_ppl.mean()),
                         "vs_none_diff": vs_none.get("diff", math.nan),
                         "vs_none_low": vs_none.get("diff_low", math.nan),
                         "vs_none_high": vs_none.get("diff_high", math.nan),
                         "vs_none_p": vs_none.get("p", math.nan), "best": best.get(cell) == scheme})
    table = pd.DataFrame(rows)
    table["_order"] = table.test_mean.fillna(math.inf)
    return table.sort_values(["cell", "_order"], key=lambda c: c.map(CELL_ORDER.index) if c.name == "cell" else c,
                             kind="stable").drop(columns="_order").reset_index(drop=True)


def paired_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every scheme against ``none`` and against its cell's best scheme, paired over seeds."""
    rows = []
    best = best_schemes(runs)
    for cell in ordered(runs.cell, CELL_ORDER):
        for scheme in ordered(runs[runs.cell == cell].scheme, SCHEME_ORDER):
            for reference in ("none", best.get(cell)):
                if scheme == "none" or reference is None or reference == scheme:
                    continue
                r = paired(_test_ppl(runs, scheme, cell), _test_ppl(runs, reference, cell))
                rows.append({"cell": cell, "scheme": scheme, "against": reference, **r})
    return pd.DataFrame(rows, columns=["cell", "scheme", "against", "pairs", "diff", "diff_low", "diff_high",
                                       "p", "wins"])


def _f(value: Any, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _signed(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:+.{digits}f}"


def _interval(low: float, high: float, signed: bool = False) -> str:
    fmt = _signed if signed else _f
    return "-" if math.isnan(low) else f"[{fmt(low)}, {fmt(high)}]"


def _difference(diff: float, low: float, high: float) -> str:
    """``-29.2 [-36.2, -22.2]``; ``no finished pair`` when one side never finished."""
    if math.isnan(diff):
        return "no finished pair"
    return f"{_signed(diff)} {_interval(low, high, True)}"


def headline_markdown(table: pd.DataFrame) -> str:
    lines = ["| cell | scheme | rate | test ppl, mean ± sd | 95 % CI | vs none: Δ ppl [95 % CI] | p | finished |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in table.itertuples():
        name = f"**{r.scheme}**" if r.best else r.scheme
        score = "diverged" if r.finished == 0 else f"{_f(r.test_mean)} ± {_f(r.test_sd)}"
        status = f"{r.finished}/{r.seeds}" + (f" ({r.diverged} diverged)" if r.diverged else "")
        vs = "" if r.scheme == "none" else _difference(r.vs_none_diff, r.vs_none_low, r.vs_none_high)
        lines.append(f"| {r.cell} | {name} | {'' if r.scheme == 'none' else _f(r.rate, 2)} | {score} | "
                     f"{_interval(r.test_ci_low, r.test_ci_high)} | {vs} | {'' if r.scheme == 'none' else _p(r.vs_none_p)} | "
                     f"{status} |")
    return "\n".join(lines) + "\n"


def paired_markdown(table: pd.DataFrame) -> str:
    lines = ["| cell | scheme | against | Δ test ppl, mean [95 % CI] | p (paired t) | seeds won | pairs |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in table.itertuples():
        lines.append(f"| {r.cell} | {r.scheme} | {r.against} | {_difference(r.diff, r.diff_low, r.diff_high)} "
                     f"| {_p(r.p)} | {r.wins}/{r.pairs} | {r.pairs} |")
    return "\n".join(lines) + "\n"


def _csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, float_format="%.6g")


def _latex(table: pd.DataFrame, caption: str) -> str:
    """booktabs LaTeX through pandas' Styler, for a paper (issue 15)."""
    whole = ("seeds", "finished", "diverged", "pairs", "wins")
    formats = {c: ("{:.3g}" if c.endswith("p") else "{:.1f}") for c in table.select_dtypes("number").columns
               if c not in whole}
    styler = table.style.format(formats, na_rep="--", escape="latex").format_index(escape="latex", axis=1)
    return styler.hide(axis="index").to_latex(hrules=True, caption=caption, position_float="centering")


def render_tables(runs: pd.DataFrame) -> dict[str, str]:
    """Every table file's text, from the seeded runs alone."""
    head, pairs = headline(runs), paired_table(runs)
    return {"headline.md": headline_markdown(head), "headline.csv": _csv(head),
            "headline.tex": _latex(head, "Test perplexity over seeds at each scheme's tuned rate."),
            "paired.md": paired_markdown(pairs), "paired.csv": _csv(pairs),
            "paired.tex": _latex(pairs, "Paired differences in test perplexity over seeds.")}


# --- the figure -------------------------------------------------------------------------


def rate_figure(trials: pd.DataFrame, runs: pd.DataFrame, out: Path) -> list[Path]:
    """Best validation perplexity against the dropout rate: one curve per scheme, one panel per cell.

    The rate each scheme was compared at is circled; a rate whose run diverged is an x on the
    panel's top edge; ``none`` (no rate) is the dashed line, its mean over the seeded runs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.plotting import scheme_colour

    cells = ordered(trials.cell, CELL_ORDER)
    fig, axes = plt.subplots(1, len(cells), figsize=(5.0 * len(cells) + 1.6, 4.4), squeeze=False,
                             layout="constrained")
    colours = plt.get_cmap("tab10")
    schemes = ordered(trials.scheme, SCHEME_ORDER)
    finite = trials[trials.status == "finished"].best_val_ppl
    none_val = runs[(runs.scheme == "none") & (runs.status == "finished")].groupby("cell").best_val_ppl.mean()
    top = float(max(finite.max(), none_val.max() if len(none_val) else 0) * 1.08) if len(finite) else 1.0
    bottom = float(finite.min() * 0.95) if len(finite) else 0.0
    for ax, cell in zip(axes[0], cells):
        for scheme in schemes:
            rows = trials[(trials.cell == cell) & (trials.scheme == scheme)].sort_values("dropout")
            if rows.empty:
                continue
            # a scheme the suite does not ship: the reports' colour for it (their fallback palette, none
            # of it among the eight tab10 colours above), not a tab10 entry another scheme may hold
            colour = colours(SCHEME_ORDER.index(scheme) % 10) if scheme in SCHEME_ORDER else scheme_colour(scheme)
            ok = rows[rows.status == "finished"]
            ax.plot(ok.dropout, ok.best_val_ppl, "o-", color=colour, label=scheme, markersize=4)
            bad = rows[rows.status != "finished"]
            if len(bad):  # an empty unclipped line would stretch the layout to the figure's origin
                ax.plot(bad.dropout, [top] * len(bad), "x", color=colour, markersize=8, clip_on=False)
            chosen = runs[(runs.cell == cell) & (runs.scheme == scheme)].dropout
            if len(chosen):
                at = ok[np.isclose(ok.dropout, chosen.iloc[0])]
                ax.plot(at.dropout, at.best_val_ppl, "o", markersize=11, markerfacecolor="none", color=colour)
        if cell in none_val:
            ax.axhline(none_val[cell], color="black", linestyle="--", linewidth=1, label="none (seeds' mean)")
        ax.set_ylim(bottom, top)
        ax.set_xticks(sorted(trials.dropout.unique()))
        ax.set_title(f"{cell.upper()}: tuning trials (seed {int(trials.seed.iloc[0])})")
        ax.set_xlabel("dropout rate")
        ax.set_ylabel("best validation perplexity")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    # how to read it (circled: the rate re-run with seeds; x: diverged) is in the page's caption
    paths = []
    for suffix in ("png", "svg", "pdf"):
        path = out / f"ppl_vs_rate.{suffix}"
        fig.savefig(path, dpi=130, **({"metadata": {"Date": None}} if suffix == "svg" else {}))
        paths.append(path)
    plt.close(fig)
    return paths


# --- the page ---------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def readme_text(record: dict[str, Any], tables: dict[str, str], runs: pd.DataFrame, trials: pd.DataFrame) -> str:
    m = record["machine"]
    s = record["study"]
    commands = "\n".join(record.get("commands", []))
    return f"""# Study `{record['name']}`: every scheme at its tuned rate, {len(s['seeds'])} seeds

Generated by `python -m analysis.study` from this folder's `runs.csv`, `trials.csv` and
`study.json`; `tests/test_study_results.py` fails if a table here differs from what those
files give.

- **Ran with:** `{record['command']}`, then
  `python -m analysis.study outputs/studies/{record['name']} --out docs/results/{record['name']} --readme README.md`
- **Machine:** {m['cpu']} ({m.get('vector', '?')}), {m['cores']} cores, torch {m['torch']}, device {m['device']};
  {record['jobs']} commands at a time, each on its share of the cores.
- **Wall time:** {_duration(record['wall_s'])} for {len(trials)} tuning trials and {len(runs)} seeded runs
  ({record.get('invocations', 1)} invocation(s) of the study command).
- **Protocol:** each scheme's dropout rate tuned on the grid {s['rates']} (validation split,
  seed {s['tuning_seed']}, the same budget for every scheme); the best rate re-run with seeds
  {s['seeds']}, compared on the test split. Same seed = same initialisation and data order.

## Test perplexity at the tuned rate

Best scheme per cell in bold (lowest mean among schemes whose seeds all finished). Δ is the
paired difference to `none` over seeds (negative: better than no dropout), with a 95 % t interval
and a two-sided paired t-test.

{tables['headline.md']}
## Paired comparisons: against `none` and against the best scheme

{tables['paired.md']}
## Validation perplexity against the dropout rate

![best validation perplexity against the dropout rate](ppl_vs_rate.png)

Every tuning trial; the circled point is the rate re-run with seeds. Also as
[SVG](ppl_vs_rate.svg) and [PDF](ppl_vs_rate.pdf); the tables as LaTeX
([headline.tex](headline.tex), [paired.tex](paired.tex)) and CSV.

## The commands the study ran

```
{commands}
```
"""


README_BLOCKS = ("headline", "paired")


def provenance(record: dict[str, Any], runs: pd.DataFrame, trials: pd.DataFrame) -> str:
    """One line: the command, the machine and the wall time, from ``study.json``."""
    m = record["machine"]
    return (f"*{len(runs)} seeded runs and {len(trials)} tuning trials from `{record['command']}`, "
            f"{_duration(record['wall_s'])} on {m['cpu']} ({m.get('vector', '?')}), {m['cores']} cores, "
            f"torch {m['torch']}, device {m['device']}.*\n")


def readme_block(name: str, table: str, tables: dict[str, str], note: str = "") -> tuple[str, str, str]:
    """The README's copy of one table, between markers the report command finds again."""
    start, end = f"<!-- {name}:{table} -->", f"<!-- /{name}:{table} -->"
    return start, end, f"{start}\n{tables[table + '.md']}{note and chr(10) + note}{end}"


def readme_blocks(record: dict[str, Any], tables: dict[str, str], runs: pd.DataFrame,
                  trials: pd.DataFrame) -> list[tuple[str, str, str]]:
    note = provenance(record, runs, trials)
    return [readme_block(record["name"], table, tables, note if table == "headline" else "")
            for table in README_BLOCKS]


def replace_blocks(text: str, blocks: list[tuple[str, str, str]]) -> str:
    for start, end, block in blocks:
        if start not in text or end not in text:
            raise StudyReportError(f"the README has no {start} ... {end} block")
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    return text


def render(results: Path, readme: Path | None = None) -> None:
    """Every derived file of ``results``, from its three inputs."""
    runs, trials, record = load(results)
    tables = render_tables(runs)
    for name, text in tables.items():
        (results / name).write_text(text)
    rate_figure(trials, runs, results)
    (results / "README.md").write_text(readme_text(record, tables, runs, trials))
    if readme is not None:
        readme.write_text(replace_blocks(readme.read_text(), readme_blocks(record, tables, runs, trials)))


def check(results: Path, readme: Path | None = None) -> list[str]:
    """The committed tables (and README block) that differ from what the committed runs give."""
    runs, trials, record = load(results)
    tables = render_tables(runs)
    expected = {**tables, "README.md": readme_text(record, tables, runs, trials)}  # the page holds the tables too
    stale = [name for name, text in expected.items()
             if not (results / name).is_file() or (results / name).read_text() != text]
    if readme is not None:
        text = readme.read_text()
        if any(block not in text for _, _, block in readme_blocks(record, tables, runs, trials)):
            stale.append(str(readme))
    return stale


def write_study_report(study_dir: Path, out: Path, readme: Path | None = None) -> Path:
    export(study_dir, out)
    render(out, readme)
    return out / "README.md"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.study_v1",
                                     description="Tables, paired statistics and the rate figure of a study.")
    parser.add_argument("path", type=Path, help="the study directory (outputs/studies/NAME); with --render or "
                                                "--check, a results directory (docs/results/NAME)")
    parser.add_argument("--out", type=Path, help="where the results go (default: STUDY_DIR/report)")
    parser.add_argument("--readme", type=Path, help="also update (with --check: check) this README's headline block")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--render", action="store_true",
                      help="only re-derive the tables, figure and page from the results directory's CSVs")
    mode.add_argument("--check", action="store_true",
                      help="fail when a committed table differs from what the committed CSVs give")
    args = parser.parse_args(argv)
    if args.out is not None and (args.render or args.check):
        parser.error("--out goes with a study directory, not with --render or --check")
    try:
        if args.check:
            stale = check(args.path, args.readme)
            for name in stale:
                print(f"error: {name} differs from what {args.path}/runs.csv gives; regenerate it with "
                      f"python -m analysis.study --render {args.path}"
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
