"""Learning-curve figures, saved as PNG for the report.

Figures are built with ``matplotlib.figure.Figure`` directly, never ``pyplot``: no
global backend or figure registry is touched, so this works headless (Agg, the PNG
renderer) and inside other programs, and figures are freed when they go out of scope.

Every figure has one panel per cell (LSTM, GRU) on a shared logarithmic perplexity
axis (perplexity is exp(loss), and diverging runs span orders of magnitude), one line
per run, coloured by scheme with the same colour in every figure and every report.
A run that did not finish ends with a cross.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import Formatter, MaxNLocator

from analysis.collect import CELL_ORDER, SCHEME_ORDER, Runs, ordered

# Fixed colours for the schemes the suite ships (matplotlib's tab10, colour-blind-aware
# enough for eight lines), so a scheme keeps its colour across sweeps and reports.
SCHEME_COLOURS = {
    "none": "#4d4d4d",
    "naive": "#1f77b4",
    "variational": "#ff7f0e",
    "moon": "#2ca02c",
    "semeniuta": "#d62728",
    "weightdrop": "#9467bd",
    "zoneout": "#8c564b",
    "state_dropout": "#e377c2",
}
# Colours for other scheme names: the rest of tab10 and dark hues that are not lighter
# or darker twins of the fixed ones (a pale orange would read as "variational").
FALLBACK_COLOURS = ("#bcbd22", "#17becf", "#1b9e77", "#7570b3", "#e6ab02", "#000080",
                    "#800000")


@dataclass(frozen=True)
class SavedFigure:
    """A PNG on disk and the words the report shows with it."""

    path: Path
    title: str
    caption: str


def scheme_colour(scheme: str) -> str:
    """The colour of a scheme: fixed for known names, a stable hash pick for others.

    The hash is MD5 of the name rather than ``hash()``, which Python salts per process:
    an unknown scheme must get the same colour in every report.
    """
    if scheme in SCHEME_COLOURS:
        return SCHEME_COLOURS[scheme]
    digest = hashlib.md5(str(scheme).encode("utf-8")).digest()
    return FALLBACK_COLOURS[int.from_bytes(digest[:4], "big") % len(FALLBACK_COLOURS)]


def _curve(events: pd.DataFrame, x: str) -> pd.DataFrame:
    """Points ``(x, ppl)`` of one run, one per ``x`` (the last logged wins, as on a
    resumed job), sorted, with non-finite or non-positive perplexities dropped (a log
    axis cannot show them; divergence is marked separately)."""
    points = events[[x, "ppl"]].dropna()
    ppl = pd.to_numeric(points["ppl"], errors="coerce").astype(float)
    # A numeric mask, never a ``map`` result: an empty object-dtype Series would index columns.
    points = points[np.isfinite(ppl) & (ppl > 0)]
    return points.drop_duplicates(subset=x, keep="last").sort_values(x)


def _panel_runs(runs: Runs) -> Iterator[tuple[str, pd.DataFrame]]:
    """(panel title, runs) per cell, and per data set too when a sweep has several:
    perplexities on different corpora do not belong on one axis."""
    table = runs.runs
    data_sets = ordered(table["data"].dropna().tolist(), ())
    for data in data_sets if len(data_sets) > 1 else [None]:
        subset = table if data is None else table[table["data"] == data]
        for cell in ordered(subset["cell"].dropna().tolist(), CELL_ORDER):
            name = cell.upper() if cell in CELL_ORDER else cell
            yield (name if data is None else f"{data}: {name}"), subset[subset["cell"] == cell]


class _PplFormatter(Formatter):
    """Perplexity tick labels as plain numbers (200, 5000, 1e6 past 100000).

    Minor ticks (200, 300, ... between powers of ten) are labelled only when the axis
    spans little, so that a typical comparison (150 to 400) has readable ticks and a
    diverging run (100 to 1e6) does not produce a wall of labels.
    """

    def __init__(self, minor: bool) -> None:
        self.minor = minor

    def __call__(self, x: float, pos: int | None = None) -> str:
        if not (math.isfinite(x) and x > 0):
            return ""
        if self.minor:
            low, high = sorted(self.axis.get_view_interval()) if self.axis else (x, x)
            decades = math.log10(high / low) if low > 0 else math.inf
            mantissa = round(x / 10 ** math.floor(math.log10(x) + 1e-9))
            if decades > 2 or (decades > 1 and mantissa not in (2, 5)):
                return ""
        return f"{x:.0e}".replace("e+0", "e").replace("e+", "e") if x >= 1e5 else f"{x:g}"


def _panels(n: int, ylabel: str, xlabel: str) -> tuple[Figure, list]:
    fig = Figure(figsize=(4.2 * n + 1.8, 3.6), dpi=110, layout="constrained")
    axes = list(fig.subplots(1, n, sharey=True, squeeze=False)[0])
    for ax in axes:
        ax.set_yscale("log")
        # Plain numbers (200, 300) rather than 2x10^2: perplexities are read off, not
        # estimated; minor ticks get labels only while the range is narrow.
        ax.yaxis.set_major_formatter(_PplFormatter(minor=False))
        ax.yaxis.set_minor_formatter(_PplFormatter(minor=True))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.grid(True, which="major", alpha=0.3)
        ax.grid(True, which="minor", alpha=0.1)
    axes[0].set_ylabel(ylabel)
    return fig, axes


def _legend(fig: Figure, schemes: list[str], extra: list[Line2D]) -> None:
    handles = [Line2D([], [], color=scheme_colour(s), label=s) for s in schemes] + extra
    fig.legend(handles=handles, loc="outside right upper", fontsize="small", frameon=False)


# What a figure draws for each run: (line style, legend label, event filter).
Selection = list[tuple[str, str, dict[str, str]]]


def _plot_runs(runs: Runs, path: Path, *, select: Selection, x: str, xlabel: str,
               title: str) -> list[str] | None:
    """Draw one line per run and selection, save to ``path``; the schemes drawn, or None
    when there is nothing to draw (no PNG is written then)."""
    events = runs.events
    by_run = dict(tuple(events.groupby("run_dir", sort=False))) if len(events) else {}
    panels = list(_panel_runs(runs))
    if not panels:
        return None
    fig, axes = _panels(len(panels), "perplexity (log scale)", xlabel)
    schemes_drawn: list[str] = []
    unfinished_drawn = False
    for ax, (panel_title, table) in zip(axes, panels):
        ax.set_title(panel_title)
        for run in table.itertuples(index=False):
            run_events = by_run.get(run.run_dir)
            if run_events is None:
                continue
            colour = scheme_colour(run.scheme)
            for style, _label, where in select:
                mask = pd.Series(True, index=run_events.index)
                for key, value in where.items():
                    mask &= run_events[key] == value
                points = _curve(run_events[mask.fillna(False).astype(bool)], x)
                if points.empty:
                    continue
                ax.plot(points[x], points["ppl"], linestyle=style, color=colour, linewidth=1.2,
                        marker="." if len(points) <= 40 else None, markersize=4, alpha=0.85)
                if run.status != "finished":
                    ax.plot(points[x].iloc[-1], points["ppl"].iloc[-1], marker="x", color=colour,
                            markersize=8, markeredgewidth=2)
                    unfinished_drawn = True
                schemes_drawn.append(run.scheme)
    if not schemes_drawn:
        return None
    fig.suptitle(title)
    extra = [Line2D([], [], color="grey", linestyle=style, label=label)
             for style, label, _where in select] if len(select) > 1 else []
    if unfinished_drawn:
        extra.append(Line2D([], [], color="black", marker="x", linestyle="none",
                            label="did not finish (last point)"))
    _legend(fig, ordered(schemes_drawn, SCHEME_ORDER), extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return schemes_drawn


def plot_val_ppl(runs: Runs, path: Path) -> SavedFigure | None:
    """Validation perplexity per epoch: the main comparison between schemes."""
    drawn = _plot_runs(runs, path, select=[("-", "validation", {"split": "val"})], x="epoch",
                       xlabel="epoch", title="Validation perplexity")
    if drawn is None:
        return None
    return SavedFigure(path, "Validation perplexity per epoch",
                       "One line per run, coloured by scheme; one panel per cell. "
                       "A cross marks the last point of a run that diverged or failed.")


def plot_overfitting(runs: Runs, path: Path) -> SavedFigure | None:
    """Train (whole-epoch average) against validation perplexity per epoch.

    The gap between the two is what dropout is meant to close: without dropout the
    train curve keeps falling while validation turns up.
    """
    drawn = _plot_runs(runs, path, select=[("-", "validation", {"split": "val"}),
                               (":", "train (epoch mean)", {"split": "train", "scope": "epoch"})],
                       x="epoch", xlabel="epoch", title="Train vs validation perplexity")
    if drawn is None:
        return None
    return SavedFigure(path, "Over-fitting: train vs validation perplexity per epoch",
                       "Solid: validation; dotted: training average over the epoch (with "
                       "dropout active). A widening gap is over-fitting.")


def plot_train_steps(runs: Runs, path: Path) -> SavedFigure | None:
    """Training perplexity at every logging interval: where a run becomes unstable."""
    drawn = _plot_runs(runs, path, select=[("-", "train", {"split": "train", "scope": "interval"})],
                       x="step", xlabel="optimizer step", title="Training perplexity")
    if drawn is None:
        return None
    return SavedFigure(path, "Training perplexity per logging interval",
                       "Mean over each logging interval. Spikes and crosses show instability, "
                       "such as the GRU state explosion under state dropout.")


def write_figures(runs: Runs, fig_dir: Path) -> list[SavedFigure]:
    """Every figure that has data, saved under ``fig_dir``, in report order."""
    fig_dir = Path(fig_dir)
    made = [plot_val_ppl(runs, fig_dir / "val_ppl.png"),
            plot_overfitting(runs, fig_dir / "train_vs_val_ppl.png"),
            plot_train_steps(runs, fig_dir / "train_ppl_steps.png")]
    return [figure for figure in made if figure is not None]
