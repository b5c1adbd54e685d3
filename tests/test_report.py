"""The report, end to end: real run-store files in, the command line run as a user runs
it, and the page read back. Numbers are checked against values computed here from the
files written, so a wrong aggregate, a lost run or a broken image fails a test.
"""

from __future__ import annotations

import ast
import json
import math
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from analysis.collect import collect, read_metrics
from analysis.figures import FALLBACK_COLOURS, SCHEME_COLOURS, scheme_colour
from analysis.report import format_score, perplexity_table
from analysis.report import main as report_main

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
STEPS_PER_EPOCH = 4


def write_job(job: Path, *, scheme: str, cell: str, seed: int, val: list[float], test: float | None,
              status: str = "finished", dropout: float = 0.5, summary: bool = True,
              error: str | None = None, torn_tail: bool = False, diverged_step: int | None = None
              ) -> None:
    """A job directory as runners/run_store.py writes it."""
    job.mkdir(parents=True)
    run_name = f"{scheme}-{cell}-s{seed}"
    (job / "config.yaml").write_text(
        f"run_name: {run_name}\nseed: {seed}\ndropout: {dropout}\n"
        f"scheme:\n  name: {scheme}\nmodel:\n  cell: {cell}\n  layers: 1\ndata:\n  name: kjv\n")
    lines = []
    step = 0
    for epoch, val_ppl in enumerate(val, start=1):
        for _ in range(STEPS_PER_EPOCH):
            step += 1
            if step % 2 == 0:
                train_ppl = val_ppl * 0.9 + 5.0 / step
                lines.append({"epoch": epoch, "step": step, "split": "train", "scope": "interval",
                              "loss": math.log(train_ppl), "ppl": train_ppl, "lr": 1.0})
        lines.append({"epoch": epoch, "step": step, "split": "train", "scope": "epoch",
                      "loss": math.log(val_ppl * 0.8), "ppl": val_ppl * 0.8, "tokens_per_s": 1000.0})
        lines.append({"epoch": epoch, "step": step, "split": "val", "loss": math.log(val_ppl),
                      "ppl": val_ppl})
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
        }, indent=2))


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
        write_job(parent / str(i), scheme=scheme, cell=cell, seed=seed, val=val, test=test)
    failed = sweep / "5"
    write_job(failed, scheme="variational", cell="gru", seed=1, val=[400.0], test=999.0,
              status="failed", error=ERROR)
    diverged = sweep / "7"  # explodes: the figures must cope with 1e5 and null perplexities
    write_job(diverged, scheme="state_dropout", cell="gru", seed=0, val=[250.0, 1e5], test=None,
              status="diverged", diverged_step=11)
    # Diverged before any finite perplexity was logged: its only event has ppl null.
    write_job(sweep / "8", scheme="moon", cell="gru", seed=0, val=[], test=None, status="diverged",
              diverged_step=3)
    torn = sweep / "2026-01-01" / "12-00-00" / "6"
    write_job(torn, scheme="none", cell="lstm", seed=1, val=[290.0, 250.0, 240.0], test=None,
              summary=False, torn_tail=True)
    return {"failed": failed, "torn": torn, "diverged": diverged}


class TableReader(HTMLParser):
    """Collects the text of every element carrying the attributes the report sets for
    machine reading (``data-*``), every ``<img src>``, and every ``src``/``href``."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str, str], str] = {}  # (scheme, cell, metric) -> text
        self.run_rows: list[list[str]] = []
        self.skipped: list[str] = []
        self.imgs: list[str] = []
        self.links: list[str] = []
        self._scheme = ""
        self._cell: tuple[str, str] | None = None
        self._table = ""
        self._text: list[str] | None = None
        self._in_runs_row = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a:
                self.links.append(a[key])
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "table":
            self._table = a.get("id", "")
        if tag == "tr" and self._table == "perplexity" and "data-scheme" in a:
            self._scheme = a["data-scheme"]
        if tag == "tr" and self._table == "runs" and "data-run-dir" in a:
            self.run_rows.append([])
            self._in_runs_row = True
        if tag == "td" and "data-metric" in a:
            self._cell = (a["data-cell"], a["data-metric"])
            self._text = []
        elif tag == "td" and self._in_runs_row:
            self._text = []
        if tag == "li" and "data-path" in a:
            self.skipped.append(a["data-path"])

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._text is not None:
            text = "".join(self._text).strip()
            if self._cell is not None:
                self.cells[(self._scheme, *self._cell)] = text
            elif self._in_runs_row:
                self.run_rows[-1].append(text)
            self._text, self._cell = None, None
        if tag == "tr":
            self._in_runs_row = False
        if tag == "table":
            self._table = ""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis.report", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Build the sweep once and run the command line once; the tests read the result."""
    base = tmp_path_factory.mktemp("report")
    sweep = base / "sweep"
    special = build_sweep(sweep)
    out = base / "out"
    result = run_cli(str(sweep), "--out", str(out))
    assert result.returncode == 0, result.stderr
    page = (out / "index.html").read_text(encoding="utf-8")
    reader = TableReader()
    reader.feed(page)
    return {"sweep": sweep, "out": out, "result": result, "page": page, "reader": reader, **special}


def test_cli_prints_the_index_path(report: dict) -> None:
    printed = report["result"].stdout.strip().splitlines()
    assert printed == [str((report["out"] / "index.html").resolve())]


def test_perplexity_table_has_the_right_numbers(report: dict) -> None:
    cells = report["reader"].cells
    for (scheme, cell, _seed), (val, test) in FINISHED.items():
        if (scheme, cell) == ("variational", "lstm"):
            continue
        assert cells[(scheme, cell, "best_val_ppl")] == f"{min(val):.2f}"
        assert cells[(scheme, cell, "test_ppl")] == f"{test:.2f}"
    # two seeds: mean ± sample sd (n=2)
    bests = [min(FINISHED[("variational", "lstm", s)][0]) for s in (0, 1)]
    tests = [FINISHED[("variational", "lstm", s)][1] for s in (0, 1)]
    for metric, values in (("best_val_ppl", bests), ("test_ppl", tests)):
        expected = f"{statistics.mean(values):.2f} \u00b1 {statistics.stdev(values):.2f} (n=2)"
        assert cells[("variational", "lstm", metric)] == expected
    # the failed run is counted but not averaged: its test score of 999 must not leak in
    assert cells[("variational", "gru", "test_ppl")] == "186.75"
    assert cells[("variational", "gru", "finished")] == "1/2"
    assert cells[("variational", "lstm", "finished")] == "2/2"
    assert "999" not in "".join(cells.values())
    # the killed job (none/lstm seed 1) is not a run
    assert cells[("none", "lstm", "finished")] == "1/1"
    # a diverged run has no score to average; a combination never run is a dash
    assert cells[("state_dropout", "gru", "best_val_ppl")] == "\u2014"
    assert cells[("state_dropout", "gru", "finished")] == "0/1"
    assert cells[("state_dropout", "lstm", "finished")] == "\u2014"


def test_runs_table_lists_every_run_with_status(report: dict) -> None:
    rows = report["reader"].run_rows
    assert len(rows) == len(FINISHED) + 3
    statuses = sorted(row[6] for row in rows)
    assert statuses == ["diverged (loss)"] * 2 + ["failed"] + ["finished"] * len(FINISHED)
    diverged = next(row for row in rows if row[6].startswith("diverged") and row[12] == "11")
    assert diverged[12] == "11" and diverged[7] == "250.00"
    failed = next(row for row in rows if row[6] == "failed")
    assert failed[8] == "\u2014"  # no test ppl
    assert failed[13] == ERROR  # the text survives, escaped in the page
    assert "<script>" not in report["page"]
    assert "&lt;script&gt;" in report["page"]


def test_images_exist_and_page_is_offline(report: dict) -> None:
    imgs = report["reader"].imgs
    assert len(imgs) >= 2
    assert all(src.startswith("figures/") and src.endswith(".png") for src in imgs)
    for src in imgs:
        png = report["out"] / src
        assert png.is_file() and png.stat().st_size > 1000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [link for link in report["reader"].links if "//" in link or link.startswith("http")]
    assert "<script" not in report["page"] and "<link" not in report["page"]


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
    table = pd.read_csv(report["out"] / "perplexity.csv")
    row = table[(table["scheme"] == "variational") & (table["cell"] == "lstm")].iloc[0]
    assert row["test_ppl_mean"] == pytest.approx(178.5) and row["test_ppl_n"] == 2


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
    result = run_cli(*paths, "--out", str(out))
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
    table = perplexity_table(runs.runs)
    assert table.loc[0, "finished"] == 1 and table.loc[0, "runs"] == 2
    assert table.loc[0, "test_ppl_mean"] == 139.0 and table.loc[0, "test_ppl_n"] == 1


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


def test_analysis_imports_no_training_code() -> None:
    """analysis reads files only: it must run where torch, Hydra and W&B are absent."""
    forbidden = {"torch", "hydra", "wandb", "benchmark", "runners", "omegaconf"}
    modules = sorted((ROOT / "analysis").glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "collect.py", "figures.py", "report.py"}
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text(), filename=str(module))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & forbidden, (module.name, names)
