"""One command from a sweep to a self-contained HTML report.

    python -m analysis.report SWEEP_DIR [SWEEP_DIR ...] --out OUT_DIR

writes ``OUT_DIR/index.html`` (perplexity table, figures, every run, skipped job
directories), the figures under ``OUT_DIR/figures/`` and the tables as CSV, and prints
the path of ``index.html``. The page loads nothing from the network, so it can be
mailed, archived with the sweep or opened on a cluster login node.

A path that does not exist or holds no runs is an error (exit status 2, one line on
stderr) and nothing is written: a typo must not produce an empty report that looks
like a result.
"""

from __future__ import annotations

import argparse
import html
import math
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence
from urllib.parse import quote

import pandas as pd

from analysis.collect import CELL_ORDER, Runs, collect, ordered

if TYPE_CHECKING:  # figures imports matplotlib; see _write_report for why it is lazy
    from analysis.figures import SavedFigure

# The perplexity metrics summarised per scheme and cell: (run-table column, heading).
METRICS = (("best_val_ppl", "best val ppl"), ("test_ppl", "test ppl"),
           ("bayes_test_ppl", "Bayes test ppl"))
DASH = "\u2014"


class NoRunsError(ValueError):
    """A path given to the report holds no readable run."""


# --- the perplexity table -------------------------------------------------------------

def row_keys(runs: pd.DataFrame) -> list[str]:
    """What a row of the perplexity table stands for: the scheme, and also the data set
    and the dropout rate when a sweep varies them, so that seeds are the only thing ever
    averaged over."""
    keys = []
    if runs["data"].nunique(dropna=False) > 1:
        keys.append("data")
    keys.append("scheme")
    if (runs.groupby("scheme", dropna=False)["dropout"].nunique(dropna=False) > 1).any():
        keys.append("dropout")
    return keys


def perplexity_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample sd and n of each metric over the *finished* runs of each row and cell.

    Tidy (one row per row key and cell), so it is also the CSV. Diverged and failed runs
    have no comparable score; they are counted in ``runs`` but not in ``finished`` or in
    any ``*_n``, so the report can show "2/3 finished" instead of hiding them.
    """
    keys = row_keys(runs) + ["cell"]
    records: list[dict[str, Any]] = []
    for values, group in runs.groupby(keys, dropna=False, sort=False):
        finished = group[group["status"] == "finished"]
        record: dict[str, Any] = dict(zip(keys, values))
        record["runs"], record["finished"] = len(group), len(finished)
        for metric, _heading in METRICS:
            scores = finished[metric].astype("float64")
            scores = scores[scores.map(math.isfinite)]
            record[f"{metric}_mean"] = scores.mean() if len(scores) else math.nan
            record[f"{metric}_sd"] = scores.std(ddof=1) if len(scores) > 1 else math.nan
            record[f"{metric}_n"] = len(scores)
        records.append(record)
    columns = keys + ["runs", "finished"] + [f"{m}_{s}" for m, _ in METRICS for s in ("mean", "sd", "n")]
    return pd.DataFrame.from_records(records, columns=columns)


def format_score(mean: float, sd: float, n: int) -> str:
    """``123.45`` for one run, ``123.45 ± 1.23 (n=3)`` for several, a dash for none."""
    if not n:
        return DASH
    if n == 1 or not math.isfinite(sd):
        return f"{mean:.2f}"
    return f"{mean:.2f} \u00b1 {sd:.2f} (n={n})"


# --- HTML helpers ---------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _num(fmt: str) -> Callable[[Any], str]:
    return lambda v: DASH if _missing(v) else format(v, fmt)


def _txt(value: Any) -> str:
    return "" if _missing(value) else str(value)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def _key_text(key: str, value: Any) -> str:
    if _missing(value):
        return DASH
    return format(value, "g") if key == "dropout" else str(value)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#222;line-height:1.45;max-width:1200px;margin:2rem auto;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.3rem} h2{font-size:1.2rem;margin-top:2.2rem;
 border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.88rem;margin:.6rem 0}
th,td{border:1px solid #ddd;padding:.3rem .55rem;text-align:left;vertical-align:top}
thead th{background:#f2f4f7;text-align:center} tbody th{background:#fafbfc}
tbody tr:nth-child(even) td{background:#fbfbfb}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.error{max-width:28rem;overflow-wrap:anywhere}
.status-finished{color:#1a7f37}.status-diverged{color:#b35900;font-weight:600}
.status-failed{color:#c62828;font-weight:600}
.wrap{overflow-x:auto} .muted{color:#666} code{background:#f4f4f4;padding:0 .2rem}
figure{margin:1.2rem 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}
""".strip()


def _perplexity_html(table: pd.DataFrame, keys: list[str]) -> str:
    """Rows: scheme (and data/dropout if they vary); column groups: cells."""
    metrics = [(m, h) for m, h in METRICS if table[f"{m}_n"].sum() > 0] or list(METRICS[:2])
    cells = ordered(table["cell"].tolist(), CELL_ORDER)
    # Keyed by the displayed text: NaN (an unknown data set or rate) never equals itself.
    by_key: dict[tuple[tuple[str, ...], str], dict[str, Any]] = {}
    for record in table.to_dict("records"):
        by_key[tuple(_key_text(k, record[k]) for k in keys), record["cell"]] = record
    rows = list(dict.fromkeys(row for row, _cell in by_key))
    width = len(metrics) + 1
    head1 = "".join(f'<th rowspan="2" scope="col">{_e(k)}</th>' for k in keys)
    head1 += "".join(f'<th colspan="{width}" scope="colgroup">{_e(c.upper())}</th>' for c in cells)
    head2 = "".join(f'<th scope="col">{_e(h)}</th>' for _ in cells for _, h in metrics + [("", "finished")])
    body = []
    for row in rows:
        attrs = "".join(f' data-{k}="{_e(v)}"' for k, v in zip(keys, row))
        tds = "".join(f'<th scope="row">{_e(v)}</th>' for v in row)
        for cell in cells:
            record = by_key.get((row, cell))
            for metric, _ in metrics:
                text = DASH if record is None else format_score(
                    record[f"{metric}_mean"], record[f"{metric}_sd"], record[f"{metric}_n"])
                tds += f'<td class="num" data-cell="{_e(cell)}" data-metric="{metric}">{_e(text)}</td>'
            done = DASH if record is None else f'{record["finished"]}/{record["runs"]}'
            tds += f'<td class="num" data-cell="{_e(cell)}" data-metric="finished">{_e(done)}</td>'
        body.append(f"<tr{attrs}>{tds}</tr>")
    return (f'<div class="wrap"><table id="perplexity"><thead><tr>{head1}</tr><tr>{head2}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>')


# (heading, run-table column, formatter, is it a number)
RUN_TABLE = (
    ("run", "run_name", _txt, False), ("scheme", "scheme", _txt, False), ("cell", "cell", _txt, False),
    ("data", "data", _txt, False), ("seed", "seed", _num("d"), True), ("dropout", "dropout", _num("g"), True),
    ("status", "status", _txt, False), ("best val ppl", "best_val_ppl", _num(".2f"), True),
    ("test ppl", "test_ppl", _num(".2f"), True), ("epochs", "epochs", _num("d"), True),
    ("wall s", "wall_s", _num(".0f"), True), ("train tok/s", "train_tokens_per_s", _num(",.0f"), True),
    ("diverged at step", "diverged_step", _num("d"), True), ("error", "error", _txt, False),
)


def _runs_html(runs: pd.DataFrame, out_dir: Path) -> str:
    """Every run with its status and a link to its directory (relative, so it works
    when the report and the sweep are moved together)."""
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h, *_ in RUN_TABLE) + '<th scope="col">directory</th>'
    body = []
    for run in runs.to_dict("records"):
        tds = ""
        for _heading, key, fmt, is_num in RUN_TABLE:
            text = fmt(run[key])
            if key == "status" and not _missing(run["diverged_what"]):
                text += f" ({run['diverged_what']})"
            css = "num" if is_num else {"error": "error", "status": f"status-{run['status']}"}.get(key)
            tds += (f'<td class="{_e(css)}">' if css else "<td>") + f"{_e(text)}</td>"
        href = quote(Path(os.path.relpath(run["run_dir"], out_dir)).as_posix())
        tds += f'<td><a href="{_e(href)}" title="{_e(run["run_dir"])}">{_e(run["rel_dir"])}</a></td>'
        body.append(f'<tr data-run-dir="{_e(run["run_dir"])}">{tds}</tr>')
    return (f'<div class="wrap"><table id="runs"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _notes_html(notes: list, element_id: str, empty: str) -> str:
    if not notes:
        return f'<p id="{element_id}" class="muted">{_e(empty)}</p>'
    items = "".join(f'<li data-path="{_e(n.path)}"><code>{_e(n.path)}</code>: {_e(n.message)}</li>'
                    for n in notes)
    return f'<ul id="{element_id}">{items}</ul>'


def render_html(runs: Runs, table: pd.DataFrame, figures: Sequence[SavedFigure],
                paths: Sequence[Path], out_dir: Path) -> str:
    """The whole page as one string: inline CSS, relative links, no scripts."""
    statuses = runs.runs["status"].value_counts()
    status_text = ", ".join(f"{n} {s}" for s, n in statuses.items())
    sources = ", ".join(f"<code>{_e(p)}</code>" for p in paths)
    figs = "".join(
        f'<figure><img src="{_e(quote(f.path.relative_to(out_dir).as_posix()))}" alt="{_e(f.title)}">'
        f"<figcaption><strong>{_e(f.title)}.</strong> {_e(f.caption)}</figcaption></figure>"
        for f in figures) or '<p class="muted">No learning curves: no run logged metrics.</p>'
    keys = row_keys(runs.runs)
    warnings = ("<h2>Warnings</h2>" + _notes_html(runs.warnings, "warnings", "")) if runs.warnings else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Recurrent dropout benchmark report</title>
<style>
{CSS}
</style>
</head>
<body>
<h1>Recurrent dropout benchmark report</h1>
<p class="muted">Built {_e(datetime.now().isoformat(timespec="seconds"))} from {sources}:
{_plural(len(runs.runs), "run")} ({_e(status_text)}), {_plural(len(runs.skipped), "job directory")} skipped.
Tables as CSV: <a href="runs.csv">runs.csv</a>, <a href="perplexity.csv">perplexity.csv</a>.</p>

<h2>Perplexity</h2>
<p>Per scheme and cell: mean \u00b1 sample standard deviation over the finished runs
(seeds), with n when there are several. <em>finished</em> counts the runs that finished
out of all runs; diverged and failed runs have no test perplexity and are not averaged.</p>
{_perplexity_html(table, keys)}

<h2>Learning curves</h2>
{figs}

<h2>Runs</h2>
{_runs_html(runs.runs, out_dir)}

<h2>Skipped job directories</h2>
{_notes_html(runs.skipped, "skipped", "None: every job directory had a summary.json.")}
{warnings}
</body>
</html>
"""


# --- writing --------------------------------------------------------------------------

def check_has_runs(paths: Sequence[Path], runs: Runs) -> None:
    """Raise ``NoRunsError`` naming the first path under which no run was read."""
    run_dirs = [Path(d) for d in runs.runs["run_dir"]]
    for path in paths:
        root = Path(path).resolve()
        if not any(d == root or d.is_relative_to(root) for d in run_dirs):
            skipped = sum(1 for n in runs.skipped if Path(n.path).is_relative_to(root))
            detail = (f"{_plural(skipped, 'job directory')} without summary.json skipped" if skipped
                      else "no job directory with summary.json or metrics.jsonl")
            raise NoRunsError(f"no runs in {path} ({detail})")


def _write_report(paths: Sequence[Path | str], out_dir: Path | str) -> tuple[Path, Runs]:
    paths = [Path(p) for p in paths]
    out_dir = Path(out_dir)
    if not paths:
        raise NoRunsError("no sweep directory given")
    runs = collect(paths)  # raises before anything is written
    check_has_runs(paths, runs)
    # Imported only now: matplotlib can print to stderr on its first import (font cache),
    # and the error paths above must stay a single line.
    from analysis.figures import write_figures

    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = out_dir.resolve()
    figures = write_figures(runs, out_dir / "figures")
    table = perplexity_table(runs.runs)
    runs.runs.to_csv(out_dir / "runs.csv", index=False)
    table.to_csv(out_dir / "perplexity.csv", index=False)
    index = out_dir / "index.html"
    tmp = out_dir / ".index.html.tmp"
    tmp.write_text(render_html(runs, table, figures, paths, out_dir), encoding="utf-8")
    os.replace(tmp, index)  # a reader never sees half a page
    return index, runs


def write_report(paths: Sequence[Path | str], out_dir: Path | str) -> Path:
    """Write ``out_dir/index.html`` (and figures, CSVs) for the runs under ``paths``.

    Raises ``FileNotFoundError``/``NotADirectoryError`` for a missing path and
    ``NoRunsError`` for a path holding no run, in both cases before writing anything.
    Returns the path of ``index.html``.
    """
    return _write_report(paths, out_dir)[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the report's path; skipped directories go to stderr as warnings."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Build an offline HTML report (tables, learning curves) from run-store sweeps.")
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR",
                        help="a sweep directory (job directories at any depth) or one job directory")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT_DIR",
                        help="where index.html, figures/ and the CSV tables are written")
    args = parser.parse_args(argv)
    try:
        index, runs = _write_report(args.sweep_dirs, args.out)
    except (OSError, NoRunsError) as e:
        message = " ".join(str(e).split())  # exactly one line, whatever the path holds
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    for note in runs.skipped:
        print(f"warning: skipped {note}", file=sys.stderr)
    for note in runs.warnings:
        print(f"warning: {note}", file=sys.stderr)
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
