"""The report, end to end: real run-store files in, the command line run as a user runs
it, and the page read back. Numbers are checked against values computed here from the
files written, so a wrong aggregate, a lost run or a broken image fails a test.

``build_sweep`` is shared with ``test_figures.py`` and ``test_report_browser.py``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest

from analysis.store_reader import collect, read_metrics
from analysis.figures import FALLBACK_COLOURS, SCHEME_COLOURS, scheme_colour
from analysis.report import format_score, render_html, split_configs
from analysis.report import main as report_main
from analysis.runs import CONFIG_KEYS, GROUP_KEYS, RUN_COLUMNS, RUN_LISTING
from analysis.tables import scheme_table

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
STEPS_PER_EPOCH = 4
PROBE_STEPS = 60
KEEP = 0.5  # dropout 0.5 everywhere below: state dropout multiplies by 1/keep = 2 per step


def flat_probe(cell: str, level: float) -> dict:
    """A bounded state: rises from a zero state and levels off at ``level``."""
    norms = [level * (1 - 0.8 ** (t + 1)) for t in range(PROBE_STEPS)]
    return {"state_norm": norms, "cell_norm": [3 * n for n in norms] if cell == "lstm" else None,
            "max_state": level, "growth_per_step": 1.001}


def exploding_probe(overflow_at: int = 40) -> dict:
    """A GRU state that doubles every step (1/keep) until it overflows: nulls after."""
    norms = [0.5 * (1 / KEEP) ** t if t < overflow_at else None for t in range(PROBE_STEPS)]
    return {"state_norm": norms, "cell_norm": None, "max_state": None, "growth_per_step": 1 / KEEP}


def write_job(job: Path, *, scheme: str, cell: str, seed: int, val: list[float], test: float | None,
              status: str = "finished", dropout: float = 0.5, summary: bool = True,
              error: str | None = None, torn_tail: bool = False, diverged_step: int | None = None,
              probe: dict | None = None, hydra: list[str] | None = None, plan: dict | bool = True) -> None:
    """A job directory as runners/run_store.py writes it: config, metrics (train events
    with gradient norms, validation, test, a stability probe after each epoch or, with
    ``probe``, at divergence) and the summary, plus Hydra's ``.hydra/overrides.yaml``.

    The summary's ``plan`` is, with ``plan=True``, the engine's own description of the
    scheme resolved for this cell and dropout, as a job records it (none for a scheme the
    registry lacks); ``plan=False`` writes a summary from before runs recorded their plan;
    a dict is written as the plan."""
    if plan is True:
        plan = resolved_plan(scheme, cell, dropout)
    job.mkdir(parents=True)
    run_name = f"{scheme}-{cell}-s{seed}"
    (job / "config.yaml").write_text(
        f"run_name: {run_name}\nseed: {seed}\ndropout: {dropout}\n"
        f"scheme:\n  name: {scheme}\nmodel:\n  cell: {cell}\n  layers: 1\ndata:\n  name: kjv\n"
        f"train:\n  clip: 5.0\n  epochs: {EPOCHS}\n")
    if hydra is not None:
        (job / ".hydra").mkdir()
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in hydra))
    lines = []
    step = 0
    for epoch, val_ppl in enumerate(val, start=1):
        for _ in range(STEPS_PER_EPOCH):
            step += 1
            if step % 2 == 0:
                train_ppl = val_ppl * 0.9 + 5.0 / step
                lines.append({"epoch": epoch, "step": step, "split": "train", "scope": "interval",
                              "loss": math.log(train_ppl), "ppl": train_ppl, "lr": 1.0,
                              "grad_norm": 0.5 + 0.1 * epoch})
        lines.append({"epoch": epoch, "step": step, "split": "train", "scope": "epoch",
                      "loss": math.log(val_ppl * 0.8), "ppl": val_ppl * 0.8, "tokens_per_s": 1000.0,
                      "grad_norm_max": 1.0 + epoch})
        lines.append({"epoch": epoch, "step": step, "split": "val", "loss": math.log(val_ppl),
                      "ppl": val_ppl})
        if probe is None and status == "finished":
            lines.append({"epoch": epoch, "step": step, "split": "probe", **flat_probe(cell, 2.0 + epoch)})
    if probe is not None:
        lines.append({"epoch": len(val) + 1, "step": diverged_step or step, "split": "probe", **probe})
    if diverged_step is not None:  # NaN is stored as null by the run store
        lines.append({"epoch": len(val) + 1, "step": diverged_step, "split": "train",
                      "event": "diverged", "what": "loss", "loss": None, "ppl": None})
    if test is not None:
        lines.append({"epoch": len(val), "step": step, "split": "test", "loss": math.log(test), "ppl": test})
    text = "".join(json.dumps(line) + "\n" for line in lines)
    if torn_tail:  # a job killed while writing its next event
        text += '{"epoch": 4, "step": 13, "split": "tr'
    (job / "metrics.jsonl").write_text(text)
    if summary:
        (job / "summary.json").write_text(json.dumps({
            "run_name": run_name, "scheme": scheme, "cell": cell, "data": "kjv", "seed": seed,
            "dropout": dropout, "status": status, "best_val_ppl": min(val) if val else None,
            "test_ppl": test, "bayes_test_ppl": None, "epochs": len(val), "wall_s": 12.5,
            "train_tokens_per_s": 1234.5, "diverged_step": diverged_step, "error": error,
            **({"diverged_what": "loss"} if diverged_step is not None else {}),
            **({"plan": plan} if plan else {}),
        }, indent=2))


def resolved_plan(scheme: str, cell: str, dropout: float | dict, **options) -> dict | None:
    """``DropoutPlan.describe()`` as the job records it in ``summary.json``, None for a
    scheme the registry does not have. (The engine is imported here, by the test that
    writes the files, never by the analysis that reads them.)"""
    from benchmark.engine.schemes import SCHEMES, resolve

    return resolve(scheme, cell, dropout, **options).describe() if scheme in SCHEMES else None


# (scheme, cell, seed) -> (validation ppl per epoch, test ppl)
FINISHED = {
    ("none", "lstm", 0): ([300.0, 200.0, 210.0], 205.5),
    ("none", "gru", 0): ([310.0, 220.0, 215.0], 212.25),
    ("variational", "lstm", 0): ([320.0, 190.0, 180.0], 176.0),
    ("variational", "lstm", 1): ([330.0, 195.0, 184.0], 181.0),
    ("variational", "gru", 0): ([325.0, 199.0, 189.5], 186.75),
}
ERROR = "RuntimeError: <script>alert('x')</script> & friends"


def build_sweep(sweep: Path) -> dict[str, Path]:
    """2 schemes x 2 cells (two seeds for variational/lstm) at mixed depths, one failed
    run with a test score that must be ignored, and one job killed mid-write."""
    for i, ((scheme, cell, seed), (val, test)) in enumerate(FINISHED.items()):
        parent = sweep / "2026-01-01" / "12-00-00" if i % 2 else sweep
        write_job(parent / str(i), scheme=scheme, cell=cell, seed=seed, val=val, test=test,
                  hydra=[f"scheme={scheme}", f"model={cell}", f"seed={seed}"])
    failed = sweep / "5"
    write_job(failed, scheme="variational", cell="gru", seed=1, val=[400.0], test=999.0,
              status="failed", error=ERROR)
    diverged = sweep / "7"  # explodes: the figures must cope with 1e5 and null perplexities
    write_job(diverged, scheme="state_dropout", cell="gru", seed=0, val=[250.0, 1e5], test=None,
              status="diverged", diverged_step=11, probe=exploding_probe())
    # Diverged before any finite perplexity was logged: its only event has ppl null.
    write_job(sweep / "8", scheme="moon", cell="gru", seed=0, val=[], test=None, status="diverged",
              diverged_step=3)
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  mode: MULTIRUN\n  overrides:\n    hydra:\n    - hydra.mode=MULTIRUN\n"
        "    task:\n    - experiment=quickstart\n    - scheme=none,variational\n")
    torn = sweep / "2026-01-01" / "12-00-00" / "6"
    write_job(torn, scheme="none", cell="lstm", seed=1, val=[290.0, 250.0, 240.0], test=None,
              summary=False, torn_tail=True)
    return {"failed": failed, "torn": torn, "diverged": diverged}



# A scheme the suite does not ship (not in analysis.runs.SCHEME_ORDER), as a scheme added to
# the registry appears in a sweep: analysis must show it everywhere without being told of it.
# It sorts before every shipped name, so finding it after them shows the order rule, not the alphabet.
NEW_SCHEME = "a_brand_new"


def new_scheme_plan(cell: str) -> dict:
    """The plan a job of ``NEW_SCHEME`` records: the engine that ran it has the scheme, this
    checkout's registry does not. Its carried state compounds (inverted scaling), so the
    stability figures must draw its 1/keep from the plan alone (its mask is on every carried state,
    the LSTM's memory included, so the probe can show the growth)."""
    return {"scheme": NEW_SCHEME, "cell": cell, "options": {"scaling": "inverted"}, "state_output": "masked",
            "sites": {"state": {"rate": 0.5, "granularity": "sequence", "scaling": "inverted", "gate_masks": None,
                                "in_recurrence": True, "carried": True,
                                "masks_carried": ["h", "c"] if cell == "lstm" else ["h"], "compounds": True,
                                "eval": "identity", "draw": "dropout"}}}


def add_new_scheme(sweep: Path) -> None:
    """Two LSTM seeds, one GRU run and one diverged GRU run of ``NEW_SCHEME`` into a sweep."""
    for i, (cell, seed) in enumerate((("lstm", 0), ("lstm", 1), ("gru", 0))):
        write_job(sweep / f"new-{i}", scheme=NEW_SCHEME, cell=cell, seed=seed, val=[330.0, 200.0, 190.0 + seed],
                  test=185.0 + seed, hydra=[f"scheme={NEW_SCHEME}", f"model={cell}", f"seed={seed}"],
                  plan=new_scheme_plan(cell))
    write_job(sweep / "new-3", scheme=NEW_SCHEME, cell="gru", seed=1, val=[300.0], test=None, status="diverged",
              diverged_step=6, plan=new_scheme_plan("gru"))

class TableReader(HTMLParser):
    """Reads the page back as a browser's DOM would hold it: the scheme table's cells by
    (scheme, cell, column heading), the run rows, skipped paths, every ``<img src>``,
    every ``src``/``href`` by tag, and whether any script or stylesheet is external."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str, str], str] = {}  # (scheme, cell, heading) -> text
        self.headings: list[str] = []
        self.run_rows: list[dict[str, str]] = []  # heading -> text
        self.run_headings: list[str] = []
        self.run_attrs: list[dict[str, str]] = []
        self.skipped: list[str] = []
        self.imgs: list[str] = []
        self.resources: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self._row: dict[str, str] | None = None
        self._table = ""
        self._in_head = False
        self._col = 0
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a:
                self.resources.append((tag, key, a[key] or ""))
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "table":
            self._table = a.get("id", "")
        if tag == "thead":
            self._in_head = True
        if tag == "tr" and not self._in_head:
            self._row, self._col = a, 0
            if self._table == "runs":
                self.run_rows.append({})
                self.run_attrs.append(a)
        if tag in ("td", "th"):
            self._text = []
        if tag == "li" and "data-path" in a:
            self.skipped.append(a["data-path"])

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._text is not None:
            text = "".join(self._text).strip()
            if self._table == "scheme-table" and self._in_head:
                self.headings.append(text)
            elif self._table == "scheme-table" and self._row is not None:
                heading = self.headings[self._col]
                self.cells[(self._row["data-scheme"], self._row["data-cell"], heading)] = text
                self._col += 1
            elif self._table == "runs" and self._in_head:
                self.run_headings.append(text)
            elif self._table == "runs" and self._row is not None:
                self.run_rows[-1][self.run_headings[len(self.run_rows[-1])]] = text
            self._text = None
        if tag == "thead":
            self._in_head = False
        if tag == "tr":
            self._row = None
        if tag == "table":
            self._table = ""


def run_report_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis.report", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)


def build_report(base: Path) -> dict:
    """Build the sweep and run the command line once; what the tests read."""
    sweep = base / "sweep"
    special = build_sweep(sweep)
    out = base / "out"
    result = run_report_cli(str(sweep), "--out", str(out))
    assert result.returncode == 0, result.stderr
    page = (out / "index.html").read_text(encoding="utf-8")
    reader = TableReader()
    reader.feed(page)
    return {"sweep": sweep, "out": out, "result": result, "page": page, "reader": reader, **special}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_report(tmp_path_factory.mktemp("report"))


def test_cli_prints_the_index_path(report: dict) -> None:
    printed = report["result"].stdout.strip().splitlines()
    assert printed == [str((report["out"] / "index.html").resolve())]


def test_scheme_table_has_the_right_numbers(report: dict) -> None:
    cells = report["reader"].cells
    for (scheme, cell, _seed), (val, test) in FINISHED.items():
        if (scheme, cell) == ("variational", "lstm"):
            continue
        assert cells[(scheme, cell, "val ppl")] == f"{min(val):.2f}"
        assert cells[(scheme, cell, "test ppl")] == f"{test:.2f}"
    # two seeds: mean ± sample sd (n=2)
    bests = [min(FINISHED[("variational", "lstm", s)][0]) for s in (0, 1)]
    tests = [FINISHED[("variational", "lstm", s)][1] for s in (0, 1)]
    for heading, values in (("val ppl", bests), ("test ppl", tests)):
        expected = f"{statistics.mean(values):.2f} \u00b1 {statistics.stdev(values):.2f} (n=2)"
        assert cells[("variational", "lstm", heading)] == expected
    # the failed run is counted but not averaged: its test score of 999 must not leak in
    assert cells[("variational", "gru", "test ppl")] == "186.75"
    assert (cells[("variational", "gru", "finished")], cells[("variational", "gru", "failed")]) == ("1", "1")
    assert cells[("variational", "lstm", "finished")] == "2"
    assert "999" not in "".join(cells.values())
    # the killed job (none/lstm seed 1) is not a run
    assert cells[("none", "lstm", "runs")] == "1"
    # a diverged run has no score to average; a combination never run has no row
    assert cells[("state_dropout", "gru", "val ppl")] == "\u2014"
    assert cells[("state_dropout", "gru", "diverged")] == "1"
    assert ("state_dropout", "lstm", "runs") not in cells


def test_runs_table_lists_every_run_with_status(report: dict) -> None:
    rows = report["reader"].run_rows
    assert len(rows) == len(FINISHED) + 3
    statuses = sorted(row["status"] for row in rows)
    assert statuses == ["diverged (loss)"] * 2 + ["failed"] + ["finished"] * len(FINISHED)
    diverged = next(row for row in rows if row["diverged at step"] == "11")
    assert diverged["status"] == "diverged (loss)" and diverged["best val ppl"] == "250.00"
    failed = next(row for row in rows if row["status"] == "failed")
    assert failed["test ppl"] == "\u2014"  # no test ppl
    assert failed["error"] == ERROR  # the text survives, escaped in the page
    assert {row["run"] for row in rows} >= {"variational-gru-s1", "state_dropout-gru-s0"}
    assert "<script>alert" not in report["page"]
    assert "&lt;script&gt;" in report["page"]
    # rows carry what the filter and the sort read
    attrs = report["reader"].run_attrs
    assert {(a["data-scheme"], a["data-cell"]) for a in attrs} >= {("variational", "gru"), ("moon", "gru")}
    assert 'class="sortable" id="runs"' in report["page"]


def test_images_are_embedded_and_figures_written_as_png_svg_and_pdf(report: dict) -> None:
    imgs = report["reader"].imgs
    names = {"val_ppl", "test_ppl", "train_vs_val_ppl", "train_ppl_steps", "state_norm", "grad_norm",
             "divergence", "explosion"}
    assert len(imgs) == len(names)
    for src in imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    fig_dir = report["out"] / "figures"
    for name in names:
        png, svg = fig_dir / f"{name}.png", fig_dir / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert "<svg" in svg.read_text(encoding="utf-8")[:2000]
        assert (fig_dir / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
        assert f'href="figures/{name}.svg"' in report["page"]
    assert (report["out"] / "tables.tex").read_text(encoding="utf-8").startswith("\\begin{tabular}")


def test_page_loads_nothing_from_the_network(report: dict) -> None:
    """No external script, stylesheet, image or font; links out are to local files only
    (W&B run pages, when a run has one, are links a reader follows, not loads)."""
    for tag, attribute, value in report["reader"].resources:
        assert not value.startswith(("http:", "https:", "//")), (tag, attribute, value)
        if tag != "a":
            assert value.startswith("data:"), (tag, attribute, value)
    page = report["page"]
    assert "<script src" not in page and 'rel="stylesheet"' not in page and "@import" not in page
    # the CSP forbids any load the test did not think of
    assert "Content-Security-Policy\" content=\"default-src 'none';" in html.unescape(page)


def test_page_inlines_the_css_and_script_assets_byte_for_byte(report: dict) -> None:
    """The style sheet and script are package data (analysis/assets/), read through
    importlib.resources as an installed package would be, and pasted into the page
    unchanged, under the same Content-Security-Policy as before the split."""
    page = (report["out"] / "index.html").read_bytes()
    assets = resources.files("analysis").joinpath("assets")
    css, js = assets.joinpath("report.css").read_bytes(), assets.joinpath("report.js").read_bytes()
    assert css.strip() and js.strip()
    assert b"<style>\n" + css + b"</style>" in page
    assert b"<script>\n" + js + b"</script>" in page
    # an asset that closed its own element would break out of it
    assert b"</style" not in css.lower() and b"</script" not in js.lower()
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
           "base-uri 'none'; form-action 'none'")
    assert f'<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">'.encode() in page


def test_run_listing_and_config_keys_are_columns_of_the_schema() -> None:
    """The report's one run listing and the config keys a run's columns come from name
    columns of the run table (analysis.runs), so neither can drift from the readers."""
    assert {c.key for c in RUN_LISTING} <= set(RUN_COLUMNS)
    assert set(CONFIG_KEYS) <= set(RUN_COLUMNS) and set(GROUP_KEYS) <= set(RUN_COLUMNS)
    assert [c.key for c in RUN_LISTING if c.brief] == ["run_name", "scheme", "cell", "variant", "seed", "status",
                                                         "best_val_ppl", "test_ppl", "diverged_step"]


def test_reproduce_section_has_the_commands_and_configs(report: dict) -> None:
    page = report["page"]
    assert "python run.py -m experiment=quickstart scheme=none,variational" in page
    assert f"python -m analysis.report {report['sweep']} --out {report['out']}" in page
    assert 'id="config-diff"' in page and 'id="shared-config"' in page


def test_report_md_has_the_tables_figures_and_commands(report: dict) -> None:
    md = (report["out"] / "report.md").read_text(encoding="utf-8")
    assert "| data | cell | scheme |" in md
    assert "![Validation perplexity per epoch](figures/val_ppl.png)" in md
    assert "figures/explosion.svg" in md and "*How to read:*" in md
    assert "python run.py -m experiment=quickstart scheme=none,variational" in md
    runs_section = md.split("## Runs", 1)[1].split("## ", 1)[0]
    assert runs_section.count("| finished |") == len(FINISHED)


def test_half_written_job_is_reported_as_skipped(report: dict) -> None:
    torn = report["torn"]
    assert str(torn) in report["reader"].skipped
    assert len(report["reader"].skipped) == 1
    warning_lines = [line for line in report["result"].stderr.splitlines() if str(torn) in line]
    assert len(warning_lines) == 1 and "skipped" in warning_lines[0]


def test_csv_tables_match(report: dict) -> None:
    import pandas as pd

    runs = pd.read_csv(report["out"] / "runs.csv")
    assert len(runs) == len(FINISHED) + 3
    assert set(runs["status"]) == {"finished", "failed", "diverged"}
    assert runs.loc[runs["status"] != "finished", "test_ppl"].isna().all()
    table = pd.read_csv(report["out"] / "tables.csv")
    row = table[(table["scheme"] == "variational") & (table["cell"] == "lstm")].iloc[0]
    assert row["test_mean"] == pytest.approx(178.5) and row["test_n"] == 2


def test_wandb_links_appear_when_runs_have_urls(report: dict) -> None:
    runs = collect([report["sweep"]])
    runs.runs["url"] = ["https://wandb.ai/me/rnn-dropout/runs/abc"] + [""] * (len(runs.runs) - 1)
    page = render_html(runs, "", [], [report["sweep"]], report["out"])
    assert page.count('href="https://wandb.ai/me/rnn-dropout/runs/abc"') == 1
    assert "W&amp;B" in page
    runs.runs["url"] = ""
    assert "W&amp;B</th>" not in render_html(runs, "", [], [report["sweep"]], report["out"])


def test_split_configs_shows_what_varies() -> None:
    shared, varying, per_run = split_configs([
        ("a", {"seed": 0, "scheme": {"name": "x", "drop_cell": False}, "train": {"lr": 1.0}}),
        ("b", {"seed": 1, "scheme": {"name": "x"}, "train": {"lr": 1.0}})])
    assert shared == {"scheme": {"name": "x"}, "train": {"lr": 1.0}}
    assert varying == ["seed", "scheme.drop_cell"]
    assert per_run == [("a", {"seed": 0, "scheme.drop_cell": False}), ("b", {"seed": 1})]


def test_a_sweep_of_one_diverged_run_still_gets_a_report(tmp_path: Path) -> None:
    write_job(tmp_path / "sweep" / "0", scheme="moon", cell="gru", seed=0, val=[], test=None,
              status="diverged", diverged_step=3)
    assert report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "diverged" in page and (tmp_path / "out" / "report.md").is_file()


def make_bad_case(tmp_path: Path, case: str) -> tuple[list[str], Path, Path]:
    """Paths for one error case, the path the message must name, and the output dir."""
    good = tmp_path / "good"
    write_job(good / "0", scheme="none", cell="lstm", seed=0, val=[200.0], test=190.0)
    target = tmp_path / "target"
    if case == "empty":
        target.mkdir()
    elif case == "only-unfinished":
        write_job(target / "0", scheme="none", cell="lstm", seed=0, val=[200.0], test=None,
                  summary=False, torn_tail=True)
    elif case == "a-file":
        target.write_text("not a sweep")
    paths = [str(good), str(target)] if case == "one-of-two-missing" else [str(target)]
    return paths, target, tmp_path / "out"


def test_missing_path_exits_2_with_one_line(tmp_path: Path) -> None:
    paths, target, out = make_bad_case(tmp_path, "missing")
    result = run_report_cli(*paths, "--out", str(out))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and str(target) in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("case", ["empty", "only-unfinished", "one-of-two-missing", "a-file"])
def test_bad_paths_exit_2_with_one_line_and_write_nothing(
        tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    paths, target, out = make_bad_case(tmp_path, case)
    assert report_main([*paths, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and str(target) in lines[0]
    assert not out.exists()


def test_collect_tolerates_torn_metrics_and_ignores_failed_scores(tmp_path: Path) -> None:
    write_job(tmp_path / "a", scheme="naive", cell="gru", seed=3, val=[150.0, 140.0], test=139.0,
              torn_tail=True)
    write_job(tmp_path / "b", scheme="naive", cell="gru", seed=4, val=[150.0], test=500.0,
              status="diverged")
    events, bad = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert bad == 1 and events[-1]["split"] == "test"
    runs = collect([tmp_path])
    assert list(runs.runs["seed"]) == [3, 4]
    assert runs.runs["dropout"].tolist() == [0.5, 0.5]
    assert math.isnan(runs.runs.loc[1, "test_ppl"])
    assert [str(n.path) for n in runs.warnings] == [str(tmp_path / "a")]
    val = runs.events[(runs.events["split"] == "val") & (runs.events["seed"] == 3)]
    assert val["ppl"].tolist() == [150.0, 140.0] and val["epoch"].tolist() == [1, 2]
    table = scheme_table(runs)
    assert table.loc[0, "finished"] == 1 and table.loc[0, "n"] == 2
    assert table.loc[0, "test_mean"] == 139.0 and table.loc[0, "test_n"] == 1


def test_a_scheme_the_suite_does_not_ship_is_in_every_table_and_the_page(tmp_path: Path) -> None:
    """Issue 16: a scheme added to the registry reaches the report with no change to analysis:
    after the shipped schemes, in the scheme table, the runs, the filters (with its colour),
    report.md and the CSV tables."""
    import pandas as pd

    sweep, out = tmp_path / "sweep", tmp_path / "out"
    build_sweep(sweep)
    add_new_scheme(sweep)
    assert report_main([str(sweep), "--out", str(out)]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    reader = TableReader()
    reader.feed(page)

    rows = list(dict.fromkeys((scheme, cell) for scheme, cell, _heading in reader.cells))
    for cell in ("lstm", "gru"):  # rows by cell, then scheme: the new one closes each cell's block
        schemes = [s for s, c in rows if c == cell]
        assert schemes[-1] == NEW_SCHEME and set(schemes[:-1]) <= set(SCHEME_COLOURS), (cell, schemes)
    assert sum(a["data-scheme"] == NEW_SCHEME for a in reader.run_attrs) == 4
    colour = scheme_colour(NEW_SCHEME)
    assert colour not in SCHEME_COLOURS.values()
    assert (f'value="{NEW_SCHEME}" checked><span class="swatch" style="background:{colour}"></span>'
            f'{NEW_SCHEME}</label></fieldset>') in page  # the last scheme box, with its colour

    md = (out / "report.md").read_text(encoding="utf-8")
    table_md = md.split("## Runs", 1)[0]
    assert f"| {NEW_SCHEME} |" in table_md
    table = pd.read_csv(out / "tables.csv")
    for cell in ("lstm", "gru"):
        assert list(table[table.cell == cell].scheme)[-1] == NEW_SCHEME
    row = table[(table.scheme == NEW_SCHEME) & (table.cell == "lstm")].iloc[0]
    assert row["test_mean"] == pytest.approx(185.5) and row["test_n"] == 2
    assert (pd.read_csv(out / "runs.csv").scheme == NEW_SCHEME).sum() == 4
    for name in ("val_ppl", "test_ppl", "divergence"):  # its colour is drawn (figures: test_figures.py)
        assert colour in (out / "figures" / f"{name}.svg").read_text(encoding="utf-8"), name

def test_scheme_colours_are_fixed_and_distinct() -> None:
    assert len(set(SCHEME_COLOURS.values())) == len(SCHEME_COLOURS)
    assert scheme_colour("variational") == SCHEME_COLOURS["variational"]
    unknown = scheme_colour("my_new_scheme")
    assert unknown == scheme_colour("my_new_scheme") and unknown in FALLBACK_COLOURS
    assert not set(FALLBACK_COLOURS) & set(SCHEME_COLOURS.values())


def test_format_score() -> None:
    assert format_score(math.nan, math.nan, 0) == "\u2014"
    assert format_score(101.234, math.nan, 1) == "101.23"
    assert format_score(100.0, 2.5, 3) == "100.00 \u00b1 2.50 (n=3)"


BLOCKER = """
import importlib.abc, sys
FORBIDDEN = {"torch", "hydra", "wandb", "benchmark", "runners", "omegaconf"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import runpy
sys.argv = ["analysis.report", *sys.argv[1:]]
runpy.run_module("analysis.report", run_name="__main__")
"""


def test_report_runs_without_training_code(report: dict, tmp_path: Path) -> None:
    """The report reads files only: it must run where torch, Hydra and W&B are absent."""
    result = subprocess.run([sys.executable, "-c", BLOCKER, str(report["sweep"]), "--out", str(tmp_path / "out")],
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "index.html").is_file()


def test_report_md_shows_a_hostile_run_name_as_text_not_html(tmp_path: Path) -> None:
    """Issue 25: report.md escapes names as the HTML page does; a Markdown viewer renders raw HTML."""
    hostile = "<img src=x onerror=alert(1)>_*x*_"
    job = tmp_path / "sweep" / "0"
    write_job(job, scheme="naive", cell="lstm", seed=0, val=[200.0, 150.0], test=140.0)
    for name in ("config.yaml", "summary.json"):
        path = job / name
        path.write_text(path.read_text().replace("naive-lstm-s0", hostile))
    assert report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)&gt;\\_\\*x\\*\\_" in md
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
