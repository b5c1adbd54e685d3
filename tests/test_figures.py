"""The figures from real run-store files: every figure on disk as PNG and SVG, and what
each one drew (``SavedFigure.drawn``) checked against numbers worked out from the files:
the (1/keep)^t reference of a state-dropout run, the measured growth of the exploding
GRU, where runs diverged, the seed bands. Also the awkward sweeps (no probes, one run,
everything diverged), which must give fewer figures, never an exception.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.store_reader import collect
from analysis.figures import write_figures
from analysis.plotting import FORMATS, SCHEME_COLOURS, SavedFigure, group_label, scheme_colour, short_variant
from analysis.explosion import plot_explosion
from analysis.probes import ProbeRecord, compounding_site, fit_growth, probe_records, reference_line
from test_report import (FINISHED, KEEP, NEW_SCHEME, PROBE_STEPS, add_new_scheme, build_sweep, exploding_probe,
                         flat_probe, resolved_plan, write_job)

ALL = ("val_ppl", "test_ppl", "train_vs_val_ppl", "train_ppl_steps", "state_norm", "grad_norm", "divergence",
       "explosion")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("figures")
    build_sweep(base / "sweep")
    runs = collect([base / "sweep"])
    figures = write_figures(runs, base / "figures")
    return {"runs": runs, "figures": {f.name: f for f in figures}, "dir": base / "figures"}


def test_every_figure_is_written_as_png_svg_and_pdf(made: dict) -> None:
    assert tuple(made["figures"]) == ALL
    for name, figure in made["figures"].items():
        assert [p.suffix[1:] for p in figure.files] == list(FORMATS) == ["png", "svg", "pdf"]
        png, svg, pdf = figure.files
        assert pdf.read_bytes()[:5] == b"%PDF-"
        assert png == figure.path and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        text = svg.read_text(encoding="utf-8")
        assert "<svg" in text and "<text" in text  # labels stay text: editable in a paper
        assert figure.caption and figure.how_to_read and figure.title
    assert sorted(p.name for p in made["dir"].iterdir()) == sorted(f"{n}.{x}" for n in ALL for x in FORMATS)


def test_state_norm_draws_the_reference_for_state_dropout_only(made: dict) -> None:
    drawn = made["figures"]["state_norm"].drawn
    refs = {r["run"]: r for r in drawn["references"]}
    assert set(refs) == {"state_dropout-gru-s0"}  # the only run whose scheme masks the carried state
    ref = refs["state_dropout-gru-s0"]
    assert ref["keep"] == pytest.approx(KEEP) and ref["per_step"] == pytest.approx(1 / KEEP)
    assert ref["norm0"] == pytest.approx(exploding_probe()["state_norm"][0])
    lines = {line["run"]: line for line in drawn["lines"]}
    assert lines["state_dropout-gru-s0"]["overflow_at"] == 40  # the first null in the probe
    assert lines["none-lstm-s0"]["overflow_at"] is None
    # every finished run's last probe (epoch 3) and the diverged run's probe at divergence
    assert len(lines) == len(FINISHED) + 1 and lines["none-lstm-s0"]["epoch"] == 3


def test_reference_line_is_norm0_times_inverse_keep_to_the_t(made: dict) -> None:
    (record,) = [r for r in probe_records(made["runs"]) if r.scheme == "state_dropout"]
    t, y, norm0 = reference_line(record)
    assert t[0] == 1 and norm0 == pytest.approx(0.5)
    assert y == pytest.approx(norm0 * (1 / KEEP) ** (t - 1))
    assert len(t) == PROBE_STEPS and record.quantity == "state h"
    lstm = next(r for r in probe_records(made["runs"]) if r.cell == "lstm")
    assert lstm.quantity == "memory c" and reference_line(lstm) is None


def test_explosion_figure_reports_the_measured_growth_beside_inverse_keep(made: dict) -> None:
    cases = {c["case"]: c for c in made["figures"]["explosion"].drawn["cases"]}
    gru = cases["GRU state_dropout"]
    assert gru["growth"] == pytest.approx(1 / KEEP) and gru["inv_keep"] == pytest.approx(1 / KEEP)
    assert gru["status"] == "diverged" and gru["overflow_at"] == 40
    assert cases["LSTM variational"]["inv_keep"] is None  # safe: no compounding mask
    assert cases["LSTM variational"]["growth"] == pytest.approx(1.001)
    # the explosion case is listed first
    assert next(iter(cases)) == "GRU state_dropout"
    # what the runs show is read from them, not typed into the figure's words (issue 27)
    words = made["figures"]["explosion"].how_to_read
    assert "At 1/keep here: GRU state_dropout" in words and "bounded: " in words
    assert "LSTM variational" in words.split("bounded: ")[1]


def svg_words(figure: SavedFigure) -> list[str]:
    """Every line of text in the figure, as its SVG keeps it (text stays text)."""
    svg = figure.path.with_suffix(".svg").read_text(encoding="utf-8")
    return [html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


def assert_each_state_fills_its_own_axis(figure: SavedFigure, records: list[ProbeRecord]) -> None:
    """Issue 25: on one shared log axis the bounded states were one invisible line at its foot.
    Each case has an axis of its own, which its finite norms span at least half of (in decades on
    a log axis); a log axis only where they span more than two decades, else linear from zero."""
    by_run = {r.run_name: r for r in records}
    cases = figure.drawn["cases"]
    assert sorted(c["run"] for c in cases) == sorted(by_run)
    for case in cases:
        norms = by_run[case["run"]].norms
        finite = norms[np.isfinite(norms) & (norms > 0)]
        low, high = case["y_limits"]
        assert low <= finite.min() and finite.max() <= high, case["case"]
        span = np.log10 if case["y_scale"] == "log" else (lambda v: v)
        assert (span(finite.max()) - span(finite.min())) / (span(high) - span(low)) >= 0.5, case["case"]
        assert (case["y_scale"] == "log") == (finite.max() > 100 * finite.min()), case["case"]
        assert case["y_scale"] == "log" or low == 0.0


def assert_words_come_from_the_runs(figure: SavedFigure, records: list[ProbeRecord]) -> None:
    """Every number in the figure is a tick or read from the runs: the measured growth, 1/keep
    where it applies, the training step a run diverged at; the fixed words carry none."""
    words = svg_words(figure)
    from_runs = set()
    repeated = {r.case for r in records if sum(o.case == r.case for o in records) > 1}
    for record in records:
        from_runs |= {record.case + (f", seed {record.seed}" if record.case in repeated else ""),
                      "no fit" if record.growth is None else f"×{record.growth:.3f}"}
        if record.expected_growth is not None:
            from_runs.add(f"1/keep = {record.expected_growth:.3f}")
        if record.status != "finished" and record.diverged_step is not None:
            from_runs.add(f"{record.status} at training step {record.diverged_step}")
    assert from_runs <= set(words), from_runs - set(words)
    fixed = [w for w in words if w not in from_runs and not re.fullmatch(r"[-−\d.,]+", w)]
    assert fixed and all(not re.search(r"\d", w.replace("1/keep", "").replace("1 = bounded", "")) for w in fixed), fixed


def test_explosion_figure_gives_every_case_an_axis_it_fills_with_words_from_the_runs(made: dict) -> None:
    records = probe_records(made["runs"])
    figure = made["figures"]["explosion"]
    assert_each_state_fills_its_own_axis(figure, records)
    scales = {c["case"]: c["y_scale"] for c in figure.drawn["cases"]}
    assert scales.pop("GRU state_dropout") == "log" and set(scales.values()) == {"linear"}
    assert_words_come_from_the_runs(figure, records)
    assert "1/keep = 2.000" in svg_words(figure) and "diverged at training step 11" in svg_words(figure)


def growing_probe(rate: float, *, memory: bool) -> dict:
    """A probe whose state (the LSTM's memory with ``memory``) grows by ``rate`` per step."""
    norms = [0.5 * rate ** t for t in range(PROBE_STEPS)]
    flat = flat_probe("lstm" if memory else "gru", 2.0)
    return {"state_norm": flat["state_norm"] if memory else norms, "cell_norm": norms if memory else None,
            "max_state": norms[-1], "growth_per_step": rate}


def test_one_over_keep_is_drawn_only_where_the_mask_is_on_the_state_the_probe_reads(tmp_path: Path) -> None:
    """State dropout at keep 0.75: the GRU's mask is on h, which its probe reads; the LSTM's is on h
    alone, while its probe reads the memory c, which h is recomputed from unmasked, so 1/keep is not
    what it can reach; with drop_cell the mask reaches c too. Each run's plan says which."""
    sweep = tmp_path / "sweep"
    write_job(sweep / "0", scheme="state_dropout", cell="gru", seed=0, val=[300.0], test=None, dropout=0.25,
              status="diverged", diverged_step=7, probe=growing_probe(4 / 3, memory=False))
    write_job(sweep / "1", scheme="state_dropout", cell="lstm", seed=0, val=[300.0, 250.0], test=240.0, dropout=0.25)
    write_job(sweep / "2", scheme="state_dropout", cell="lstm", seed=1, val=[300.0, 250.0], test=240.0, dropout=0.25,
              probe=growing_probe(1.05, memory=True), plan=resolved_plan("state_dropout", "lstm", 0.25, drop_cell=True))
    runs = collect([sweep])
    records = probe_records(runs)
    figures = {f.name: f for f in write_figures(runs, tmp_path / "figures")}
    cases = {c["run"]: c for c in figures["explosion"].drawn["cases"]}
    gru, h_only, drop_cell = cases["state_dropout-gru-s0"], cases["state_dropout-lstm-s0"], cases["state_dropout-lstm-s1"]
    assert gru["reference"] and gru["expected_growth"] == pytest.approx(4 / 3)
    assert drop_cell["reference"] and drop_cell["expected_growth"] == pytest.approx(4 / 3)
    assert not h_only["reference"] and h_only["expected_growth"] is None and h_only["inv_keep"] == pytest.approx(4 / 3)
    assert h_only["keep_note"] == "no 1/keep: its mask is on h, the probe reads c" and h_only["y_scale"] == "linear"
    assert {r["run"] for r in figures["state_norm"].drawn["references"]} == {"state_dropout-gru-s0",
                                                                             "state_dropout-lstm-s1"}
    assert_each_state_fills_its_own_axis(figures["explosion"], records)
    assert_words_come_from_the_runs(figures["explosion"], records)
    words = svg_words(figures["explosion"])
    assert words.count("1/keep = 1.333") == 2 and "1/keep = 2.000" not in words and h_only["keep_note"] in words


@pytest.mark.slow
def test_the_stability_study_sweep_draws_its_figure_from_what_its_runs_recorded(run_cli, tmp_path: Path) -> None:
    """The real sweep (experiment=gru_explosion, at toy size and four of its cases): the jobs'
    plans say which state their mask is on, and the figure draws from them alone."""
    out = tmp_path / "out"
    run_cli("-m", "experiment=gru_explosion", "debug=smoke", "case=gru_state,lstm_state,lstm_state_cell,gru_variational",
            f"paths.output_dir={out}", timeout=600)
    (sweep,) = (out / "sweeps").iterdir()
    runs = collect([sweep])
    records = probe_records(runs)
    figure = plot_explosion(records, tmp_path / "explosion.png")
    cases = {c["run"]: c for c in figure.drawn["cases"]}
    assert set(cases) == {"state_dropout-gru-s0", "state_dropout-lstm-s0", "state_dropout_cell-lstm-s0",
                          "variational-gru-s0"}
    assert {run for run, c in cases.items() if c["reference"]} == {"state_dropout-gru-s0", "state_dropout_cell-lstm-s0"}
    assert cases["state_dropout-lstm-s0"]["inv_keep"] == pytest.approx(4 / 3)  # dropout 0.25: it compounds, on h
    assert_each_state_fills_its_own_axis(figure, records)
    assert_words_come_from_the_runs(figure, records)


def test_growth_is_refitted_when_the_probe_did_not_record_it(tmp_path: Path) -> None:
    probe = exploding_probe(overflow_at=30) | {"growth_per_step": None}
    write_job(tmp_path / "sweep" / "0", scheme="state_dropout", cell="gru", seed=0, val=[300.0], test=None,
              status="diverged", diverged_step=4, probe=probe)
    (record,) = probe_records(collect([tmp_path / "sweep"]))
    assert record.growth == pytest.approx(1 / KEEP) and record.overflow_at == 30


def test_divergence_and_gradient_figures_mark_where_runs_stopped(made: dict) -> None:
    stopped = {r["run"]: r for r in made["figures"]["divergence"].drawn["runs"]}
    assert set(stopped) == {"state_dropout-gru-s0", "moon-gru-s0", "variational-gru-s1"}
    assert stopped["state_dropout-gru-s0"]["step"] == 11 and stopped["moon-gru-s0"]["step"] == 3
    assert stopped["variational-gru-s1"]["status"] == "failed"
    grad = made["figures"]["grad_norm"].drawn
    assert {(d["run"], d["step"]) for d in grad["diverged"]} == {("state_dropout-gru-s0", 11), ("moon-gru-s0", 3)}
    assert grad["clip"] == 5.0
    assert {line["kind"] for line in grad["lines"]} == {"interval"}


def test_seed_band_is_the_geometric_mean_and_range(made: dict) -> None:
    band = made["figures"]["val_ppl"].drawn["panels"]["LSTM"]["variational"]
    seeds = [FINISHED[("variational", "lstm", s)][0] for s in (0, 1)]
    assert band["x"] == [1.0, 2.0, 3.0] and band["n"] == [2, 2, 2]
    for i, (a, b) in enumerate(zip(*seeds)):
        assert band["centre"][i] == pytest.approx(math.sqrt(a * b))
        assert (band["low"][i], band["high"][i]) == (min(a, b), max(a, b))
    # the moon run diverged before its first validation: named, not silently absent
    assert made["figures"]["val_ppl"].drawn["missing"]["GRU"] == ["moon (diverged)"]


def test_test_figure_has_mean_sd_and_counts(made: dict) -> None:
    panels = made["figures"]["test_ppl"].drawn["panels"]
    tests = [FINISHED[("variational", "lstm", s)][1] for s in (0, 1)]
    lstm = panels["LSTM"]["variational"]
    assert lstm["mean"] == pytest.approx(np.mean(tests)) and lstm["sd"] == pytest.approx(np.std(tests, ddof=1))
    assert panels["GRU"]["variational"]["n"] == 1 and panels["GRU"]["variational"]["runs"] == 2
    assert panels["GRU"]["state_dropout"]["n"] == 0  # drawn as "no run finished"
    assert "_bayes_floor" not in panels["LSTM"]


def test_bayes_floor_is_drawn_where_known(tmp_path: Path) -> None:
    job = tmp_path / "sweep" / "0"
    write_job(job, scheme="none", cell="lstm", seed=0, val=[20.0, 15.0], test=14.0)
    summary = json.loads((job / "summary.json").read_text())
    (job / "summary.json").write_text(json.dumps({**summary, "bayes_test_ppl": 9.5}))
    from analysis.figures import plot_test_ppl

    figure = plot_test_ppl(collect([tmp_path / "sweep"]), tmp_path / "test_ppl.png")
    assert figure.drawn["panels"]["LSTM"]["_bayes_floor"] == pytest.approx(9.5)


def _figures_of(tmp_path: Path, jobs: list[dict]) -> list[SavedFigure]:
    for i, job in enumerate(jobs):
        write_job(tmp_path / "sweep" / str(i), **job)
    return write_figures(collect([tmp_path / "sweep"]), tmp_path / "figures")


def _strip_probes(job_dir: Path) -> None:
    lines = (job_dir / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["split"] != "probe"]
    (job_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))


def test_a_sweep_without_probes_gets_the_perplexity_figures(tmp_path: Path) -> None:
    write_job(tmp_path / "sweep" / "0", scheme="naive", cell="gru", seed=0, val=[300.0, 250.0], test=240.0)
    _strip_probes(tmp_path / "sweep" / "0")
    names = [f.name for f in write_figures(collect([tmp_path / "sweep"]), tmp_path / "figures")]
    assert names == ["val_ppl", "test_ppl", "train_vs_val_ppl", "train_ppl_steps", "grad_norm"]


def test_a_single_run_gets_every_figure_it_has_data_for(tmp_path: Path) -> None:
    names = [f.name for f in _figures_of(tmp_path, [dict(scheme="state_dropout", cell="lstm", seed=0,
                                                         val=[300.0, 250.0], test=240.0)])]
    assert names == ["val_ppl", "test_ppl", "train_vs_val_ppl", "train_ppl_steps", "state_norm", "grad_norm",
                     "explosion"]


def test_all_runs_diverged(tmp_path: Path) -> None:
    figures = _figures_of(tmp_path, [
        dict(scheme="state_dropout", cell="gru", seed=0, val=[], test=None, status="diverged", diverged_step=2,
             probe=exploding_probe(overflow_at=3)),
        dict(scheme="moon", cell="gru", seed=0, val=[], test=None, status="diverged", diverged_step=3)])
    names = [f.name for f in figures]
    assert names == ["state_norm", "grad_norm", "divergence", "explosion"]
    for figure in figures:
        assert all(p.is_file() for p in figure.files)


def test_a_scheme_the_suite_does_not_ship_is_in_every_figure_after_the_others_in_its_colour(tmp_path: Path) -> None:
    """Issue 16: a scheme added to the registry needs no change in analysis: every figure draws
    it, after the shipped schemes, in a colour no shipped scheme has."""
    build_sweep(tmp_path / "sweep")
    add_new_scheme(tmp_path / "sweep")
    figures = {f.name: f for f in write_figures(collect([tmp_path / "sweep"]), tmp_path / "figures")}
    assert tuple(figures) == ALL
    for name in ("val_ppl", "test_ppl", "train_vs_val_ppl"):
        for panel, groups in figures[name].drawn["panels"].items():
            assert list(groups)[-1] == NEW_SCHEME and set(list(groups)[:-1]) <= set(SCHEME_COLOURS), (name, panel)
    assert figures["train_ppl_steps"].drawn["groups"].count(NEW_SCHEME) == 4
    for name, key in (("state_norm", "lines"), ("grad_norm", "lines"), ("divergence", "runs"), ("explosion", "cases")):
        assert any(r["run"].startswith(f"{NEW_SCHEME}-") for r in figures[name].drawn[key]), name
    # its runs' plans say their state compounds at 0.5: the 1/keep reference comes from the plan alone
    new_lines = {r["run"] for r in figures["state_norm"].drawn["lines"] if r["run"].startswith(f"{NEW_SCHEME}-")}
    new_refs = {r["run"]: r for r in figures["state_norm"].drawn["references"] if r["run"] in new_lines}
    assert set(new_refs) == new_lines and all(r["per_step"] == pytest.approx(2.0) for r in new_refs.values())
    colour = scheme_colour(NEW_SCHEME)
    assert colour not in SCHEME_COLOURS.values()
    for name, figure in figures.items():
        assert colour in figure.path.with_suffix(".svg").read_text(encoding="utf-8"), name

def test_the_compounding_site_and_its_rate_are_the_recorded_plans() -> None:
    """Read from the plan each run recorded (the engine's ``describe()``), options included:
    no list of scheme names in analysis to keep in step with the registry."""
    assert compounding_site(resolved_plan("state_dropout", "gru", 0.25)) == ("state", 0.25)
    assert compounding_site(resolved_plan("state_dropout", "lstm", 0.3, drop_cell=True)) == ("state", 0.3)
    assert compounding_site(resolved_plan("state_dropout", "gru", 0.25, scaling="test")) is None
    assert compounding_site(resolved_plan("moon", "lstm", 0.4)) is None  # {0, 1} mask: nothing grows
    assert compounding_site(resolved_plan("moon", "lstm", 0.4, scaling="inverted")) == ("c", 0.4)
    assert compounding_site(resolved_plan("moon", "gru", 0.4, scaling="inverted")) == ("state", 0.4)
    for scheme in ("none", "naive", "variational", "semeniuta", "weightdrop", "zoneout"):
        for cell in ("lstm", "gru"):
            assert compounding_site(resolved_plan(scheme, cell, 0.5)) is None, (scheme, cell)
    assert compounding_site(None) is None  # a run written before runs recorded their plan


def test_one_scheme_and_cell_compounds_or_not_as_each_runs_plan_says(tmp_path: Path) -> None:
    """Two Moon GRU runs alike but for ``scheme.scaling``, and one written before plans were
    recorded: the reference and 1/keep follow each summary's plan, and the old run is still drawn."""
    for name, plan in (("test", True), ("inverted", resolved_plan("moon", "gru", 0.5, scaling="inverted")),
                       ("old", False)):
        write_job(tmp_path / "sweep" / name, scheme="moon", cell="gru", seed=0, val=[300.0], test=None,
                  status="diverged", diverged_step=4, probe=flat_probe("gru", 2.0), plan=plan)
    records = {Path(r.run_dir).name: r for r in probe_records(collect([tmp_path / "sweep"]))}
    assert (records["inverted"].site, records["inverted"].inv_keep) == ("state", pytest.approx(2.0))
    assert records["test"].site is None and records["test"].inv_keep is None and reference_line(records["test"]) is None
    assert records["old"].site is None and records["old"].growth == pytest.approx(1.001)
    figures = {f.name: f for f in write_figures(collect([tmp_path / "sweep"]), tmp_path / "figures")}
    assert len(figures["state_norm"].drawn["lines"]) == 3 and len(figures["state_norm"].drawn["references"]) == 1
    assert [c["inv_keep"] for c in figures["explosion"].drawn["cases"]].count(None) == 2


def test_a_per_site_dropout_mapping_sets_keep(tmp_path: Path) -> None:
    write_job(tmp_path / "sweep" / "0", scheme="state_dropout", cell="gru", seed=0, val=[300.0], test=None,
              status="diverged", diverged_step=4, probe=exploding_probe(), dropout={"state": 0.2})
    (record,) = probe_records(collect([tmp_path / "sweep"]))
    assert record.keep == pytest.approx(0.8)


def test_fit_growth_matches_the_jobs_formula() -> None:
    from benchmark.probes import growth_per_step

    norms = np.array([1.0, 1.5, 2.4, 3.1, 5.0, math.inf, math.nan, 0.0, 7.5])
    assert fit_growth(norms) == pytest.approx(growth_per_step(torch.tensor(norms)))
    assert fit_growth(np.array([1.0, math.nan])) is None


def test_legend_labels_read_like_the_paper() -> None:
    assert short_variant("scheme.drop_cell=true, dropout=0.3") == "drop_cell, dropout=0.3"
    assert short_variant("scheme.drop_cell=false") == ""
    assert group_label("state_dropout", "scheme.drop_cell=true") == "state_dropout (drop_cell)"
    assert group_label("naive", "") == "naive"


def test_a_run_is_read_from_the_probe_that_grew_fastest():
    """The weights that explode may be gone one update later; the fastest growth speaks for the run."""
    import pandas as pd

    from analysis.probes import probe_to_read

    events = pd.DataFrame([
        {"epoch": 1, "step": 1, "at": "step", "growth_per_step": 1.1},
        {"epoch": 1, "step": 3, "at": "step", "growth_per_step": 1.318},
        {"epoch": 1, "step": 4, "at": "step", "growth_per_step": 1.0008},
        {"epoch": 1, "step": 6, "at": "divergence", "growth_per_step": float("nan")},
    ])
    assert probe_to_read(events)["step"] == 3
    assert probe_to_read(events.iloc[[3]])["step"] == 6, "with no finite growth, the last probe is read"
