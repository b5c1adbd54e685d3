"""The sweep report: one self-contained HTML page, the same in Markdown, and the figures.

    python -m analysis.report SWEEP_DIR [SWEEP_DIR ...] --out OUT_DIR

writes

- ``OUT_DIR/index.html``: the local dashboard. Summary counts, the scheme table, every
  figure with how to read it, every run (status, scores, its directory, its W&B page
  when it has one), skipped job directories, and the commands and configs that produced
  the runs. Tables sort by clicking a column header; checkboxes filter rows by scheme
  and cell. Figures are embedded as ``data:`` URIs and the CSS and script are inline,
  so the one file works when mailed, archived or opened on a cluster login node; a
  Content-Security-Policy forbids the page any network request.
- ``OUT_DIR/report.md``: tables, figure links and captions, for a README or a PR.
- ``OUT_DIR/figures/``: every figure as PNG, and as SVG and PDF for papers.
- ``OUT_DIR/runs.csv`` (one row per run) and ``tables.csv``/``tables.md``/``tables.html``
  (the scheme table, from ``analysis.tables``), and ``tables.tex`` (booktabs LaTeX).

A path that does not exist or holds no runs is an error (exit status 2, one line on
stderr) and nothing is written: a typo must not produce an empty report that looks
like a result.

This module is the command line and the order of writing; the parts live beside it:
``analysis.report_html`` (the page, its CSS and script as package data in
``analysis/assets/``), ``analysis.report_markdown`` (report.md), ``analysis.provenance``
(the commands and configs that made the runs) and ``analysis.report_text`` (how both
formats write a value). The names they export are importable from here as before.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from analysis.cli_args import error_line, print_notes
from analysis.provenance import (job_commands, report_command, run_configs, split_configs, sweep_command,
                                 sweep_files)
from analysis.report_html import CSP, render_html
from analysis.report_markdown import render_markdown
from analysis.report_text import DASH, TITLE, plural
from analysis.runs import Runs
from analysis.store_reader import collect
from analysis.tables import format_score, scheme_table, to_html, to_markdown, write_tables

if TYPE_CHECKING:  # figures imports matplotlib; see _write_report for why it is lazy
    from analysis.plotting import SavedFigure

# What other code imports from here; the renderers and provenance are re-exported so that
# ``from analysis.report import render_html`` keeps working after the split.
__all__ = ["CSP", "DASH", "NoRunsError", "TITLE", "check_has_runs", "format_score", "job_commands",
           "main", "render_html", "render_markdown", "report_command", "run_configs", "split_configs",
           "sweep_command", "sweep_files", "write_report"]


class NoRunsError(ValueError):
    """A path given to the report holds no readable run."""


# --- writing --------------------------------------------------------------------------

def check_has_runs(paths: Sequence[Path], runs: Runs) -> None:
    """Raise ``NoRunsError`` naming the first path under which no run was read."""
    run_dirs = [Path(d) for d in runs.runs["run_dir"]]
    for path in paths:
        root = Path(path).resolve()
        if not any(d == root or d.is_relative_to(root) for d in run_dirs):
            skipped = sum(1 for n in runs.skipped if Path(n.path).is_relative_to(root))
            detail = (f"{plural(skipped, 'job directory')} without summary.json skipped" if skipped
                      else "no job directory with summary.json or metrics.jsonl")
            raise NoRunsError(f"no runs in {path} ({detail})")


def _atomic_write(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a page."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a page


def _remove_stale(fig_dir: Path, figures: Sequence[SavedFigure]) -> None:
    """Drop figure files an earlier report left that this one did not write, so that
    ``figures/`` never shows a figure of other runs."""
    keep = {p.resolve() for f in figures for p in (f.files or (f.path,))}
    for path in fig_dir.glob("*"):
        if path.suffix in (".png", ".svg", ".pdf") and path.resolve() not in keep:
            path.unlink()


def _write_report(paths: Sequence[Path | str], out_dir: Path | str) -> tuple[Path, Runs]:
    """Collect, check, then write every file; returns ``index.html`` and what was read."""
    paths = [Path(p) for p in paths]
    given_out = Path(out_dir)
    if not paths:
        raise NoRunsError("no sweep directory given")
    runs = collect(paths)  # raises before anything is written
    check_has_runs(paths, runs)
    # Imported only now: matplotlib can print to stderr on its first import (font cache),
    # and the error paths above must stay a single line.
    from analysis.figures import write_figures

    given_out.mkdir(parents=True, exist_ok=True)
    out_dir = given_out.resolve()
    figures = write_figures(runs, out_dir / "figures")
    _remove_stale(out_dir / "figures", figures)
    table = scheme_table(runs)
    write_tables(runs, out_dir)
    runs.runs.to_csv(out_dir / "runs.csv", index=False)
    command = report_command(paths, given_out)
    _atomic_write(out_dir / "report.md", render_markdown(runs, to_markdown(table), figures, paths, out_dir, command))
    index = out_dir / "index.html"
    _atomic_write(index, render_html(runs, to_html(table), figures, paths, out_dir, command))
    return index, runs


def write_report(paths: Sequence[Path | str], out_dir: Path | str) -> Path:
    """Write ``out_dir/index.html`` (and report.md, figures, CSVs) for the runs under ``paths``.

    Raises ``FileNotFoundError``/``NotADirectoryError`` for a missing path and
    ``NoRunsError`` for a path holding no run, in both cases before writing anything.
    Returns the path of ``index.html``.
    """
    return _write_report(paths, out_dir)[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the report's path; skipped directories go to stderr as warnings."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Build an offline HTML report (tables, figures, runs, commands) from run-store sweeps.")
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR",
                        help="a sweep directory (job directories at any depth) or one job directory")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT_DIR",
                        help="where index.html, report.md, figures/ and the CSV tables are written")
    args = parser.parse_args(argv)
    try:
        index, runs = _write_report(args.sweep_dirs, args.out)
    except (OSError, NoRunsError) as e:
        print(error_line(parser.prog, e), file=sys.stderr)  # exactly one line, whatever the path holds
        return 2
    print_notes(runs)
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
