"""The GRU explosion study figure (``python run.py -m experiment=gru_explosion``): which
cases' carried state explodes, at what rate beside 1/keep, and which stays bounded.

One row per case, because the cases differ by orders of magnitude: an exploding state grows by
tens of decades in a probe while a bounded one moves within one, so on a shared axis the bounded
cases collapse into one invisible line at the foot (issue 25). Each row puts the
measured growth per step on an axis every row shares, beside 1/keep (left), and the state
norm on an axis of its own (right): logarithmic where it grows by orders of magnitude, linear
from zero where it does not. 1/keep, and the ``(1/keep)^t`` line, are drawn only where they
are the growth the probe can show (``ProbeRecord.expected_growth``): not for an LSTM whose mask
is on h alone. Every word in the figure is read from the runs (case, status, divergence step,
measured growth, rate); ``analysis.probes`` reads them, this module only draws.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, MaxNLocator

from analysis.plotting import OVERFLOW, REFERENCE_STYLE, SavedFigure, quiet_overflow, save_figure, scheme_colour, styled
from analysis.probes import ProbeRecord, reference_line
from analysis.runs import SCHEME_ORDER

CELL_MARKERS = {"gru": "o", "lstm": "s"}
# A state norm whose finite values span more than this many decades is drawn on a log axis:
# a linear one would show only its last steps. Below it a linear axis from zero shows the
# rise and the level it settles at.
LOG_DECADES = 2.0
# A measured growth within this fraction of 1/keep is "at 1/keep"; at most BOUNDED per step is bounded.
AT_KEEP = 0.05
BOUNDED = 1.05


def study_order(records: Sequence[ProbeRecord]) -> list[ProbeRecord]:
    """Cases whose state compounds first, then the rest; in scheme order, GRU before LSTM."""
    scheme_rank = {s: i for i, s in enumerate(SCHEME_ORDER)}
    cell_rank = {"gru": 0, "lstm": 1}
    return sorted(records, key=lambda r: (r.site is None, scheme_rank.get(r.scheme, len(scheme_rank)),
                                          cell_rank.get(r.cell, 2), r.case, r.run_name))


def row_label(record: ProbeRecord, seeded: bool = False) -> str:
    """The case (with its seed where the figure has several runs of it), and how its run ended
    when it did not finish (the step counts training steps)."""
    name = record.case + (f", seed {record.seed}" if seeded and record.seed is not None else "")
    if record.status == "finished":
        return name
    step = f" at training step {record.diverged_step}" if record.diverged_step is not None else ""
    return f"{name}\n{record.status}{step}"


def growth_text(record: ProbeRecord) -> str:
    """The measured growth per step as the figure writes it beside its dot."""
    return "no fit" if record.growth is None else f"×{record.growth:.3f}"


def explosion_reading(cases: Sequence[ProbeRecord]) -> str:
    """What this figure's runs show, from their measured growth (issue 27: no result typed into a caption).

    A run grows at 1/keep when its measured growth is within ``AT_KEEP`` of the 1/keep it can
    show, and is bounded when it grows by at most ``BOUNDED`` per step; the rest sit between.
    """
    at_keep = sorted({r.case for r in cases if r.growth is not None and r.expected_growth
                      and abs(r.growth / r.expected_growth - 1) <= AT_KEEP})
    bounded = sorted({r.case for r in cases if r.growth is not None and r.growth <= BOUNDED})
    between = sorted({r.case for r in cases if r.growth is not None} - set(at_keep) - set(bounded))
    parts = [f"{label}: {', '.join(names)}" for label, names in (
        ("At 1/keep here", at_keep), ("bounded", bounded), ("in between", between)) if names]
    return ("; ".join(parts) + ".") if parts else "No run here has a measured growth."


def keep_note(record: ProbeRecord) -> str | None:
    """Why a run whose mask compounds has no 1/keep drawn: its mask is not on the state the
    probe reads (an LSTM under state dropout masks h, the probe reads its memory c)."""
    if record.inv_keep is None or record.expected_growth is not None:
        return None
    if record.site_masks is None:
        return "no 1/keep: the run's plan does not say which state its mask is on"
    masked = " and ".join(record.site_masks) or "no carried state"
    return f"no 1/keep: its mask is on {masked}, the probe reads {record.measured}"


def _growth_row(ax: Any, record: ProbeRecord, x_limits: tuple[float, float], label: str) -> None:
    """One case's measured growth per step, with 1/keep where the probe can show it."""
    colour = scheme_colour(record.scheme)
    ax.axvline(1.0, color="0.55", linewidth=0.9)
    expected = record.expected_growth
    if expected:
        ax.plot([1.0, expected], [0, 0], color="0.87", linewidth=7, solid_capstyle="butt", zorder=0)
        ax.plot(expected, 0, marker="|", color="black", markersize=16, markeredgewidth=2)
        ax.annotate(f"1/keep = {expected:.3f}", (expected, 0), xytext=(5, -3), textcoords="offset points",
                    ha="left", va="top", fontsize=7.5)
    note = keep_note(record)
    if note:
        ax.annotate(note, (1.0, 0), xytext=(12, 0), textcoords="offset points", ha="left", va="center",
                    fontsize=7.5, color="0.35")
    if record.growth is not None:
        x = min(record.growth, x_limits[1])
        ax.plot(x, 0, marker=CELL_MARKERS.get(record.cell, "D"), color=colour, markersize=8,
                markeredgecolor="black", markeredgewidth=0.6, zorder=3)
    ax.annotate(growth_text(record), (min(record.growth or 1.0, x_limits[1]), 0), xytext=(0, 7),
                textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax.set_yticks([0], [label], fontsize=8)
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(-0.7, 0.9)
    ax.set_xlim(*x_limits)
    ax.grid(True, axis="x", alpha=0.3)
    ax.spines["left"].set_visible(False)


def _norm_row(ax: Any, record: ProbeRecord) -> dict[str, Any]:
    """One case's carried-state norm on an axis of its own; what was drawn, for the tests."""
    colour = scheme_colour(record.scheme)
    end = record.overflow_at if record.overflow_at is not None else len(record.norms)
    t, y = record.t[:end], record.norms[:end]
    finite = y[np.isfinite(y) & (y > 0)]
    ax.plot(t, y, color=colour, linewidth=1.3)
    if record.overflow_at is not None and end > 0:
        ax.plot(t[-1], y[-1], marker="^", color=colour, markersize=8, markeredgecolor="black")
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (1.0, 1.0)
    log = high > low * 10 ** LOG_DECADES
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(numticks=4))
        limits = (low / 2.0, high * 4.0)  # room above for an overflow's triangle
    else:
        ax.yaxis.set_major_locator(MaxNLocator(3))
        limits = (0.0, high * 1.15)
    ref = reference_line(record)
    if ref is not None:
        ax.plot(ref[0], ref[1], color=colour, linestyle=REFERENCE_STYLE, linewidth=1.1)
    ax.set_ylim(*limits)
    ax.set_xlim(0, len(record.norms) + 1)
    ax.grid(True, alpha=0.3)
    ax.annotate("log scale" if log else "linear scale", (0.99, 0.06), xycoords="axes fraction", ha="right",
                va="bottom", fontsize=7, color="0.4")
    return {"y_scale": "log" if log else "linear", "y_limits": limits, "reference": ref is not None,
            "norm0": None if ref is None else ref[2]}


@styled
def plot_explosion(records: Sequence[ProbeRecord], path: Path) -> SavedFigure | None:
    """The GRU explosion study: per case, the measured growth per step beside 1/keep and the
    state norm on an axis of its own (see the module docstring for why)."""
    if not any(r.inv_keep or r.overflow_at is not None or r.status == "diverged" for r in records):
        return None  # no state that compounds, nothing blew up: nothing to show (issue 25)
    cases = study_order(records)
    fig = Figure(figsize=(10.5, 0.8 * len(cases) + 1.7), layout="constrained")
    grid = fig.add_gridspec(len(cases), 2, width_ratios=[1, 1.3])
    growth_axes = [fig.add_subplot(grid[i, 0]) for i in range(len(cases))]
    norm_axes = [fig.add_subplot(grid[i, 1]) for i in range(len(cases))]
    for ax in growth_axes[1:]:
        ax.sharex(growth_axes[0])
    for ax in norm_axes[1:]:
        ax.sharex(norm_axes[0])
    xs = [r.growth for r in cases if r.growth is not None] + [r.expected_growth for r in cases if r.expected_growth]
    x_limits = (min(0.98, min(xs + [1.0]) - 0.02), max(xs + [1.05]) * 1.1)
    repeated = {case for case in (r.case for r in cases) if sum(r.case == case for r in cases) > 1}
    drawn_cases = []
    with quiet_overflow():
        for growth_ax, norm_ax, record in zip(growth_axes, norm_axes, cases):
            label = row_label(record, seeded=record.case in repeated)
            _growth_row(growth_ax, record, x_limits, label)
            drawn = _norm_row(norm_ax, record)
            drawn_cases.append({"case": record.case, "run": record.run_name, "cell": record.cell,
                                "scheme": record.scheme, "label": label, "growth": record.growth,
                                "growth_text": growth_text(record), "keep": record.keep,
                                "inv_keep": record.inv_keep, "expected_growth": record.expected_growth,
                                "keep_note": keep_note(record),
                                "status": record.status, "diverged_step": record.diverged_step,
                                "overflow_at": record.overflow_at, "quantity": record.quantity, **drawn})
    for ax in growth_axes[:-1] + norm_axes[:-1]:
        ax.tick_params(axis="x", labelbottom=False)
    growth_axes[0].set_title("Measured growth per step")
    norm_axes[0].set_title("Carried-state norm (LSTM: memory c, GRU: h), an axis per row")
    growth_axes[-1].set_xlabel("growth factor per step (1 = bounded)")
    norm_axes[-1].set_xlabel("time step t of the probe sequence (from a zero state, masks on)")
    handles = [Line2D([], [], color="0.5", marker=marker, linestyle="none", markeredgecolor="black",
                      label=f"measured, {cell.upper()}") for cell, marker in CELL_MARKERS.items()
               if any(r.cell == cell for r in cases)]
    if any(r.expected_growth for r in cases):
        handles += [Line2D([], [], color="black", marker="|", linestyle="none", markersize=10, markeredgewidth=2,
                           label="1/keep: the growth when the gate passes the masked state on"),
                    Line2D([], [], color="0.3", linestyle=REFERENCE_STYLE, label="(1/keep)$^t$ from t = 1")]
    if any(r.overflow_at is not None for r in cases):
        handles.append(OVERFLOW)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)))
    fig.suptitle("Growth of the carried state per step, beside 1/keep where the mask can compound it")
    files = save_figure(fig, path)
    return SavedFigure(
        path, "The GRU explosion study: growth per step beside 1/keep",
        "One row per run, from its fastest-growing probe. Left: the measured growth per step (exp of "
        "the least-squares slope of log-norm against t over the finite steps) on an axis every row shares; "
        "where the run's mask is on the state the probe reads, 1/keep as a black bar, the growth it "
        "reaches when the gate passes the masked state on. Right: the carried-state norm over the probe "
        "sequence on an axis of its own (log where it grows by more than two decades, else linear from "
        "zero), with (1/keep)^t dotted in the same colour where 1/keep applies.",
        "A dot on its bar is a state growing by the full 1/keep per step; a dot at 1 is a bounded "
        "state, whose norm levels off on its linear axis. " + explosion_reading(cases) + " Each run "
        "is read from its probe with the fastest growth: the weights that explode may not survive the "
        "next (huge, clipped) update; see the training-perplexity and gradient figures for the blow-up "
        "itself.",
        files=files, drawn={"cases": drawn_cases})
