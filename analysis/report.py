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
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence
from urllib.parse import quote

import pandas as pd
import yaml

from analysis.runs import CELL_ORDER, SCHEME_ORDER, Runs, ordered
from analysis.store_reader import collect
from analysis.tables import format_score, scheme_table, to_html, to_markdown, write_tables

if TYPE_CHECKING:  # figures imports matplotlib; see _write_report for why it is lazy
    from analysis.plotting import SavedFigure

__all__ = ["NoRunsError", "format_score", "render_html", "render_markdown", "write_report", "main"]

DASH = "\u2014"
TITLE = "Recurrent dropout benchmark report"
# The page may load nothing: images are data URIs, style and script inline.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")


class NoRunsError(ValueError):
    """A path given to the report holds no readable run."""


# --- small helpers --------------------------------------------------------------------

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


def _sort_key(value: Any) -> str:
    """The raw number a client-side sort compares, ``""`` when missing."""
    if _missing(value):
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return repr(number) if math.isfinite(number) else ""


def _plural(n: int, noun: str) -> str:
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    """A run-table column, empty text where this table has none (older collect)."""
    return runs[name] if name in runs.columns else pd.Series([""] * len(runs), index=runs.index, dtype=object)


def _local(run: Mapping[str, Any]) -> bool:
    """Whether a run lives in a directory here (not only on W&B)."""
    return str(run.get("source") or "local") == "local"


# --- what produced the runs -----------------------------------------------------------

def _sweep_files(runs: pd.DataFrame) -> list[Path]:
    """The Hydra ``multirun.yaml`` of each sweep the runs came from (job dir upwards, to
    the directory the report was asked for), in first-seen order."""
    found: dict[Path, None] = {}
    for run in runs.to_dict("records"):
        if not _local(run):
            continue
        here, root = Path(run["run_dir"]), Path(str(run.get("root") or run["run_dir"]))
        for parent in [here, *here.parents]:
            candidate = parent / "multirun.yaml"
            if candidate.is_file():
                found[candidate] = None
                break
            if parent == root or parent == parent.parent:
                break
    return list(found)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None


def sweep_command(multirun: Path) -> str | None:
    """``python run.py -m OVERRIDES`` as Hydra recorded the sweep's command line."""
    data = _read_yaml(multirun)
    overrides = ((data or {}).get("hydra") or {}).get("overrides") or {}
    task = [str(o) for o in overrides.get("task") or []]
    extra = [str(o) for o in overrides.get("hydra") or [] if str(o) != "hydra.mode=MULTIRUN"]
    if not isinstance(data, dict):
        return None
    return shlex.join(["python", "run.py", "-m", *task, *extra])


def job_commands(runs: pd.DataFrame) -> list[str]:
    """``python run.py OVERRIDES`` per job from ``.hydra/overrides.yaml``, for runs made
    one at a time (no ``multirun.yaml``); distinct, in run order."""
    commands: dict[str, None] = {}
    for run in runs.to_dict("records"):
        if not _local(run):
            continue
        overrides = _read_yaml(Path(run["run_dir"]) / ".hydra" / "overrides.yaml")
        if isinstance(overrides, list):
            commands[shlex.join(["python", "run.py", *map(str, overrides)])] = None
    return list(commands)


def run_configs(runs: pd.DataFrame) -> list[tuple[str, dict[str, Any]]]:
    """(run name, resolved config) for every run with one."""
    from analysis.plotting import run_config

    return [(str(run.get("run_name") or run["run_dir"]), config) for run in runs.to_dict("records")
            if (config := run_config(run))]


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def split_configs(configs: Sequence[tuple[str, Mapping[str, Any]]]
                  ) -> tuple[dict[str, Any], list[str], list[tuple[str, dict[str, Any]]]]:
    """What every run shares (as a nested config), the keys that vary, and each run's
    values of those keys: the whole sweep's configuration in a screenful."""
    flats = [(name, _flatten(config)) for name, config in configs]
    keys = list(dict.fromkeys(k for _, flat in flats for k in flat))
    absent = "\u2205"  # a key one run lacks differs from any value, null included
    varying = [k for k in keys
               if len({json.dumps(flat[k], default=str) if k in flat else absent for _, flat in flats}) > 1]
    shared = {k: v for k, v in flats[0][1].items() if k not in varying} if flats else {}
    per_run = [(name, {k: flat[k] for k in varying if k in flat}) for name, flat in flats]
    return _unflatten(shared), varying, per_run


def _config_value(values: Mapping[str, Any], key: str) -> str:
    """A config value as YAML would write it (``true``, ``null``); a dash where the run's
    config has no such key."""
    if key not in values:
        return DASH
    value = values[key]
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _yaml_text(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip()


def report_command(paths: Sequence[Path], out_dir: Path) -> str:
    return shlex.join(["python", "-m", "analysis.report", *map(str, paths), "--out", str(out_dir)])


# --- HTML -----------------------------------------------------------------------------

CSS = """
:root{--line:#d9dde3;--head:#f2f4f7;--muted:#5f6670}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1f2328;line-height:1.45;max-width:1280px;margin:0 auto;padding:0 1rem 3rem}
h1{font-size:1.6rem;margin:1.6rem 0 .3rem} h2{font-size:1.2rem;margin-top:2.2rem;
 border-bottom:1px solid var(--line);padding-bottom:.2rem} h3{font-size:1rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;font-size:.86rem;margin:.6rem 0}
th,td{border:1px solid var(--line);padding:.28rem .5rem;text-align:left;vertical-align:top}
thead th{background:var(--head);text-align:center;position:relative}
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable thead th:hover{background:#e4e8ee}
table.sortable thead th[aria-sort=ascending]::after{content:" \\25B2";font-size:.7em}
table.sortable thead th[aria-sort=descending]::after{content:" \\25BC";font-size:.7em}
tbody tr:nth-child(even) td{background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.error{max-width:26rem;overflow-wrap:anywhere}
.status-finished{color:#1a7f37}.status-diverged{color:#b35900;font-weight:600}
.status-failed{color:#c62828;font-weight:600}
.wrap{overflow-x:auto} .muted{color:var(--muted)} code{background:#f4f4f4;padding:0 .2rem}
pre{background:#f6f8fa;border:1px solid var(--line);padding:.6rem;overflow-x:auto;font-size:.8rem}
#filters{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);
 padding:.45rem 0;font-size:.88rem;display:flex;flex-wrap:wrap;gap:.3rem 1.2rem;align-items:center}
#filters fieldset{border:0;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:.2rem .7rem;align-items:center}
#filters legend{font-weight:600;float:left;margin-right:.4rem}
#filters label{white-space:nowrap} .swatch{display:inline-block;width:.8em;height:.8em;border-radius:2px;
 margin-right:.25em;vertical-align:-.05em}
#filters button{font-size:.8rem}
.cards{display:flex;flex-wrap:wrap;gap:.6rem;margin:.8rem 0}
.card{border:1px solid var(--line);border-radius:6px;padding:.4rem .8rem;min-width:6.5rem}
.card b{display:block;font-size:1.35rem}
figure{margin:1.4rem 0 2rem} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.88rem;color:#333;max-width:60rem} figcaption p{margin:.3rem 0}
nav.toc{font-size:.88rem} nav.toc a{margin-right:.8rem}
details{margin:.5rem 0} summary{cursor:pointer;font-weight:600}
""".strip()

# Sorting works on any ``table.sortable`` (multi-row headers included: a header's column
# is found through the rowspan/colspan grid), numeric through ``data-sort``; the filter on
# every body row carrying ``data-scheme`` (and ``data-cell``), in any table.
SCRIPT = r"""
(function () {
  "use strict";
  function columnsOf(thead) {
    var taken = [], map = new Map();
    Array.prototype.forEach.call(thead.rows, function (row, r) {
      taken[r] = taken[r] || [];
      var c = 0;
      Array.prototype.forEach.call(row.cells, function (th) {
        while (taken[r][c]) c++;
        var rs = th.rowSpan || 1, cs = th.colSpan || 1;
        for (var i = 0; i < rs; i++) {
          taken[r + i] = taken[r + i] || [];
          for (var j = 0; j < cs; j++) taken[r + i][c + j] = true;
        }
        if (cs === 1) map.set(th, c);
        c += cs;
      });
    });
    return map;
  }
  function cellAt(row, index) {
    var c = 0;
    for (var i = 0; i < row.cells.length; i++) {
      var span = row.cells[i].colSpan || 1;
      if (index < c + span) return row.cells[i];
      c += span;
    }
    return null;
  }
  function sortTable(table, th, index) {
    var body = table.tBodies[0];
    if (!body) return;
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = rows.some(function (r) { var c = cellAt(r, index); return c && c.hasAttribute("data-sort"); });
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var keyed = rows.map(function (r, i) {
      var c = cellAt(r, index), v = null;
      if (c) {
        if (numeric) {
          var raw = c.getAttribute("data-sort");
          v = raw === null || raw === "" ? null : parseFloat(raw);
          if (v !== null && isNaN(v)) v = null;
        } else {
          v = c.textContent.trim();
          if (v === "" || v === "\u2014") v = null;
        }
      }
      return {row: r, value: v, i: i};
    });
    keyed.sort(function (a, b) {
      if (a.value === null || b.value === null) {
        if (a.value === b.value) return a.i - b.i;
        return a.value === null ? 1 : -1;  // missing values last either way
      }
      var d = numeric ? a.value - b.value : a.value.localeCompare(b.value, undefined, {numeric: true});
      return (ascending ? d : -d) || a.i - b.i;
    });
    keyed.forEach(function (k) { body.appendChild(k.row); });
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    if (!table.tHead) return;
    var columns = columnsOf(table.tHead);
    columns.forEach(function (index, th) {
      th.tabIndex = 0;
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortTable(table, th, index); });
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortTable(table, th, index); }
      });
    });
  });
  var boxes = Array.prototype.slice.call(document.querySelectorAll("#filters input[data-filter]"));
  function applyFilter() {
    var off = {scheme: new Set(), cell: new Set()};
    boxes.forEach(function (b) { if (!b.checked) off[b.getAttribute("data-filter")].add(b.value); });
    var shown = 0, all = 0;
    document.querySelectorAll("tbody tr[data-scheme]").forEach(function (tr) {
      var cell = tr.getAttribute("data-cell");
      var hide = off.scheme.has(tr.getAttribute("data-scheme")) || (cell !== null && off.cell.has(cell));
      tr.hidden = hide;
      all++;
      if (!hide) shown++;
    });
    var count = document.getElementById("filter-count");
    if (count) count.textContent = shown + " of " + all + " table rows shown";
  }
  boxes.forEach(function (b) { b.addEventListener("change", applyFilter); });
  document.querySelectorAll("#filters button[data-select]").forEach(function (button) {
    button.addEventListener("click", function () {
      var on = button.getAttribute("data-select") === "all";
      boxes.forEach(function (b) { b.checked = on; });
      applyFilter();
    });
  });
  applyFilter();
})();
""".strip()


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
        where = f" at step {run['diverged_step']}" if not _missing(run.get("diverged_step")) else ""
        what = f" ({run['diverged_what']})" if not _missing(run.get("diverged_what")) else ""
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


# (heading, run-table column, formatter, is it a number)
RUN_TABLE = (
    ("run", "run_name", _txt, False), ("scheme", "scheme", _txt, False), ("cell", "cell", _txt, False),
    ("variant", "variant", _txt, False), ("data", "data", _txt, False), ("seed", "seed", _num("d"), True),
    ("dropout", "dropout", _num("g"), True), ("status", "status", _txt, False),
    ("best val ppl", "best_val_ppl", _num(".2f"), True), ("test ppl", "test_ppl", _num(".2f"), True),
    ("epochs", "epochs", _num("d"), True), ("wall s", "wall_s", _num(".0f"), True),
    ("train tok/s", "train_tokens_per_s", _num(",.0f"), True),
    ("diverged at step", "diverged_step", _num("d"), True), ("error", "error", _txt, False),
)


def _run_link(run: Mapping[str, Any], text: str, out_dir: Path) -> str:
    """The run's name, linked to its directory (relative, so it works when the report and
    the sweep move together); the full path shows on hover."""
    if not _local(run):
        return _e(text)
    return (f'<a class="run-dir" href="{_e(_rel(Path(run["run_dir"]), out_dir))}" '
            f'title="{_e(run["run_dir"])}">{_e(text or run.get("rel_dir") or run["run_dir"])}</a>')


def _runs_html(runs: pd.DataFrame, out_dir: Path) -> str:
    """Every run with its status, a link to its directory (relative, so it works when the
    report and the sweep are moved together) and to its W&B page when it has one."""
    optional = {"variant", "data", "error"}  # shown only when they tell runs apart or say something
    columns = [c for c in RUN_TABLE if c[1] in runs.columns
               and (c[1] not in optional or _column(runs, c[1]).fillna("").astype(str).nunique() > 1
                    or (c[1] == "error" and _column(runs, "error").notna().any()))]
    urls = _column(runs, "url").fillna("").astype(str)
    with_url = urls.str.startswith(("https://", "http://")).any()
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h, *_ in columns)
    head += '<th scope="col">W&amp;B</th>' if with_url else ""
    body = []
    for run, url in zip(runs.to_dict("records"), urls):
        tds = ""
        for _heading, key, fmt, is_num in columns:
            text = fmt(run[key])
            if key == "status" and not _missing(run.get("diverged_what")):
                text += f" ({run['diverged_what']})"
            if key == "run_name":
                tds += f"<td>{_run_link(run, text, out_dir)}</td>"
            elif is_num:
                tds += f'<td class="num" data-sort="{_e(_sort_key(run[key]))}">{_e(text)}</td>'
            else:
                css = {"error": "error", "status": f"status-{run['status']}"}.get(key)
                tds += (f'<td class="{_e(css)}">' if css else "<td>") + f"{_e(text)}</td>"
        if with_url:
            link = url if url.startswith(("https://", "http://")) else ""
            tds += (f'<td><a href="{_e(link)}" rel="noopener noreferrer">run page</a></td>' if link else "<td></td>")
        body.append(f'<tr data-scheme="{_e(_txt(run["scheme"]))}" data-cell="{_e(_txt(run["cell"]))}" '
                    f'data-status="{_e(run["status"])}" data-run-dir="{_e(run["run_dir"])}">{tds}</tr>')
    return (f'<div class="wrap"><table class="sortable" id="runs"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _notes_html(notes: list, element_id: str, empty: str) -> str:
    if not notes:
        return f'<p id="{element_id}" class="muted">{_e(empty)}</p>'
    items = "".join(f'<li data-path="{_e(n.path)}"><code>{_e(n.path)}</code>: {_e(n.message)}</li>'
                    for n in notes)
    return f'<ul id="{element_id}">{items}</ul>'


def _reproduce_html(runs: pd.DataFrame, paths: Sequence[Path], out_dir: Path, command: str) -> str:
    """The commands that made the runs and this report, and the configs, collapsed."""
    sweeps = _sweep_files(runs)
    commands = [c for c in (sweep_command(m) for m in sweeps) if c] or job_commands(runs)
    lines = "\n".join(commands) if commands else "# no Hydra record (.hydra/overrides.yaml, multirun.yaml) found"
    parts = [f"<h3>Commands</h3><p>Training (as Hydra recorded it):</p><pre id=\"train-commands\">{_e(lines)}</pre>",
             f'<p>This report:</p><pre id="report-command">{_e(command)}</pre>']
    configs = run_configs(runs)
    if configs:
        shared, varying, per_run = split_configs(configs)
        parts.append("<h3>Configuration</h3>")
        if varying:
            shown = [k for k in varying if k != "run_name"]  # the row label already
            head = "".join(f'<th scope="col">{_e(k)}</th>' for k in ["run", *shown])
            rows = "".join("<tr><td>" + _e(name) + "</td>" + "".join(
                f"<td>{_e(_config_value(values, k))}</td>" for k in shown) + "</tr>" for name, values in per_run)
            parts.append(f'<p>What differs between runs:</p><div class="wrap"><table class="sortable" '
                         f'id="config-diff"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>')
        parts.append(f"<details><summary>Settings every run shares (resolved config)</summary>"
                     f'<pre id="shared-config">{_e(_yaml_text(shared))}</pre></details>')
        distinct: dict[str, list[str]] = {}
        for name, config in configs:
            distinct.setdefault(_yaml_text(config), []).append(name)
        items = "".join(f"<details><summary>{_e(', '.join(names))}</summary><pre>{_e(text)}</pre></details>"
                        for text, names in distinct.items())
        parts.append(f"<details><summary>Each distinct resolved config ({len(distinct)})</summary>{items}</details>")
    for multirun in sweeps:
        try:
            text = multirun.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(f"<details><summary>Hydra sweep record <code>{_e(multirun)}</code></summary>"
                     f"<pre>{_e(text)}</pre></details>")
    return "".join(parts)


def render_html(runs: Runs, table_html: str, figures: Sequence[SavedFigure], paths: Sequence[Path],
                out_dir: Path, command: str = "") -> str:
    """The whole page as one string: inline CSS and script, images as data URIs."""
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
{CSS}
</style>
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
{SCRIPT}
</script>
</body>
</html>
"""


# --- Markdown -------------------------------------------------------------------------

def _md_cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _runs_markdown(runs: pd.DataFrame) -> str:
    columns = [("run", "run_name", _txt), ("scheme", "scheme", _txt), ("cell", "cell", _txt),
               ("variant", "variant", _txt), ("seed", "seed", _num("d")), ("status", "status", _txt),
               ("best val ppl", "best_val_ppl", _num(".2f")), ("test ppl", "test_ppl", _num(".2f")),
               ("diverged at step", "diverged_step", _num("d"))]
    columns = [c for c in columns if c[1] in runs.columns
               and (c[1] != "variant" or runs["variant"].fillna("").astype(str).ne("").any())]
    lines = ["| " + " | ".join(h for h, *_ in columns) + " |",
             "| " + " | ".join("---:" if fmt is not _txt else "---" for *_, fmt in columns) + " |"]
    for run in runs.to_dict("records"):
        lines.append("| " + " | ".join(_md_cell(fmt(run[key])) for _, key, fmt in columns) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(runs: Runs, table_md: str, figures: Sequence[SavedFigure], paths: Sequence[Path],
                    out_dir: Path, command: str = "") -> str:
    """The report as Markdown: the tables, then each figure (linked, not embedded) with
    its caption and how to read it, then the commands."""
    statuses = ", ".join(f"{n} {s}" for s, n in runs.runs["status"].value_counts().items())
    out = [f"# {TITLE}", "",
           f"Built {datetime.now().isoformat(timespec='seconds')} from "
           + ", ".join(f"`{p}`" for p in paths)
           + f": {_plural(len(runs.runs), 'run')} ({statuses}), "
           + f"{_plural(len(runs.skipped), 'job directory')} skipped.", "",
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
        out += ["## Skipped job directories", ""] + [f"- `{n.path}`: {n.message}" for n in runs.skipped] + [""]
    commands = [c for c in (sweep_command(m) for m in _sweep_files(runs.runs)) if c] or job_commands(runs.runs)
    out += ["## Reproduce", "", "```sh", *commands, command, "```", ""]
    return "\n".join(out)


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


def _atomic_write(path: Path, text: str) -> None:
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
