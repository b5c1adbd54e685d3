"""The report as one self-contained HTML page: the local dashboard of a sweep.

The page must work mailed, archived or opened on a cluster login node, so it is one file
that loads nothing: figures are ``data:`` URIs, and the style sheet and the script
(``analysis/assets/report.css`` and ``report.js``, package data) are inlined byte for
byte, which the Content-Security-Policy ``CSP`` allows while forbidding any network
request. The assets are files rather than Python strings so that they can be read,
linted and diffed as CSS and JavaScript.

The script sorts any ``table.sortable`` (multi-row headers included: a header's column
is found through the rowspan/colspan grid), numerically through each cell's
``data-sort``, and filters every body row carrying ``data-scheme`` (and ``data-cell``),
in any table, from the checkboxes in ``#filters``. The markup here is what it relies on.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
import os
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence
from urllib.parse import quote

import pandas as pd

from analysis.provenance import run_configs, split_configs, sweep_files, training_commands, varying_shown, yaml_text
from analysis.report_text import DASH, TITLE, formatter, missing, text
from analysis.runs import CELL_ORDER, RUN_LISTING, SCHEME_ORDER, Runs, column, is_local, ordered

if TYPE_CHECKING:  # plotting imports matplotlib; the report imports it only once it has runs
    from analysis.plotting import SavedFigure

__all__ = ["ASSETS", "CSP", "asset", "render_html"]

# The page may load nothing: images are data URIs, style and script inline.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")
ASSETS = "assets"  # under the analysis package: report.css, report.js


@functools.cache
def asset(name: str) -> str:
    """An asset file's text exactly as shipped (read as bytes: no newline translation),
    from the installed package whether or not it was installed with ``-e``."""
    return resources.files("analysis").joinpath(ASSETS, name).read_bytes().decode("utf-8")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _sort_key(value: Any) -> str:
    """The raw number a client-side sort compares, ``""`` when missing."""
    if missing(value):
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return repr(number) if math.isfinite(number) else ""


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _rel(path: Path, out_dir: Path) -> str:
    return quote(Path(os.path.relpath(path, out_dir)).as_posix())


def _filters_html(runs: pd.DataFrame) -> str:
    """Checkboxes for every scheme and cell in the runs, each scheme with its colour."""
    from analysis.plotting import scheme_colour

    schemes = ordered(runs["scheme"].dropna().tolist(), SCHEME_ORDER)
    cells = ordered(runs["cell"].dropna().tolist(), CELL_ORDER)
    scheme_boxes = "".join(
        f'<label><input type="checkbox" data-filter="scheme" value="{_e(s)}" checked>'
        f'<span class="swatch" style="background:{_e(scheme_colour(s))}"></span>{_e(s)}</label>'
        for s in schemes)
    cell_boxes = "".join(f'<label><input type="checkbox" data-filter="cell" value="{_e(c)}" checked>'
                         f'{_e(c.upper() if c in CELL_ORDER else c)}</label>' for c in cells)
    return (f'<div id="filters" role="region" aria-label="table filters">'
            f'<fieldset><legend>Schemes</legend>{scheme_boxes}</fieldset>'
            f'<fieldset><legend>Cells</legend>{cell_boxes}</fieldset>'
            f'<span><button type="button" data-select="all">all</button> '
            f'<button type="button" data-select="none">none</button></span>'
            f'<span id="filter-count" class="muted"></span></div>')


def _summary_html(runs: Runs) -> str:
    table = runs.runs
    statuses = table["status"].value_counts()
    cards = [("runs", len(table))] + [(s, int(statuses.get(s, 0))) for s in ("finished", "diverged", "failed")]
    cards += [(s, int(n)) for s, n in statuses.items() if s not in ("finished", "diverged", "failed")]
    cards += [("skipped dirs", len(runs.skipped)), ("schemes", table["scheme"].nunique()),
              ("cells", table["cell"].nunique()), ("seeds", table["seed"].nunique())]
    html_cards = "".join(f'<div class="card" data-count="{_e(name)}"><b>{n}</b>{_e(name)}</div>'
                         for name, n in cards)
    stopped = table[table["status"] != "finished"]
    lines = []
    for run in stopped.to_dict("records"):
        where = f" at step {run['diverged_step']}" if not missing(run.get("diverged_step")) else ""
        what = f" ({run['diverged_what']})" if not missing(run.get("diverged_what")) else ""
        lines.append(f"<li><code>{_e(run['run_name'])}</code>: {_e(run['status'])}{_e(where)}{_e(what)}</li>")
    stopped_html = f"<p>Runs that did not finish:</p><ul>{''.join(lines)}</ul>" if lines else ""
    return f'<div class="cards">{html_cards}</div>{stopped_html}'


def _figures_html(figures: Sequence[SavedFigure], out_dir: Path) -> str:
    if not figures:
        return '<p class="muted">No figures: no run logged metrics.</p>'
    parts = []
    for f in figures:
        links = " \u00b7 ".join(f'<a href="{_e(_rel(p, out_dir))}">{_e(p.suffix[1:].upper())}</a>'
                                for p in (f.files or (f.path,)))
        how = f"<p><strong>How to read.</strong> {_e(f.how_to_read)}</p>" if f.how_to_read else ""
        parts.append(
            f'<figure id="fig-{_e(f.name)}"><img src="{_data_uri(f.path)}" alt="{_e(f.title)}">'
            f"<figcaption><p><strong>{_e(f.title)}.</strong> {_e(f.caption)}</p>{how}"
            f'<p class="muted">Files: {links}</p></figcaption></figure>')
    return "".join(parts)


def _run_link(run: Mapping[str, Any], label: str, out_dir: Path) -> str:
    """The run's name, linked to its directory (relative, so it works when the report and
    the sweep move together); the full path shows on hover."""
    if not is_local(run):
        return _e(label)
    return (f'<a class="run-dir" href="{_e(_rel(Path(run["run_dir"]), out_dir))}" '
            f'title="{_e(run["run_dir"])}">{_e(label or run.get("rel_dir") or run["run_dir"])}</a>')


def _runs_html(runs: pd.DataFrame, out_dir: Path) -> str:
    """Every run with its status, a link to its directory (relative, so it works when the
    report and the sweep are moved together) and to its W&B page when it has one."""
    optional = {"variant", "data", "error"}  # shown only when they tell runs apart or say something
    columns = [c for c in RUN_LISTING if c.key in runs.columns
               and (c.key not in optional or column(runs, c.key).fillna("").astype(str).nunique() > 1
                    or (c.key == "error" and column(runs, "error").notna().any()))]
    formats = [formatter(c) for c in columns]
    urls = column(runs, "url").fillna("").astype(str)
    with_url = urls.str.startswith(("https://", "http://")).any()
    head = "".join(f'<th scope="col">{_e(c.heading)}</th>' for c in columns)
    head += '<th scope="col">W&amp;B</th>' if with_url else ""
    body = []
    for run, url in zip(runs.to_dict("records"), urls):
        tds = ""
        for c, fmt in zip(columns, formats):
            key = c.key
            label = fmt(run[key])
            if key == "status" and not missing(run.get("diverged_what")):
                label += f" ({run['diverged_what']})"
            if key == "run_name":
                tds += f"<td>{_run_link(run, label, out_dir)}</td>"
            elif c.number is not None:
                tds += f'<td class="num" data-sort="{_e(_sort_key(run[key]))}">{_e(label)}</td>'
            else:
                css = {"error": "error", "status": f"status-{run['status']}"}.get(key)
                tds += (f'<td class="{_e(css)}">' if css else "<td>") + f"{_e(label)}</td>"
        if with_url:
            link = url if url.startswith(("https://", "http://")) else ""
            tds += (f'<td><a href="{_e(link)}" rel="noopener noreferrer">run page</a></td>' if link else "<td></td>")
        body.append(f'<tr data-scheme="{_e(text(run["scheme"]))}" data-cell="{_e(text(run["cell"]))}" '
                    f'data-status="{_e(run["status"])}" data-run-dir="{_e(run["run_dir"])}">{tds}</tr>')
    return (f'<div class="wrap"><table class="sortable" id="runs"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _config_value(values: Mapping[str, Any], key: str) -> str:
    """A config value as YAML would write it (``true``, ``null``); a dash where the run's
    config has no such key."""
    if key not in values:
        return DASH
    value = values[key]
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _notes_html(notes: list, element_id: str, empty: str) -> str:
    if not notes:
        return f'<p id="{element_id}" class="muted">{_e(empty)}</p>'
    items = "".join(f'<li data-path="{_e(n.path)}"><code>{_e(n.path)}</code>: {_e(n.message)}</li>'
                    for n in notes)
    return f'<ul id="{element_id}">{items}</ul>'


def _reproduce_html(runs: pd.DataFrame, paths: Sequence[Path], out_dir: Path, command: str) -> str:
    """The commands that made the runs and this report, and the configs, collapsed."""
    sweeps = sweep_files(runs)
    commands = training_commands(runs, sweeps)
    lines = "\n".join(commands) if commands else "# no Hydra record (.hydra/overrides.yaml, multirun.yaml) found"
    parts = [f"<h3>Commands</h3><p>Training (as Hydra recorded it):</p><pre id=\"train-commands\">{_e(lines)}</pre>",
             f'<p>This report:</p><pre id="report-command">{_e(command)}</pre>']
    configs = run_configs(runs)
    if configs:
        shared, varying, per_run = split_configs(configs)
        parts.append("<h3>Configuration</h3>")
        if varying:
            shown = varying_shown(varying)  # the name is the row label already
            head = "".join(f'<th scope="col">{_e(k)}</th>' for k in ["run", *shown])
            rows = "".join("<tr><td>" + _e(name) + "</td>" + "".join(
                f"<td>{_e(_config_value(values, k))}</td>" for k in shown) + "</tr>" for name, values in per_run)
            parts.append(f'<p>What differs between runs:</p><div class="wrap"><table class="sortable" '
                         f'id="config-diff"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>')
        parts.append(f"<details><summary>Settings every run shares (resolved config)</summary>"
                     f'<pre id="shared-config">{_e(yaml_text(shared))}</pre></details>')
        distinct: dict[str, list[str]] = {}
        for name, config in configs:
            distinct.setdefault(yaml_text(config), []).append(name)
        items = "".join(f"<details><summary>{_e(', '.join(names))}</summary><pre>{_e(doc)}</pre></details>"
                        for doc, names in distinct.items())
        parts.append(f"<details><summary>Each distinct resolved config ({len(distinct)})</summary>{items}</details>")
    for multirun in sweeps:
        try:
            record = multirun.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(f"<details><summary>Hydra sweep record <code>{_e(multirun)}</code></summary>"
                     f"<pre>{_e(record)}</pre></details>")
    return "".join(parts)


def render_html(runs: Runs, table_html: str, figures: Sequence[SavedFigure], paths: Sequence[Path],
                out_dir: Path, command: str = "") -> str:
    """The whole page as one string: the CSS and script inlined from the asset files,
    images as data URIs."""
    sources = ", ".join(f"<code>{_e(p)}</code>" for p in paths)
    warnings = ""
    if runs.warnings:
        warnings = '<h2 id="warnings-h">Warnings</h2>' + _notes_html(runs.warnings, "warnings", "")
    toc = " ".join(f'<a href="#{i}">{_e(t)}</a>' for i, t in (
        ("summary", "Summary"), ("scheme-table-h", "Scheme table"), ("figures", "Figures"),
        ("runs-h", "Runs"), ("skipped-h", "Skipped"), ("reproduce", "Reproduce")))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{_e(TITLE)}</title>
<style>
{asset("report.css")}</style>
</head>
<body>
<h1>{_e(TITLE)}</h1>
<p class="muted">Built {_e(datetime.now().isoformat(timespec="seconds"))} from {sources}.
Data: <a href="runs.csv">runs.csv</a>, <a href="tables.csv">tables.csv</a>,
<a href="report.md">report.md</a>, figures in <a href="figures/">figures/</a> (PNG, SVG and PDF), the table as <a href="tables.tex">LaTeX</a>.</p>
<nav class="toc">{toc}</nav>
{_filters_html(runs.runs)}

<h2 id="summary">Summary</h2>
{_summary_html(runs)}

<h2 id="scheme-table-h">Scheme table</h2>
<p>One row per cell and scheme (and variant, when runs of a scheme differ in more than the
seed): mean \u00b1 sample standard deviation over the finished seeds, with n when there are
several. Diverged and failed runs are counted, never averaged. Lower perplexity is better.
Click a column header to sort; the checkboxes above filter rows.</p>
<div class="wrap">{table_html}</div>

<h2 id="figures">Figures</h2>
{_figures_html(figures, out_dir)}

<h2 id="runs-h">Runs</h2>
{_runs_html(runs.runs, out_dir)}

<h2 id="skipped-h">Skipped job directories</h2>
{_notes_html(runs.skipped, "skipped", "None: every job directory had a summary.json.")}
{warnings}

<h2 id="reproduce">Reproduce</h2>
{_reproduce_html(runs.runs, paths, out_dir, command)}
<script>
{asset("report.js")}</script>
</body>
</html>
"""
