"""The scheme x cell (x data) table: what each dropout scheme scores, and how reliably.

    python -m analysis.tables SWEEP_DIR [SWEEP_DIR ...] --out DIR [--cache DIR]
    python -m analysis.tables --wandb [ENTITY/]PROJECT [--group GROUP] --out DIR

writes ``DIR/tables.csv`` (raw numbers, one row per data set, cell, scheme and variant),
``DIR/tables.md`` and ``DIR/tables.html`` (an HTML fragment for the report) and prints
their paths.

One row stands for the runs that differ only in their seed (``analysis.runs.variant_labels``
splits off anything else that varies), so a mean and a standard deviation here are
over seeds and nothing else. Only finished runs are averaged: a diverged or failed run
has no comparable score, so it is counted instead of hidden.
"""

from __future__ import annotations

import argparse
import html
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from analysis.cli_args import add_source_arguments, error_line, print_notes, runs_from_arguments
from analysis.runs import CELL_ORDER, GROUP_KEYS, SCHEME_ORDER, Runs, ordered

DASH = "\u2014"
KEYS = GROUP_KEYS  # one row per data set, cell, scheme and variant: runs that differ only in seed
STATUSES = ("finished", "diverged", "failed")
# (run-table column, table prefix): averaged over the finished runs of a row.
SCORES = (("best_val_ppl", "val"), ("test_ppl", "test"), ("mc_test_ppl", "mc_test"))
# (paper's column in the run table, table column, our mean it is compared with, delta column)
REFERENCES = (("ref_val_ppl", "ref_val", "val_mean", "delta_val"),
              ("ref_test_ppl", "ref_test", "test_mean", "delta_test"),
              ("ref_mc_test_ppl", "ref_mc_test", "mc_test_mean", "delta_mc_test"))
TABLE_COLUMNS = (KEYS + ("n",) + STATUSES
                 + tuple(f"{p}_{s}" for _, p in SCORES for s in ("mean", "sd", "n"))
                 + ("gap_mean", "bayes_test", "bayes_gap")
                 + tuple(ref[1] for ref in REFERENCES) + ("ref_source",)
                 + tuple(ref[3] for ref in REFERENCES))


# --- numbers ----------------------------------------------------------------------------

def _finite(series: pd.Series) -> pd.Series:
    """Floats with inf (a blown-up score) as missing: it has no mean worth printing."""
    values = pd.to_numeric(series, errors="coerce").astype("float64")
    return values.where(np.isfinite(values))


def train_val_gaps(events: pd.DataFrame) -> pd.Series:
    """Per run (indexed by ``run_dir``): validation ppl minus whole-epoch train ppl, at
    the epoch of best validation ppl.

    The best-validation epoch is the model the run reports (its ``best_val_ppl``, and its
    test score unless ``train.test_weights=last``, come from that checkpoint), so the gap there measures the over-fitting of
    the model actually compared; at the last epoch it would also count epochs after the
    optimum. The train ppl is the whole-epoch mean (``scope == "epoch"``), not one
    logging interval's. It is measured with dropout on, so a regularised model can show
    a negative gap.
    """
    if events.empty:
        return pd.Series(dtype="float64", name="gap")
    ppl = _finite(events["ppl"])
    val = events.loc[events["split"].eq("val") & ppl.notna(), ["run_dir", "epoch"]].assign(val=ppl)
    best = val.sort_values("val", kind="stable").drop_duplicates("run_dir")
    train = (events.loc[events["split"].eq("train") & events["scope"].eq("epoch") & ppl.notna(),
                        ["run_dir", "epoch"]].assign(train=ppl)
             .drop_duplicates(["run_dir", "epoch"], keep="last"))
    merged = best.merge(train, on=["run_dir", "epoch"], how="inner")
    return (merged["val"] - merged["train"]).set_axis(merged["run_dir"]).rename("gap")


def _per_run(runs: Runs) -> pd.DataFrame:
    """The run table with what a row aggregates: clean scores, the gap and Bayes excess."""
    table = runs.runs.copy()
    for key in KEYS:
        table[key] = table[key].astype(object).where(table[key].notna(), "")
    for column, _ in SCORES:
        table[column] = _finite(table[column])
    table["gap"] = table["run_dir"].map(train_val_gaps(runs.events)).astype("float64")
    table["bayes_test"] = _finite(table["bayes_test_ppl"])
    table["bayes_gap"] = table["test_ppl"] - table["bayes_test"]
    return table


def scheme_table(runs: Runs) -> pd.DataFrame:
    """One row per (data, cell, scheme, variant), columns ``TABLE_COLUMNS``.

    - ``n`` runs in all; ``finished``/``diverged``/``failed`` by status.
    - ``val_*``, ``test_*``, ``mc_test_*``: mean, sample sd and count over the finished
      runs that have the score. The sd needs two seeds (``ddof=1``; with one run there
      is no estimate of seed-to-seed spread, so it is NaN rather than a misleading 0).
    - ``gap_mean``: mean over finished runs of the train-validation gap (see
      ``train_val_gaps``).
    - ``bayes_test``: mean Bayes-optimal test ppl, known only on the synthetic corpus,
      where it is computed exactly from the generating HMM; ``bayes_gap`` the mean of
      each run's test ppl minus its own corpus's optimum: the excess over the best any
      model could do, which unlike a raw ppl is comparable across corpora.
    - ``ref_*``: the paper's numbers the preset carries (``ref_source`` says where from);
      ``delta_*`` ours minus the paper's, so positive means worse than published.

    ``variant`` is ``""`` unless runs of one data set, cell and scheme differ in more
    than the seed. Rows follow ``SCHEME_ORDER``/``CELL_ORDER``.
    """
    table = _per_run(runs)
    keys = list(KEYS)
    if table.empty:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    grouped = table.groupby(keys, sort=False)
    parts = [grouped.size().rename("n"),
             table.assign(**{s: table["status"].eq(s) for s in STATUSES})
                  .groupby(keys, sort=False)[list(STATUSES)].sum()]
    finished = table[table["status"].eq("finished")].groupby(keys, sort=False)
    for column, prefix in SCORES:
        stats = finished[column].agg(["mean", "std", "count"])
        parts.append(stats.set_axis([f"{prefix}_mean", f"{prefix}_sd", f"{prefix}_n"], axis=1))
    parts.append(finished[["gap", "bayes_test", "bayes_gap"]].mean().rename(columns={"gap": "gap_mean"}))
    refs = grouped[["ref_source"] + [ref[0] for ref in REFERENCES]].first()
    parts.append(refs.rename(columns={ref[0]: ref[1] for ref in REFERENCES}))
    out = pd.concat(parts, axis=1).reset_index()
    for _, ref, ours, delta in REFERENCES:
        out[delta] = out[ours] - out[ref]
    for column in ("n",) + STATUSES + tuple(f"{p}_n" for _, p in SCORES):
        out[column] = out[column].fillna(0).astype("int64")
    return _sorted(out)[list(TABLE_COLUMNS)]


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    rank = {"scheme": ordered(table["scheme"].tolist(), SCHEME_ORDER),
            "cell": ordered(table["cell"].tolist(), CELL_ORDER),
            "data": ordered(table["data"].tolist(), ())}
    order = pd.DataFrame({key: table[key].map({v: i for i, v in enumerate(values)})
                          for key, values in rank.items()}).fillna(-1)
    order["variant"] = table["variant"]
    index = order.sort_values(["data", "cell", "scheme", "variant"], kind="stable").index
    return table.loc[index].reset_index(drop=True)


# --- formatting -------------------------------------------------------------------------

def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def format_score(mean: float, sd: float, n: int, digits: int = 2) -> str:
    """``123.45`` for one run, ``123.45 ± 1.23 (n=3)`` for several, a dash for none.

    One run has no spread to report, so it shows the number alone rather than a fake
    ``± 0``.
    """
    if not n or _missing(mean):
        return DASH
    if n == 1 or _missing(sd) or not math.isfinite(sd):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} \u00b1 {sd:.{digits}f} (n={n})"


def _fixed(value: Any) -> str:
    return DASH if _missing(value) else f"{value:.2f}"


def _signed(value: Any) -> str:
    return DASH if _missing(value) else f"{value:+.2f}"


def _count(value: Any) -> str:
    return DASH if _missing(value) else str(int(value))


def _score(prefix: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: format_score(r[f"{prefix}_mean"], r[f"{prefix}_sd"], r[f"{prefix}_n"])


# (heading, table column it sorts by, formatter of a row, shown only when the column has data)
Column = tuple[str, str, Callable[[dict[str, Any]], str], bool]
NUMERIC: tuple[Column, ...] = (
    ("runs", "n", lambda r: _count(r["n"]), False),
    ("finished", "finished", lambda r: _count(r["finished"]), False),
    ("diverged", "diverged", lambda r: _count(r["diverged"]), False),
    ("failed", "failed", lambda r: _count(r["failed"]), False),
    ("val ppl", "val_mean", _score("val"), False),
    ("test ppl", "test_mean", _score("test"), False),
    ("MC test ppl", "mc_test_mean", _score("mc_test"), True),
    ("train\u2013val gap", "gap_mean", lambda r: _fixed(r["gap_mean"]), False),
    ("Bayes test ppl", "bayes_test", lambda r: _fixed(r["bayes_test"]), True),
    ("gap to Bayes", "bayes_gap", lambda r: _fixed(r["bayes_gap"]), True),
    ("paper val", "ref_val", lambda r: _fixed(r["ref_val"]), True),
    ("\u0394 val", "delta_val", lambda r: _signed(r["delta_val"]), True),
    ("paper test", "ref_test", lambda r: _fixed(r["ref_test"]), True),
    ("\u0394 test", "delta_test", lambda r: _signed(r["delta_test"]), True),
    ("paper MC test", "ref_mc_test", lambda r: _fixed(r["ref_mc_test"]), True),
    ("\u0394 MC test", "delta_mc_test", lambda r: _signed(r["delta_mc_test"]), True),
)


def _text_columns(table: pd.DataFrame) -> list[str]:
    """The key columns worth a column: ``variant`` and ``ref_source`` only when used."""
    keys = ["data", "cell", "scheme"]
    if table["variant"].astype(str).ne("").any():
        keys.append("variant")
    return keys


def _numeric_columns(table: pd.DataFrame) -> list[Column]:
    return [c for c in NUMERIC if not c[3] or table[c[1]].notna().any()]


def _show_source(table: pd.DataFrame) -> bool:
    return table["ref_source"].notna().any()


def _text(value: Any) -> str:
    return DASH if _missing(value) else str(value)


def _raw(value: Any) -> str:
    """The number a client-side sort compares: exact, ``""`` when missing."""
    if _missing(value):
        return ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(float(value))


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table, numbers right-aligned, missing as a dash."""
    texts = _text_columns(table)
    numbers = _numeric_columns(table)
    source = _show_source(table)
    heads = texts + [c[0] for c in numbers] + (["source"] if source else [])
    align = ["---"] * len(texts) + ["---:"] * len(numbers) + (["---"] if source else [])

    def cell(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(heads) + " |", "| " + " | ".join(align) + " |"]
    for record in table.to_dict("records"):
        cells = [_text(record[k]) for k in texts] + [fmt(record) for _, _, fmt, _ in numbers]
        cells += [_text(record["ref_source"])] if source else []
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame) -> str:
    """The Markdown table's cells as a booktabs LaTeX tabular (pandas' ``Styler.to_latex``), for a paper.

    Needs ``\\usepackage{booktabs}``; names with underscores (``state_dropout``) are escaped.
    """
    texts = _text_columns(table)
    numbers = _numeric_columns(table)
    source = _show_source(table)
    rows = []
    for record in table.to_dict("records"):
        cells = [_text(record[k]) for k in texts] + [fmt(record) for _, _, fmt, _ in numbers]
        rows.append(cells + ([_text(record["ref_source"])] if source else []))
    frame = pd.DataFrame(rows, columns=texts + [c[0] for c in numbers] + (["source"] if source else []))
    styler = frame.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    return styler.to_latex(hrules=True, column_format="l" * len(texts) + "r" * len(numbers) + ("l" if source else ""))


def to_csv(table: pd.DataFrame, path: Path | str) -> Path:
    """The raw table (every column, unformatted numbers) for other tools."""
    path = Path(path)
    table.to_csv(path, index=False)
    return path


def to_html(table: pd.DataFrame) -> str:
    """``<table class="sortable" id="scheme-table">``: a fragment for the report.

    Every body row carries ``data-scheme`` and ``data-cell`` (and ``data-dataset``,
    ``data-variant``); every numeric cell a ``data-sort`` holding the raw number
    (``""`` when missing) so that a script can sort by value rather than by the
    formatted ``mean ± sd`` text. All text is escaped; missing values show a dash.
    """
    def e(value: Any) -> str:
        return html.escape(str(value), quote=True)

    texts = _text_columns(table)
    numbers = _numeric_columns(table)
    source = _show_source(table)
    heads = texts + [c[0] for c in numbers] + (["source"] if source else [])
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in heads)
    body = []
    for record in table.to_dict("records"):
        tds = "".join(f"<td>{e(_text(record[k]))}</td>" for k in texts)
        tds += "".join(f'<td class="num" data-sort="{e(_raw(record[column]))}">{e(fmt(record))}</td>'
                       for _, column, fmt, _ in numbers)
        tds += f"<td>{e(_text(record['ref_source']))}</td>" if source else ""
        attrs = (f' data-scheme="{e(record["scheme"])}" data-cell="{e(record["cell"])}"'
                 f' data-dataset="{e(record["data"])}" data-variant="{e(record["variant"])}"')
        body.append(f"<tr{attrs}>{tds}</tr>")
    return (f'<table class="sortable" id="scheme-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>\n')


def write_tables(runs: Runs, out_dir: Path | str) -> dict[str, Path]:
    """``tables.csv``, ``tables.md``, ``tables.html`` and ``tables.tex`` in ``out_dir``; their paths by format."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = scheme_table(runs)
    paths = {"csv": to_csv(table, out_dir / "tables.csv"), "md": out_dir / "tables.md",
             "html": out_dir / "tables.html", "tex": out_dir / "tables.tex"}
    paths["md"].write_text(to_markdown(table), encoding="utf-8")
    paths["html"].write_text(to_html(table), encoding="utf-8")
    paths["tex"].write_text(to_latex(table), encoding="utf-8")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the tables, print their paths; notes go to stderr."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.tables",
        description="The scheme x cell perplexity table as CSV, Markdown and HTML.")
    add_source_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="where tables.csv, tables.md and tables.html are written")
    parser.add_argument("--cache", type=Path, metavar="DIR",
                        help="keep the collected runs as parquet in DIR, reused while the store is unchanged")
    args = parser.parse_args(argv)
    try:
        runs = runs_from_arguments(args, parser, cache=args.cache)
        paths = write_tables(runs, args.out)
    except Exception as e:  # noqa: BLE001 - one line for any failure, W&B's included
        print(error_line(parser.prog, e), file=sys.stderr)
        return 2
    print_notes(runs)
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
