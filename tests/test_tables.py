"""The scheme x cell table from real run-store files: every number checked against a
value worked out by hand from what was written, and the HTML/Markdown/CSV read back.
"""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from analysis.runs import Runs
from analysis.store_reader import collect
from analysis.tables import (DASH, TABLE_COLUMNS, format_score, main, scheme_table, to_html, to_markdown,
                             train_val_gaps, write_tables)

SOURCE = "Zaremba <i>et al.</i> | Table 1 & co"


def write_job(job: Path, *, scheme: str, cell: str = "lstm", seed: int = 0, val: list[float],
              train: list[float], test: float | None, status: str = "finished", data: str = "kjv",
              bayes: float | None = None, reference: dict | None = None, options: dict | None = None) -> None:
    """A job directory as the run store writes it. ``train`` is the whole-epoch train ppl
    per epoch; the interval events in between carry other values, which must not count."""
    job.mkdir(parents=True)
    config = {"scheme": {"name": scheme, **(options or {})}, "model": {"cell": cell}, "data": {"name": data},
              "seed": seed, "dropout": 0.5, "run_name": f"{scheme}-{cell}-s{seed}", "reference": reference}
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    lines: list[dict[str, Any]] = []
    for epoch, (v, t) in enumerate(zip(val, train), start=1):
        step = 4 * epoch
        lines.append({"epoch": epoch, "step": step - 2, "split": "train", "scope": "interval", "ppl": t + 50.0})
        lines.append({"epoch": epoch, "step": step, "split": "train", "scope": "epoch", "ppl": t})
        lines.append({"epoch": epoch, "step": step, "split": "val", "ppl": v})
    if test is not None:
        lines.append({"epoch": len(val), "step": 4 * len(val), "split": "test", "ppl": test})
    (job / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (job / "summary.json").write_text(json.dumps({
        "run_name": config["run_name"], "scheme": scheme, "cell": cell, "data": data, "seed": seed,
        "dropout": 0.0 if scheme == "none" else 0.5, "status": status, "best_val_ppl": min(val) if val else None,
        "test_ppl": test, "bayes_test_ppl": bayes, "mc_test_ppl": None, "epochs": len(val),
        "diverged_step": 7 if status == "diverged" else None, "error": "boom" if status == "failed" else None,
        "reference": reference}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("sweep")
    ref = {"source": SOURCE, "valid_ppl": 100.0, "test_ppl": 95.0}
    # variational/lstm: best val 100 (epoch 2, train 80: gap 20) and 110 (epoch 2, train 95: gap 15)
    write_job(root / "v0", scheme="variational", seed=0, val=[130, 100, 105], train=[120, 80, 60], test=98.0,
              reference=ref)
    write_job(root / "v1", scheme="variational", seed=1, val=[140, 110, 112], train=[130, 95, 70], test=102.0,
              reference=ref)
    write_job(root / "v2", scheme="variational", seed=2, val=[150], train=[140], test=None, status="diverged",
              reference=ref)
    write_job(root / "v3", scheme="variational", seed=3, val=[], train=[], test=None, status="failed",
              reference=ref)
    write_job(root / "n0", scheme="none", val=[120, 90], train=[110, 70], test=95.0)
    write_job(root / "g0", scheme="naive", cell="gru", val=[200, 180], train=[190, 150], test=175.0)
    for drop_cell in (False, True):
        write_job(root / f"sd-{drop_cell}", scheme="state_dropout", val=[300, 250], train=[280, 240],
                  test=260.0 + drop_cell, options={"drop_cell": drop_cell})
    # synthetic: each run's corpus has its own exact optimum
    write_job(root / "s0", scheme="naive", data="synthetic", seed=0, val=[25, 22], train=[24, 18], test=20.0,
              bayes=15.0)
    write_job(root / "s1", scheme="naive", data="synthetic", seed=1, val=[26, 23], train=[25, 19], test=21.0,
              bayes=15.5)
    return collect([root])


@pytest.fixture(scope="module")
def table(runs: Runs) -> pd.DataFrame:
    return scheme_table(runs)


def row(table: pd.DataFrame, scheme: str, cell: str = "lstm", data: str = "kjv", variant: str = "") -> pd.Series:
    match = table[(table["scheme"] == scheme) & (table["cell"] == cell) & (table["data"] == data)
                  & (table["variant"] == variant)]
    assert len(match) == 1, match
    return match.iloc[0]


def test_columns_and_order(table: pd.DataFrame) -> None:
    assert tuple(table.columns) == TABLE_COLUMNS
    keys = list(table[["data", "cell", "scheme", "variant"]].itertuples(index=False, name=None))
    assert keys == [("kjv", "lstm", "none", ""), ("kjv", "lstm", "variational", ""),
                    ("kjv", "lstm", "state_dropout", "scheme.drop_cell=false"),
                    ("kjv", "lstm", "state_dropout", "scheme.drop_cell=true"),
                    ("kjv", "gru", "naive", ""), ("synthetic", "lstm", "naive", "")]


def test_mean_sd_over_finished_seeds_and_status_counts(table: pd.DataFrame) -> None:
    r = row(table, "variational")
    assert (r["n"], r["finished"], r["diverged"], r["failed"]) == (4, 2, 1, 1)
    assert r["val_mean"] == pytest.approx(105.0) and r["val_sd"] == pytest.approx(7.0710678, abs=1e-6)
    assert r["test_mean"] == pytest.approx(100.0) and r["test_sd"] == pytest.approx(2.8284271, abs=1e-6)
    assert (r["val_n"], r["test_n"], r["mc_test_n"]) == (2, 2, 0)
    assert math.isnan(r["mc_test_mean"])


def test_gap_is_taken_at_the_best_validation_epoch(runs: Runs, table: pd.DataFrame) -> None:
    gaps = train_val_gaps(runs.events)
    by_seed = runs.runs.set_index("run_dir")["seed"]
    variational = {int(by_seed[d]): g for d, g in gaps.items()
                   if runs.runs.set_index("run_dir").loc[d, "scheme"] == "variational"}
    assert variational == {0: pytest.approx(20.0), 1: pytest.approx(15.0), 2: pytest.approx(10.0)}
    assert row(table, "variational")["gap_mean"] == pytest.approx(17.5)  # finished runs only
    assert row(table, "none")["gap_mean"] == pytest.approx(20.0)


def test_reference_and_delta(table: pd.DataFrame) -> None:
    r = row(table, "variational")
    assert (r["ref_source"], r["ref_val"], r["ref_test"]) == (SOURCE, 100.0, 95.0)
    assert r["delta_val"] == pytest.approx(5.0) and r["delta_test"] == pytest.approx(5.0)
    assert math.isnan(r["ref_mc_test"]) and math.isnan(r["delta_mc_test"])
    none = row(table, "none")
    assert pd.isna(none["ref_source"]) and math.isnan(none["delta_test"])


def test_bayes_gap_only_where_the_optimum_is_known(table: pd.DataFrame) -> None:
    r = row(table, "naive", data="synthetic")
    assert r["bayes_test"] == pytest.approx(15.25) and r["bayes_gap"] == pytest.approx(5.25)
    assert r["test_mean"] == pytest.approx(20.5) and r["test_sd"] == pytest.approx(0.7071068, abs=1e-6)
    assert math.isnan(row(table, "naive", cell="gru")["bayes_gap"])


def test_single_seed_has_no_sd(table: pd.DataFrame) -> None:
    r = row(table, "none")
    assert r["val_n"] == 1 and r["val_mean"] == 90.0 and math.isnan(r["val_sd"])
    assert [row(table, "state_dropout", variant=f"scheme.drop_cell={v}")["test_mean"] for v in ("false", "true")] \
        == [260.0, 261.0]


def test_format_score() -> None:
    assert format_score(math.nan, math.nan, 0) == DASH
    assert format_score(101.234, math.nan, 1) == "101.23"
    assert format_score(336.24, 1.36, 3) == "336.24 \u00b1 1.36 (n=3)"
    assert format_score(336.24, 1.36, 3, digits=1) == "336.2 \u00b1 1.4 (n=3)"


class TableParser(HTMLParser):
    """Rows of the scheme table: per row its attributes and its cells (attrs, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, str | None]] = []
        self.heads: list[str] = []
        self.rows: list[tuple[dict[str, str | None], list[tuple[dict[str, str | None], str]]]] = []
        self._cell: tuple[dict[str, str | None], list[str]] | None = None
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append(dict(attrs))
        elif tag in ("thead", "tbody"):
            self._in = tag
        elif tag == "tr" and self._in == "tbody":
            self.rows.append((dict(attrs), []))
        elif tag in ("td", "th"):
            self._cell = (dict(attrs), [])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            attrs, text = self._cell
            if self._in == "thead":
                self.heads.append("".join(text))
            else:
                self.rows[-1][1].append((attrs, "".join(text)))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[1].append(data)


def test_html_contract(table: pd.DataFrame) -> None:
    page = to_html(table)
    parser = TableParser()
    parser.feed(page)
    assert parser.tables == [{"class": "sortable", "id": "scheme-table"}]
    assert parser.heads[:4] == ["data", "cell", "scheme", "variant"] and "source" in parser.heads
    assert "gap to Bayes" in parser.heads and "MC test ppl" not in parser.heads  # no data, no column
    assert len(parser.rows) == len(table)
    for (attrs, cells), record in zip(parser.rows, table.to_dict("records")):
        assert (attrs["data-scheme"], attrs["data-cell"]) == (record["scheme"], record["cell"])
        numeric = [(a, text) for a, text in cells if a.get("class") == "num"]
        assert numeric and all("data-sort" in a for a, _ in numeric)
        for a, text in numeric:
            assert (a["data-sort"] == "") == (text == DASH)
    attrs, cells = parser.rows[1]
    assert attrs["data-scheme"] == "variational"
    by_head = dict(zip(parser.heads, cells))
    assert float(by_head["val ppl"][0]["data-sort"]) == pytest.approx(105.0)
    assert by_head["val ppl"][1] == "105.00 \u00b1 7.07 (n=2)"
    assert by_head["\u0394 test"][1] == "+5.00" and by_head["diverged"][1] == "1"
    assert by_head["source"][1] == SOURCE  # the parser unescapes: the text survived intact
    assert "<i>" not in page and "Zaremba &lt;i&gt;et al.&lt;/i&gt; | Table 1 &amp; co" in page
    none_cells = dict(zip(parser.heads, parser.rows[0][1]))
    assert none_cells["paper test"] == ({"class": "num", "data-sort": ""}, DASH)


def test_markdown(table: pd.DataFrame) -> None:
    text = to_markdown(table)
    lines = text.splitlines()
    assert lines[0].startswith("| data | cell | scheme | variant | runs | finished | diverged | failed | val ppl |")
    assert set(lines[1].replace("|", "").split()) == {"---", "---:"}
    assert len(lines) == len(table) + 2
    variational = lines[3]
    assert "| variational |" in variational and "105.00 \u00b1 7.07 (n=2)" in variational
    assert "Zaremba <i>et al.</i> \\| Table 1 & co" in variational  # the pipe cannot split the row
    assert f"| {DASH} |" in lines[2]  # no paper numbers for the baseline


def test_write_tables_csv_round_trip(runs: Runs, table: pd.DataFrame, tmp_path: Path) -> None:
    paths = write_tables(runs, tmp_path / "out")
    assert {k: p.name for k, p in paths.items()} == {"csv": "tables.csv", "md": "tables.md", "html": "tables.html",
                                                     "tex": "tables.tex"}
    back = pd.read_csv(paths["csv"], keep_default_na=False, na_values=[""])
    assert list(back.columns) == list(TABLE_COLUMNS)
    assert back["val_mean"].tolist() == pytest.approx(table["val_mean"].tolist(), nan_ok=True)
    assert back.loc[1, "ref_source"] == SOURCE
    assert paths["html"].read_text(encoding="utf-8") == to_html(table)
    assert paths["md"].read_text(encoding="utf-8") == to_markdown(table)
    tex = paths["tex"].read_text(encoding="utf-8")
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex and "\\bottomrule" in tex
    assert "105.00 \u00b1 7.07 (n=2)" in tex  # the same cells as the Markdown table
    assert "state_dropout" not in tex or "state\\_dropout" in tex  # LaTeX-escaped


def test_empty_runs_give_an_empty_table(tmp_path: Path) -> None:
    empty = collect([tmp_path])
    result = scheme_table(empty)
    assert result.empty and tuple(result.columns) == TABLE_COLUMNS
    assert 'id="scheme-table"' in to_html(result) and to_markdown(result).count("\n") == 2


def test_cli(runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = Path(runs.runs["root"].iloc[0])
    assert main([str(root), "--out", str(tmp_path / "t"), "--cache", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == ["tables.csv", "tables.md", "tables.html", "tables.tex"]
    assert (tmp_path / "cache" / "runs.parquet").is_file()
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "t2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such directory" in err and not (tmp_path / "t2").exists()
