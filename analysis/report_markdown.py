"""The report as Markdown (``report.md``), for a README, a pull request or a lab notebook.

It says what the HTML page says in a form that pastes anywhere: the scheme table, each
figure linked (not embedded, so the file stays small and diffs stay readable) with its
caption and how to read it, a shorter run listing (the ``brief`` columns of
``analysis.runs.RUN_LISTING``) and the commands that reproduce it.
"""

from __future__ import annotations

import html
import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from analysis.provenance import training_commands
from analysis.report_text import TITLE, formatter, plural
from analysis.runs import RUN_LISTING, Runs

if TYPE_CHECKING:  # plotting imports matplotlib; the report imports it only once it has runs
    from analysis.plotting import SavedFigure

__all__ = ["render_markdown"]


def _md_text(value: Any) -> str:
    """User text (run names, messages) as Markdown shows it: as typed, never as HTML or emphasis.

    Markdown passes raw HTML through, so a run named ``<img src=x onerror=...>`` would run
    script in any viewer that renders HTML (issue 25); escaped, it reads as typed, as on the
    HTML page. Markdown's own punctuation is backslash-escaped so no emphasis, link or code
    span starts inside a name.
    """
    return re.sub(r"([\\`*_\[\]])", r"\\\1", html.escape(str(value), quote=False))


def _md_code(value: Any) -> str:
    """A path as a code span that no backtick inside it can close (CommonMark: a longer fence).

    Code spans show HTML as text, so ``<`` needs no escaping here.
    """
    text = str(value).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: no pipe ends the cell, no newline the row."""
    return _md_text(value).replace("|", "\\|").replace("\n", " ")


def _runs_markdown(runs: pd.DataFrame) -> str:
    """The brief run listing; ``variant`` only when some run has one."""
    columns = [c for c in RUN_LISTING if c.brief and c.key in runs.columns
               and (c.key != "variant" or runs["variant"].fillna("").astype(str).ne("").any())]
    formats = [formatter(c) for c in columns]
    lines = ["| " + " | ".join(c.heading for c in columns) + " |",
             "| " + " | ".join("---:" if c.number is not None else "---" for c in columns) + " |"]
    for run in runs.to_dict("records"):
        lines.append("| " + " | ".join(_md_cell(fmt(run[c.key])) for c, fmt in zip(columns, formats)) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(runs: Runs, table_md: str, figures: Sequence[SavedFigure], paths: Sequence[Path],
                    out_dir: Path, command: str = "") -> str:
    """The report as Markdown: the tables, then each figure (linked, not embedded) with
    its caption and how to read it, then the commands."""
    statuses = ", ".join(f"{n} {s}" for s, n in runs.runs["status"].value_counts().items())
    out = [f"# {TITLE}", "",
           f"Built {datetime.now().isoformat(timespec='seconds')} from "
           + ", ".join(_md_code(p) for p in paths)
           + f": {plural(len(runs.runs), 'run')} ({statuses}), "
           + f"{plural(len(runs.skipped), 'job directory')} skipped.", "",
           "## Scheme table", "",
           "Mean ± sample sd over finished seeds (n when several); diverged and failed runs are counted, "
           "not averaged. Lower is better.", "", table_md.rstrip(), "", "## Figures", ""]
    for f in figures:
        png = Path(os.path.relpath(f.path, out_dir)).as_posix()
        others = ", ".join(f"[{p.suffix[1:].upper()}]({Path(os.path.relpath(p, out_dir)).as_posix()})"
                           for p in f.files[1:])
        out += [f"### {f.title}", "", f"![{f.title}]({png})", "", f.caption, ""]
        if f.how_to_read:
            out += [f"*How to read:* {f.how_to_read}", ""]
        if others:
            out += [f"Also as {others}.", ""]
    out += ["## Runs", "", _runs_markdown(runs.runs).rstrip(), ""]
    if runs.skipped:
        out += ["## Skipped job directories", ""] + [f"- {_md_code(n.path)}: {_md_text(n.message)}" for n in runs.skipped] + [""]
    out += ["## Reproduce", "", "```sh", *training_commands(runs.runs), command, "```", ""]
    return "\n".join(out)
