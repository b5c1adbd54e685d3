"""The perplexity figures, and ``write_figures``, which makes every figure of the report.

Every figure has one panel per cell (LSTM, GRU), one colour per scheme (the same in
every figure and every report, see ``analysis.plotting.SCHEME_COLOURS``) and, where
runs differ only by seed, one line per scheme: the geometric mean over seeds with a
shaded min-max band. A run that did not finish ends with a cross. Perplexity axes are
logarithmic: perplexity is exp(loss), and diverging runs span orders of magnitude.

The stability figures (carried-state norms, gradient norms, divergence, the GRU
explosion study) are in ``analysis.stability`` and ``analysis.explosion``.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from analysis import stability
from analysis.runs import Runs
from analysis.plotting import (FALLBACK_COLOURS, PPL_CAP, SCHEME_COLOURS, SavedFigure, align_titles, cap,
                               curve, events_by_run, group_handles, group_order, legend, log_y, note_above,
                               panel_runs, panels, quiet_overflow, save_figure, scheme_colour, seed_band, select,
                               styled, variant_style, with_groups)

__all__ = ["FALLBACK_COLOURS", "SCHEME_COLOURS", "SavedFigure", "scheme_colour", "plot_val_ppl",
           "plot_test_ppl", "plot_overfitting", "plot_train_steps", "write_figures"]

UNFINISHED = Line2D([], [], color="black", marker="x", linestyle="none", markersize=6,
                    label="did not finish (last point)")
CLIPPED = Line2D([], [], color="black", marker="^", linestyle="none", markersize=5,
                 label=f"above {PPL_CAP:.0e} (drawn at it)")


def _draw_band(ax: Any, band: pd.DataFrame, x: str, colour: str, style: Any) -> None:
    """The seed band and its centre line; markers only while points are few."""
    if band.empty:
        return
    centre, over = cap(band["centre"])
    if (band["n"] > 1).any():
        ax.fill_between(band[x], cap(band["low"])[0], cap(band["high"])[0], color=colour, alpha=0.18,
                        linewidth=0)
    ax.plot(band[x], centre, color=colour, linestyle=style, marker="." if len(band) <= 40 else None,
            markersize=4)
    if over.any():
        ax.plot(band[x][over], centre[over], linestyle="none", marker="^", color=colour, markersize=5)


def _band_record(band: pd.DataFrame, x: str) -> dict[str, list[float]]:
    return {key: [float(v) for v in band[col]] for key, col in
            (("x", x), ("centre", "centre"), ("low", "low"), ("high", "high"), ("n", "n"))}


def _note_missing(ax: Any, subset: pd.DataFrame, drawn_dirs: set[str]) -> list[str]:
    """Name, inside the panel, the runs that stopped before logging any point: a
    diverged run must never simply be absent from a figure."""
    missing = subset[~subset["run_dir"].isin(drawn_dirs) & (subset["status"] != "finished")]
    names = list(dict.fromkeys(f"{g} ({s})" for g, s in zip(missing["group"], missing["status"])))
    if names:  # above the panel, under its title: it must not cover a curve
        note_above(ax, "no point logged: " + ", ".join(names))
    return names


def _curves(runs: pd.DataFrame, by_run: dict[str, pd.DataFrame], x: str, where: dict[str, str]
            ) -> list[tuple[Any, pd.DataFrame]]:
    """(run row, its curve) for each run that has points under ``where``."""
    found = []
    for run in runs.itertuples(index=False):
        events = by_run.get(run.run_dir)
        if events is None:
            continue
        points = curve(select(events, **where), x)
        if not points.empty:
            found.append((run, points))
    return found


def _plot_bands(runs: Runs, png: Path, *, where: dict[str, str], x: str, xlabel: str,
                suptitle: str) -> dict[str, Any] | None:
    """One panel per cell, one band per group; what was drawn, or None if nothing was."""
    table = with_groups(runs.runs)
    by_run = events_by_run(runs.events)
    panel_list = list(panel_runs(table))
    if not panel_list:
        return None
    fig, axes = panels(len(panel_list), "perplexity (log scale)", xlabel)
    drawn: dict[str, Any] = {}
    groups_drawn: list[str] = []
    missing: dict[str, list[str]] = {}
    unfinished = False
    with quiet_overflow():
        for ax, (title, subset) in zip(axes, panel_list):
            ax.set_title(title)
            drawn_dirs: set[str] = set()
            for group in group_order(subset):
                members = subset[subset["group"] == group]
                found = _curves(members, by_run, x, where)
                if not found:
                    continue
                colour = scheme_colour(members["scheme"].iloc[0])
                band = seed_band([points for _run, points in found], x)
                _draw_band(ax, band, x, colour, variant_style(table, group))
                for run, points in found:
                    drawn_dirs.add(run.run_dir)
                    if run.status != "finished":
                        y, _ = cap(points["ppl"].iloc[-1:])
                        ax.plot(points[x].iloc[-1], y[0], marker="x", color=colour, markersize=7,
                                markeredgewidth=2)
                        unfinished = True
                drawn.setdefault(title, {})[group] = _band_record(band, x)
                groups_drawn.append(group)
            missing[title] = _note_missing(ax, subset, drawn_dirs)
            if x == "epoch":  # a one-epoch sweep otherwise reads 0.96, 0.98, 1.00 ... (issue 25)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if not groups_drawn:
        return None
    align_titles(axes)
    fig.suptitle(suptitle)
    ordered_groups = [g for g in group_order(table) if g in groups_drawn]
    legend(fig, group_handles(table, ordered_groups) + ([UNFINISHED] if unfinished else []))
    ticks = [float(t) for t in axes[0].get_xticks() if axes[0].get_xlim()[0] <= t <= axes[0].get_xlim()[1]]
    return {"panels": drawn, "missing": missing, "x_ticks": ticks, "files": save_figure(fig, png)}


@styled
def plot_val_ppl(runs: Runs, path: Path) -> SavedFigure | None:
    """Validation perplexity per epoch: the main comparison between schemes."""
    drawn = _plot_bands(runs, path, where={"split": "val"}, x="epoch", xlabel="epoch",
                        suptitle="Validation perplexity per epoch")
    if drawn is None:
        return None
    return SavedFigure(
        path, "Validation perplexity per epoch",
        "One panel per cell; one line per scheme: the geometric mean over seeds, with the "
        "min-max range over seeds shaded. A cross marks the last logged point of a run that "
        "diverged or failed.",
        "Lower is better. Compare the schemes at the right-hand end; a band that is wide "
        "compared with the gap between two lines means the seeds do not separate them. A line "
        "that turns up late is over-fitting (see the train-vs-validation figure).",
        files=drawn.pop("files"), drawn=drawn)


@styled
def plot_overfitting(runs: Runs, path: Path) -> SavedFigure | None:
    """Train (whole-epoch average, dropout on) against validation perplexity, per scheme.

    Small multiples (a row per cell, a column per scheme) rather than one crowded panel:
    the quantity of interest is the gap between two lines of the same scheme.
    """
    table = with_groups(runs.runs)
    by_run = events_by_run(runs.events)
    panel_list = list(panel_runs(table))
    groups = group_order(table)
    if not panel_list or not groups:
        return None
    fig = Figure(figsize=(1.75 * len(groups) + 0.9, 1.75 * len(panel_list) + 1.1), layout="constrained")
    grid = fig.subplots(len(panel_list), len(groups), sharex=True, sharey=True, squeeze=False)
    drawn: dict[str, Any] = {}
    with quiet_overflow():
        for row, (title, subset) in enumerate(panel_list):
            for col, group in enumerate(groups):
                ax = grid[row][col]
                log_y(ax)
                if row == 0:
                    ax.set_title(textwrap.fill(group, 22), fontsize=8.5)
                if col == 0:
                    ax.set_ylabel(f"{title}\nperplexity")
                if row == len(panel_list) - 1:
                    ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
                members = subset[subset["group"] == group]
                if members.empty:
                    ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center", va="center",
                            color="0.6", fontsize=8)
                    continue
                colour = scheme_colour(members["scheme"].iloc[0])
                for style, where, key in (("-", {"split": "val"}, "val"),
                                          ("--", {"split": "train", "scope": "epoch"}, "train")):
                    found = _curves(members, by_run, "epoch", where)
                    band = seed_band([points for _run, points in found], "epoch")
                    _draw_band(ax, band, "epoch", colour, style)
                    drawn.setdefault(title, {}).setdefault(group, {})[key] = _band_record(band, "epoch")
    if not any(rec.get("val", {}).get("x") or rec.get("train", {}).get("x")
               for panel in drawn.values() for rec in panel.values()):
        return None
    fig.suptitle("Over-fitting: train vs validation perplexity")
    fig.legend(handles=[Line2D([], [], color="0.3", linestyle="-", label="validation"),
                        Line2D([], [], color="0.3", linestyle="--", label="train (epoch mean, dropout on)")],
               loc="outside lower center", ncols=2)
    files = save_figure(fig, path)
    return SavedFigure(
        path, "Over-fitting: train vs validation perplexity",
        "A row per cell, a column per scheme. Solid: validation perplexity; dashed: the "
        "training perplexity averaged over each epoch, with dropout active. Lines are "
        "geometric means over seeds, bands the min-max range.",
        "Without dropout the dashed line keeps falling while the solid one flattens or turns "
        "up: a widening gap is over-fitting. Dropout raises the dashed line (training is "
        "noisier) and should keep the solid one low; a dashed line above the solid one is "
        "normal under strong dropout.",
        files=files, drawn={"panels": drawn})


@styled
def plot_train_steps(runs: Runs, path: Path) -> SavedFigure | None:
    """Training perplexity at every logging interval, one line per run: where a run
    becomes unstable is a per-run event, so seeds are not averaged here."""
    table = with_groups(runs.runs)
    by_run = events_by_run(runs.events)
    panel_list = list(panel_runs(table))
    if not panel_list:
        return None
    fig, axes = panels(len(panel_list), "training perplexity (log scale)", "optimizer step")
    groups_drawn: list[str] = []
    unfinished = clipped = False
    with quiet_overflow():
        for ax, (title, subset) in zip(axes, panel_list):
            ax.set_title(title)
            found = _curves(subset, by_run, "step", {"split": "train", "scope": "interval"})
            _note_missing(ax, subset, {run.run_dir for run, _points in found})
            for run, points in found:
                colour = scheme_colour(run.scheme)
                y, over = cap(points["ppl"])
                ax.plot(points["step"], y, color=colour, linestyle=variant_style(table, run.group),
                        linewidth=1.0, alpha=0.85, marker="." if len(points) <= 40 else None, markersize=3)
                if over.any():
                    ax.plot(points["step"][over], y[over], linestyle="none", marker="^", color=colour)
                    clipped = True
                if run.status != "finished":
                    ax.plot(points["step"].iloc[-1], y[-1], marker="x", color=colour, markersize=7,
                            markeredgewidth=2)
                    unfinished = True
                groups_drawn.append(run.group)
    if not groups_drawn:
        return None
    align_titles(axes)
    fig.suptitle("Training perplexity per logging interval")
    handles = group_handles(table, [g for g in group_order(table) if g in groups_drawn])
    legend(fig, handles + ([UNFINISHED] if unfinished else []) + ([CLIPPED] if clipped else []))
    files = save_figure(fig, path)
    return SavedFigure(
        path, "Training perplexity per logging interval",
        "One line per run (seeds are not averaged): the mean training perplexity over each "
        "logging interval, dropout on. A cross marks a run's last point before it diverged or "
        "failed; a triangle a value too large to draw.",
        "Smooth, falling lines are healthy. Spikes, and lines that shoot up and end in a cross, "
        "are instability, such as the GRU state explosion under state dropout; the stability "
        "figures below show what grew.",
        files=files, drawn={"groups": groups_drawn})


def _finished_scores(table: pd.DataFrame, column: str) -> pd.Series:
    scores = pd.to_numeric(table.loc[table["status"] == "finished", column], errors="coerce").astype(float)
    return scores[np.isfinite(scores)]


@styled
def plot_test_ppl(runs: Runs, path: Path) -> SavedFigure | None:
    """Final test perplexity per scheme and cell: mean ± sd over finished seeds, every
    seed as a dot, and the Bayes floor (the best any model can do on a corpus with a
    known distribution) where the runs report one."""
    table = with_groups(runs.runs)
    if _finished_scores(table, "test_ppl").empty:
        return None
    panel_list = list(panel_runs(table))
    most = max(subset["group"].nunique() for _title, subset in panel_list)
    fig, axes = panels(len(panel_list), "test perplexity", "", log=False,
                       width=max(2.4, 0.4 * most + 1.0), height=3.2)
    drawn: dict[str, Any] = {}
    bayes_drawn = False
    for ax, (title, subset) in zip(axes, panel_list):
        ax.set_title(title)
        record: dict[str, Any] = {}
        groups = group_order(subset)  # only this panel's: no empty slots
        for i, group in enumerate(groups):
            members = subset[subset["group"] == group]
            colour = scheme_colour(members["scheme"].iloc[0])
            scores = _finished_scores(members, "test_ppl")
            unfinished = int((members["status"] != "finished").sum())
            if unfinished:  # above the panel, labelled: at the foot it read as the best score (issue 25)
                label = "none finished" if scores.empty else f"{unfinished} of {len(members)} not finished"
                ax.plot(i, 1.0, marker="x", color=colour, markersize=7, markeredgewidth=2,
                        transform=ax.get_xaxis_transform(), clip_on=False)
                ax.annotate(label, (i, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 6),
                            textcoords="offset points", rotation=90, ha="center", va="bottom", fontsize=7,
                            color=colour)
            if scores.empty:
                record[group] = {"mean": math.nan, "sd": math.nan, "n": 0, "runs": len(members),
                                 "unfinished": unfinished, "marker": "top"}
                continue
            jitter = np.linspace(-0.12, 0.12, len(scores)) if len(scores) > 1 else np.zeros(1)
            ax.plot(i + jitter, scores, linestyle="none", marker="o", markersize=3, color=colour, alpha=0.5)
            mean, sd = float(scores.mean()), float(scores.std(ddof=1)) if len(scores) > 1 else math.nan
            ax.errorbar(i, mean, yerr=None if math.isnan(sd) else sd, fmt="D", color=colour,
                        markersize=5, capsize=4, elinewidth=1.4)
            record[group] = {"mean": mean, "sd": sd, "n": int(len(scores)), "runs": len(members),
                             "unfinished": unfinished, "marker": "top" if unfinished else None}
        bayes = _finished_scores(subset, "bayes_test_ppl")
        if not bayes.empty:
            floor = float(bayes.mean())
            ax.axhline(floor, color="black", linestyle="--", linewidth=1)
            ax.annotate(f"Bayes floor {floor:.3g}", (0.01, floor), xycoords=("axes fraction", "data"),
                        xytext=(0, 3), textcoords="offset points", fontsize=7.5)
            record["_bayes_floor"] = floor
            bayes_drawn = True
        ax.set_xticks(range(len(groups)), groups, rotation=35, ha="right")
        ax.set_xlim(-0.6, len(groups) - 0.4)
        drawn[title] = record
    fig.suptitle("Test perplexity (the weights train.test_weights names; best-validation by default)")
    handles = [Line2D([], [], marker="D", color="0.3", linestyle="none", label="mean ± sd over seeds"),
               Line2D([], [], marker="o", color="0.3", alpha=0.5, linestyle="none", markersize=3, label="one seed"),
               Line2D([], [], marker="x", color="0.3", linestyle="none", markeredgewidth=2,
                      label="runs that did not finish (above the panel)")]
    if bayes_drawn:
        handles.append(Line2D([], [], color="black", linestyle="--", label="Bayes floor"))
    legend(fig, handles)
    files = save_figure(fig, path)
    return SavedFigure(
        path, "Final test perplexity by scheme and cell",
        "Test perplexity of the weights each run's train.test_weights names (the best-validation "
        "epoch's by default, the last epoch's where a paper preset tests those): a diamond with error bars is the mean "
        "± sample sd over the finished seeds, dots are single seeds, a cross above the panel, "
        "labelled, marks a scheme with runs that diverged or failed (they have no test score). The dashed line is the Bayes floor, "
        "the perplexity of the true distribution, where the corpus has one.",
        "Lower is better; two schemes whose error bars overlap are not separated by this many "
        "seeds. The distance to the Bayes floor is what regularisation can still win.",
        files=files, drawn={"panels": drawn})


def write_figures(runs: Runs, fig_dir: Path) -> list[SavedFigure]:
    """Every figure that has data, saved under ``fig_dir`` as PNG and SVG, in report order.

    A figure without data (no probe events, nothing finished) is left out, never an
    error: a sweep of one diverged run still gets a report.
    """
    fig_dir = Path(fig_dir)
    made = [plot_val_ppl(runs, fig_dir / "val_ppl.png"),
            plot_test_ppl(runs, fig_dir / "test_ppl.png"),
            plot_overfitting(runs, fig_dir / "train_vs_val_ppl.png"),
            plot_train_steps(runs, fig_dir / "train_ppl_steps.png"),
            *stability.stability_figures(runs, fig_dir)]
    return [figure for figure in made if figure is not None]
