"""What every figure shares: scheme colours, run groups, seed bands, axes and saving.

Figures are built with ``matplotlib.figure.Figure`` directly, never ``pyplot``: no
global backend or figure registry is touched, so this works headless (Agg, the PNG
renderer) and inside other programs, and figures are freed when they go out of scope.

Each figure is saved twice: PNG for the report page and SVG (text kept as text) for a
paper, so the numbers in a figure never need re-drawing by hand.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import Formatter, MaxNLocator

from analysis.runs import CELL_ORDER, SCHEME_ORDER, column, ordered

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
# Line styles that tell apart variants of one scheme (a dropout rate, drop_cell) in a
# panel where colour already means the scheme.
VARIANT_STYLES = ("-", "--", "-.", (0, (1, 1)), (0, (5, 1, 1, 1, 1, 1)))
# Dotted: a reference the measurements are read against (the (1/keep)^t growth), never a measurement.
REFERENCE_STYLE = (0, (1, 1.5))
# The legend entry of the triangle that marks a state's last finite value before it overflowed.
OVERFLOW = Line2D([], [], color="black", marker="^", linestyle="none", markersize=6,
                  label="overflowed to inf/nan after this step")
FORMATS = ("png", "svg", "pdf")  # PDF and SVG for papers (issue 15)
PNG_DPI = 150
# Perplexities above this are drawn at it (with an upward triangle): a run that reached
# 1e300 would otherwise squash every other curve into one pixel row.
PPL_CAP = 1e8

# Sizes chosen for a two-column paper at 100 % (and a report page at any width).
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.titlesize": 11,
    "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none",
    "legend.frameon": False, "lines.linewidth": 1.4,
}


@dataclass(frozen=True)
class SavedFigure:
    """A figure on disk and the words the report shows with it.

    ``path`` is the PNG (what the page embeds), ``files`` every format written (PNG
    first), ``caption`` what is drawn, ``how_to_read`` what to look for, and ``drawn``
    a plain-data record of what was plotted (the numbers behind the reference lines and
    markers), so tests and readers can check a figure without reading pixels.
    """

    path: Path
    title: str
    caption: str
    how_to_read: str = ""
    files: tuple[Path, ...] = ()
    drawn: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem


F = TypeVar("F", bound=Callable[..., Any])


def styled(function: F) -> F:
    """Run a plotting function under ``STYLE`` without changing the caller's rcParams."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def scheme_colour(scheme: str) -> str:
    """The colour of a scheme: fixed for known names, a stable hash pick for others.

    The hash is MD5 of the name rather than ``hash()``, which Python salts per process:
    an unknown scheme must get the same colour in every report.
    """
    if scheme in SCHEME_COLOURS:
        return SCHEME_COLOURS[scheme]
    digest = hashlib.md5(str(scheme).encode("utf-8")).digest()
    return FALLBACK_COLOURS[int.from_bytes(digest[:4], "big") % len(FALLBACK_COLOURS)]


def save_figure(fig: Figure, png: Path) -> tuple[Path, ...]:
    """Write ``fig`` as ``png`` and beside it in every other ``FORMATS``; the paths.

    The SVG and PDF carry no date, so re-running the report on the same runs gives the same files.
    """
    png.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in FORMATS:
        path = png.with_suffix(f".{fmt}")
        metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt, {"Software": None})
        with matplotlib.rc_context({"svg.hashsalt": "rnn-dropout-bench"}):
            fig.savefig(path, format=fmt, dpi=PNG_DPI, metadata=metadata)
        written.append(path)
    return tuple(written)


# --- runs, panels and groups ----------------------------------------------------------

def short_variant(variant: Any) -> str:
    """A variant label for a legend: ``scheme.drop_cell=true, dropout=0.3`` reads
    ``drop_cell, dropout=0.3``. A flag that is off is left out: two variants of one
    scheme differ in some key, and a label without the off flags still differs."""
    if not isinstance(variant, str) or not variant:
        return ""
    parts = []
    for part in variant.split(", "):
        key, sep, value = part.partition("=")
        key = key.removeprefix("scheme.")
        if sep and value == "false":
            continue
        parts.append(key if sep and value == "true" else f"{key}{sep}{value}")
    return ", ".join(parts)


def group_label(scheme: Any, variant: Any) -> str:
    """``scheme`` or ``scheme (variant)``: seeds are the only thing a group averages over."""
    scheme = str(scheme) if isinstance(scheme, str) else "?"
    short = short_variant(variant)
    return f"{scheme} ({short})" if short else scheme


def with_groups(table: pd.DataFrame) -> pd.DataFrame:
    """The run table with a ``group`` column, rows in scheme order then variant."""
    table = table.copy()
    variant = column(table, "variant", "")
    table["group"] = [group_label(s, v) for s, v in zip(table["scheme"], variant)]
    return table


def group_order(table: pd.DataFrame) -> list[str]:
    """Groups in the one order every figure and table uses: scheme, then variant."""
    rank = {s: i for i, s in enumerate(ordered(table["scheme"].dropna().tolist(), SCHEME_ORDER))}
    pairs = {(g, s) for g, s in zip(table["group"], table["scheme"])}
    return [g for g, s in sorted(pairs, key=lambda p: (rank.get(p[1], len(rank)), p[0]))]


def variant_style(table: pd.DataFrame, group: str) -> Any:
    """The line style of a group: solid for a scheme's first variant, then dashes."""
    scheme = table.loc[table["group"] == group, "scheme"].iloc[0]
    siblings = [g for g in group_order(table) if table.loc[table["group"] == g, "scheme"].iloc[0] == scheme]
    return VARIANT_STYLES[siblings.index(group) % len(VARIANT_STYLES)]


def panel_runs(table: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(panel title, runs) per cell, and per data set too when a sweep has several:
    perplexities on different corpora do not belong on one axis."""
    data_sets = ordered(table["data"].dropna().tolist(), ())
    for data in data_sets if len(data_sets) > 1 else [None]:
        subset = table if data is None else table[table["data"] == data]
        for cell in ordered(subset["cell"].dropna().tolist(), CELL_ORDER):
            yield (cell_name(cell) if data is None else f"{data}: {cell_name(cell)}"), subset[subset["cell"] == cell]


def cell_name(cell: Any) -> str:
    return str(cell).upper() if cell in CELL_ORDER else str(cell)


def events_by_run(events: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return dict(tuple(events.groupby("run_dir", sort=False))) if len(events) else {}


def select(events: pd.DataFrame, **where: Any) -> pd.DataFrame:
    """The events matching every ``column=value`` (a missing column matches nothing)."""
    mask = pd.Series(True, index=events.index)
    for key, value in where.items():
        if key not in events.columns:
            return events.iloc[0:0]
        mask &= (events[key] == value).fillna(False).astype(bool)
    return events[mask]


def curve(events: pd.DataFrame, x: str, y: str = "ppl") -> pd.DataFrame:
    """Points ``(x, y)`` of one run, one per ``x`` (the last logged wins, as on a resumed
    job), sorted, with non-finite or non-positive values dropped (a log axis cannot show
    them; divergence is marked separately)."""
    if y not in events.columns or x not in events.columns:
        return pd.DataFrame({x: [], y: []})
    points = events[[x, y]].copy()
    points[x] = pd.to_numeric(points[x], errors="coerce").astype(float)
    points[y] = pd.to_numeric(points[y], errors="coerce").astype(float)
    # A numeric mask, never a ``map`` result: an empty object-dtype Series would index columns.
    points = points[np.isfinite(points[x]) & np.isfinite(points[y]) & (points[y] > 0)]
    return points.drop_duplicates(subset=x, keep="last").sort_values(x).reset_index(drop=True)


def seed_band(curves: Sequence[pd.DataFrame], x: str, y: str = "ppl") -> pd.DataFrame:
    """Across seeds, per ``x``: the geometric mean (``centre``), ``low``/``high`` (min and
    max) and ``n``.

    Geometric, because the axes are logarithmic and one diverging seed must not drag
    the line of the others up by orders of magnitude; min-max, because with the 1-5
    seeds a sweep affords, an sd band would pretend to a precision it does not have.
    """
    if not curves:
        return pd.DataFrame({x: [], "centre": [], "low": [], "high": [], "n": []})
    stacked = pd.concat([c[[x, y]] for c in curves], ignore_index=True)
    grouped = stacked.groupby(x)[y]
    band = pd.DataFrame({
        "centre": grouped.apply(lambda v: float(np.exp(np.log(v).mean()))),
        "low": grouped.min(), "high": grouped.max(), "n": grouped.count()})
    return band.reset_index()


# --- axes -----------------------------------------------------------------------------

class PplFormatter(Formatter):
    """Log-axis tick labels as plain numbers (200, 5000, 1e6 past 100000).

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
        if x >= 1e5 or x < 1e-3:
            return f"{x:.0e}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
        return f"{x:g}"


def log_y(ax: Any, integer_x: bool = True) -> None:
    """A logarithmic y axis with plain-number labels and a light grid."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PplFormatter(minor=False))
    ax.yaxis.set_minor_formatter(PplFormatter(minor=True))
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)


def panels(n: int, ylabel: str, xlabel: str, *, sharey: bool = True, log: bool = True,
           width: float = 3.6, height: float = 3.0) -> tuple[Figure, list[Any]]:
    """A row of ``n`` panels with room on the right for an outside legend."""
    fig = Figure(figsize=(width * n + 1.9, height), layout="constrained")
    axes = list(fig.subplots(1, n, sharey=sharey, squeeze=False)[0])
    for ax in axes:
        if log:
            log_y(ax)
        else:
            ax.grid(True, alpha=0.3)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    return fig, axes


def legend(fig: Figure, handles: list[Line2D]) -> None:
    """One legend for the figure, right of the panels so that it never covers data; the
    figure grows taller when the legend would not fit beside them."""
    if not handles:
        return
    width, height = fig.get_size_inches()
    needed = 0.2 * len(handles) + 0.5
    if needed > height:
        fig.set_size_inches(width, needed)
    fig.legend(handles=handles, loc="outside right center")


def group_handles(table: pd.DataFrame, groups: Sequence[str]) -> list[Line2D]:
    handles = []
    for group in groups:
        scheme = table.loc[table["group"] == group, "scheme"].iloc[0]
        handles.append(Line2D([], [], color=scheme_colour(scheme), linestyle=variant_style(table, group),
                              label=group))
    return handles


def note_above(ax: Any, text: str) -> None:
    """A small note between a panel's title and its axes, where it cannot cover data."""
    wrapped = textwrap.fill(text, 70)
    ax.note_pad = 4 + 9 * (wrapped.count("\n") + 1)  # read by align_titles
    ax.set_title(ax.get_title(), pad=ax.note_pad)
    ax.annotate(wrapped, (0.5, 1.0), xycoords="axes fraction", xytext=(0, 2), textcoords="offset points",
                ha="center", va="bottom", fontsize=7, color="0.3")


def align_titles(axes: Sequence[Any]) -> None:
    """Give every panel the title padding of the one with the tallest note, so that the
    titles of a row of panels stay on one line."""
    pad = max((getattr(ax, "note_pad", 0) for ax in axes), default=0)
    if pad:
        for ax in axes:
            ax.set_title(ax.get_title(), pad=pad)


def cap(values: pd.Series | np.ndarray, limit: float = PPL_CAP) -> tuple[np.ndarray, np.ndarray]:
    """``values`` clipped at ``limit``, and a mask of the clipped ones (drawn as ▲)."""
    array = np.asarray(values, dtype=float)
    over = array > limit
    return np.where(over, limit, array), over


@contextlib.contextmanager
def quiet_overflow() -> Iterator[None]:
    """Silence numpy's overflow warnings while drawing huge values on a log axis (they
    are drawn, clipped, on purpose; the warning would only alarm the reader)."""
    with np.errstate(over="ignore", invalid="ignore"):
        yield
