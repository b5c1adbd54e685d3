"""The stability figures: carried-state norms, gradient norms, divergence, and the GRU
explosion study (drawn by ``analysis.explosion``), from the probe records ``analysis.probes`` reads.

Why these exist: under TensorFlow-style state dropout a kept unit of the carried state
is divided by ``keep`` at every step. Where the cell carries that value on almost
unchanged (a GRU whose update gate saturates; an LSTM whose memory ``c`` is masked too,
as TensorFlow did before 1.4), the state grows like ``(1/keep)^t`` until it overflows.
Perplexity only says *that* a run diverged; the probes say *how fast* the state grew, so a
figure can put the measured growth per step beside ``1/keep``. Which site compounds, at
what rate and on which state, is the run's recorded plan (see ``analysis.probes``): the
``(1/keep)^t`` reference is drawn only where the mask is on the state the probe reads, and
runs without a plan are drawn without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.explosion import plot_explosion
from analysis.probes import ProbeRecord, optional_int, optional_text, probe_records, reference_line
from analysis.runs import CLIP_KEY, SCHEME_ORDER, Runs, config_value, run_config
from analysis.plotting import (OVERFLOW, REFERENCE_STYLE, VARIANT_STYLES, SavedFigure, align_titles, cell_name, curve,
                               events_by_run, group_handles, group_order, legend, note_above, panel_runs,
                               panels, quiet_overflow, save_figure, scheme_colour, select,
                               styled, variant_style, with_groups)


# --- drawing ----------------------------------------------------------------------------

# (1/keep)^t is the growth when the kept state passes on unchanged (a GRU whose update gate saturates,
# an LSTM memory whose forget gate does): a bound the cell reaches only then, not a prediction.
REFERENCE = Line2D([], [], color="0.3", linestyle=REFERENCE_STYLE, label="(1/keep)$^t$ if the gate passes the state on")


def _log_limits(values: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """y limits that show every finite measured value, with headroom, on a log axis."""
    finite = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values]) if values else np.array([])
    if not len(finite):
        return None
    low, high = float(finite.min()) * 0.5, float(finite.max()) * 8.0
    return low, max(high, low * 100)


def _note_stopped(ax: Any, records: Sequence[ProbeRecord]) -> None:
    """Say above the panel which lines come from runs that did not finish: their probe is
    the last one before they stopped, not one after a finished epoch."""
    stopped = [f"{r.label} ({r.status}" + (f" at training step {r.diverged_step})" if r.diverged_step is not None else ")")
               for r in records if r.status != "finished"]
    if stopped:
        note_above(ax, "did not finish: " + ", ".join(dict.fromkeys(stopped)))


def _label_styles(records: Sequence[ProbeRecord]) -> dict[str, Any]:
    """A line style per case label: drop_cell dash-dotted (as in the study figure), other
    variants of one scheme told apart by the remaining styles in order."""
    styles: dict[str, Any] = {}
    others = [s for s in VARIANT_STYLES if s != "-."]
    for scheme in dict.fromkeys(r.scheme for r in records):
        labels = sorted({r.label for r in records if r.scheme == scheme}, key=lambda x: (len(x), x))
        plain = [label for label in labels if "drop_cell" not in label]
        for i, label in enumerate(plain):
            styles[label] = others[i % len(others)]
        for label in labels:
            styles.setdefault(label, "-.")
    return styles


def _label_handles(records: Sequence[ProbeRecord], styles: Mapping[str, Any]) -> list[Line2D]:
    order = {s: i for i, s in enumerate(SCHEME_ORDER)}
    seen = sorted({(r.label, r.scheme) for r in records},
                  key=lambda p: (order.get(p[1], len(order)), len(p[0]), p[0]))
    return [Line2D([], [], color=scheme_colour(scheme), linestyle=styles[label], label=label)
            for label, scheme in seen]


@styled
def plot_state_norms(runs: Runs, records: Sequence[ProbeRecord], path: Path) -> SavedFigure | None:
    """Carried-state norm against time step, one panel per cell, a line per run, with the
    ``(1/keep)^t`` reference for runs whose scheme masks the carried state."""
    if not records:
        return None
    table = with_groups(runs.runs)
    by_dir = {r.run_dir: r for r in records}
    panel_list = [(title, [by_dir[d] for d in subset["run_dir"] if d in by_dir])
                  for title, subset in panel_runs(table)]
    panel_list = [(title, recs) for title, recs in panel_list if recs]
    fig, axes = panels(len(panel_list), "norm of the carried state (log scale)",
                       "time step t (from a zero state, masks on)", sharey=False)
    styles = _label_styles(records)
    lines, references, overflowed = [], [], False
    with quiet_overflow():
        for ax, (title, recs) in zip(axes, panel_list):
            quantities = sorted({r.quantity for r in recs})
            ax.set_title(f"{title}: {' / '.join(quantities)}")
            for record in recs:
                colour = scheme_colour(record.scheme)
                end = record.overflow_at if record.overflow_at is not None else len(record.norms)
                t, y = record.t[:end], record.norms[:end]
                ax.plot(t, y, color=colour, linestyle=styles[record.label], linewidth=1.3)
                if record.overflow_at is not None and end > 0:
                    ax.plot(t[-1], y[-1], marker="^", color=colour, markersize=8, markeredgecolor="black")
                    overflowed = True
                lines.append({"run": record.run_name, "case": record.case, "cell": record.cell,
                              "growth": record.growth, "overflow_at": record.overflow_at,
                              "epoch": record.epoch, "step": record.step})
                ref = reference_line(record)
                if ref is not None:
                    ax.plot(ref[0], ref[1], color=colour, linestyle=REFERENCE_STYLE, linewidth=1.1, alpha=0.9)
                    references.append({"run": record.run_name, "case": record.case, "keep": record.keep,
                                       "per_step": record.expected_growth, "norm0": ref[2]})
            _note_stopped(ax, recs)
            limits = _log_limits([r.norms for r in recs])
            if limits:
                ax.set_ylim(*limits)
            ax.set_xlim(0, max(len(r.norms) for r in recs) + 1)
    align_titles(axes)
    fig.suptitle("Carried-state norm over a probe sequence (each run's fastest-growing probe)")
    extra = ([REFERENCE] if references else []) + ([OVERFLOW] if overflowed else [])
    legend(fig, _label_handles(records, styles) + extra)
    files = save_figure(fig, path)
    return SavedFigure(
        path, "Stability: carried-state norm against time step",
        "Each run's stability probe with the fastest growth (probes run at every step up to 16, then "
        "at steps 32, 64, 128, ..., and after every epoch): the recurrent "
        "stack reads 200 steps of validation text from a zero state with dropout masks on, and "
        "the line is the mean over the batch of the L2 norm of the carried state at each step "
        "(the LSTM's memory c, the GRU's h). Dotted, in the same colour: the (1/keep)^t growth "
        "the state reaches when the gate passes the masked state on, from the run's first step, "
        "drawn where the run's mask is on the state the probe reads. A triangle marks the last "
        "finite value of a state that overflowed.",
        "A flat line is a bounded state. A line running parallel to its dotted reference grows by "
        "1/keep per step: the explosion (on a log axis a geometric growth is a straight line). "
        "LSTM under plain state dropout stays flat because its memory c is not masked; masking c "
        "as well (drop_cell, TensorFlow before 1.4) or using a GRU lets the growth compound.",
        files=files, drawn={"lines": lines, "references": references})


def _clip_threshold(runs: Runs) -> float | None:
    """``train.clip`` when every run used the same one, so one line can show it."""
    values = set()
    for run in runs.runs.to_dict("records"):
        clip = config_value(run_config(run), CLIP_KEY)
        values.add(float(clip) if isinstance(clip, (int, float)) and not isinstance(clip, bool) else None)
    return values.pop() if len(values) == 1 else None


def _grad_curve(events: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Interval gradient norms, or the per-epoch maxima when no interval logged one."""
    points = curve(select(events, split="train", scope="interval"), "step", "grad_norm")
    if not points.empty:
        return points.rename(columns={"grad_norm": "value"}), "interval"
    points = curve(select(events, split="train", scope="epoch"), "step", "grad_norm_max")
    return points.rename(columns={"grad_norm_max": "value"}), "epoch max"


@styled
def plot_grad_norms(runs: Runs, path: Path) -> SavedFigure | None:
    """Gradient norm (before clipping) over training, with a mark where a run diverged."""
    table = with_groups(runs.runs)
    by_run = events_by_run(runs.events)
    panel_list = list(panel_runs(table))
    if not panel_list:
        return None
    fig, axes = panels(len(panel_list), "gradient norm before clipping (log scale)", "optimizer step")
    drawn: list[dict[str, Any]] = []
    diverged: list[dict[str, Any]] = []
    groups_drawn: list[str] = []
    clip = _clip_threshold(runs)
    with quiet_overflow():
        for ax, (title, subset) in zip(axes, panel_list):
            ax.set_title(title)
            for run in subset.itertuples(index=False):
                colour = scheme_colour(run.scheme)
                events = by_run.get(run.run_dir)
                if events is not None:
                    points, kind = _grad_curve(events)
                    if not points.empty:
                        ax.plot(points["step"], points["value"], color=colour, linewidth=1.0, alpha=0.85,
                                linestyle=variant_style(table, run.group),
                                marker="." if len(points) <= 40 else None, markersize=3)
                        drawn.append({"run": run.run_name, "kind": kind, "points": len(points)})
                        groups_drawn.append(run.group)
                step = optional_int(run.diverged_step)
                if run.status == "diverged" and step is not None:
                    ax.axvline(step, color=colour, linestyle=":", linewidth=1.2)
                    ax.plot(step, 1.0, marker="X", color=colour, markersize=9, markeredgecolor="black",
                            transform=ax.get_xaxis_transform(), clip_on=False)
                    diverged.append({"run": run.run_name, "step": step, "what": optional_text(run.diverged_what)})
                    groups_drawn.append(run.group)
            if clip is not None:
                ax.axhline(clip, color="0.4", linestyle="--", linewidth=0.9)
            ax.set_xlim(left=0)
    if not drawn and not diverged:
        return None
    fig.suptitle("Gradient norm over training")
    extra = []
    if clip is not None:
        extra.append(Line2D([], [], color="0.4", linestyle="--", label=f"clipping threshold ({clip:g})"))
    if diverged:
        extra.append(Line2D([], [], color="0.3", marker="X", linestyle=":", markeredgecolor="black",
                            label="diverged at this step"))
    legend(fig, group_handles(table, [g for g in group_order(table) if g in groups_drawn]) + extra)
    files = save_figure(fig, path)
    return SavedFigure(
        path, "Stability: gradient norm over training",
        "The norm of the whole gradient before clipping, at every logging interval (the "
        "per-epoch maximum where a run logged no interval), one line per run. A cross on the top "
        "edge and a dotted vertical line mark the step at which a run diverged.",
        "Healthy runs stay within an order of magnitude of the clipping threshold (dashed), "
        "mostly below it. A norm that climbs by orders of magnitude before a cross is an exploding "
        "state feeding an exploding gradient; clipping bounds the update but not the state.",
        files=files, drawn={"lines": drawn, "diverged": diverged, "clip": clip})


def _last_step(events: pd.DataFrame | None) -> int | None:
    if events is None or "step" not in events.columns:
        return None
    steps = pd.to_numeric(events["step"], errors="coerce").dropna()
    return int(steps.max()) if len(steps) else None


@styled
def plot_divergence(runs: Runs, path: Path) -> SavedFigure | None:
    """Where and when runs stopped: one row per run that did not finish."""
    table = with_groups(runs.runs)
    bad = table[table["status"] != "finished"]
    if bad.empty:
        return None
    by_run = events_by_run(runs.events)
    finished_steps = [s for d in table.loc[table["status"] == "finished", "run_dir"]
                      if (s := _last_step(by_run.get(d))) is not None]
    fig = Figure(figsize=(7.0, 0.34 * len(bad) + 1.5), layout="constrained")
    ax = fig.subplots()
    ax.set_xscale("log")
    rows: list[dict[str, Any]] = []
    labels = []
    for i, run in enumerate(bad.itertuples(index=False)):
        colour = scheme_colour(run.scheme)
        step = optional_int(run.diverged_step)
        last = step or _last_step(by_run.get(run.run_dir)) or 1
        ax.plot([1, max(last, 1)], [i, i], color=colour, linewidth=4, alpha=0.6, solid_capstyle="butt")
        what = optional_text(run.diverged_what)
        if run.status == "diverged":
            ax.plot(last, i, marker="X", color=colour, markersize=10, markeredgecolor="black")
            note = f"diverged at step {last}" + (f" ({what})" if what else "")
        else:
            error = optional_text(getattr(run, "error", None))
            note = f"{run.status}" + (f": {error[:60]}" if error else "")
        ax.annotate(note, (max(last, 1), i), xytext=(8, 0), textcoords="offset points", va="center", fontsize=8)
        seed = optional_int(run.seed)
        labels.append(f"{cell_name(run.cell)} {run.group}" + (f" s{seed}" if seed is not None else ""))
        rows.append({"run": run.run_name, "status": run.status, "step": last, "what": what})
    top = -0.5 - (0.7 if finished_steps else 0)
    if finished_steps:
        ax.axvline(max(finished_steps), color="0.5", linestyle="--", linewidth=1)
        ax.annotate(f"finished runs trained to step {max(finished_steps)}", (max(finished_steps), top),
                    xytext=(-4, 3), textcoords="offset points", ha="right", va="top", fontsize=7.5, color="0.35")
    right = max([r["step"] for r in rows] + finished_steps + [10])
    ax.set_xlim(0.8, right * 12)  # room for the notes right of the last point
    ax.set_ylim(len(bad) - 0.5, top)
    ax.set_yticks(range(len(bad)), labels)
    ax.set_xlabel("optimizer step (log scale)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle("Where and when runs stopped")
    files = save_figure(fig, path)
    return SavedFigure(
        path, "Stability: where and when runs diverged",
        "One row per run that did not finish: the bar spans the optimizer steps it trained, a "
        "cross marks the step at which a non-finite loss or gradient stopped it (what went "
        "non-finite in brackets). The dashed line is how far the finished runs trained.",
        "Early crosses (the first steps) mean the scheme is unstable from initialisation, not "
        "unlucky late in training. Compare with the state-norm figure: a run whose state grows "
        "like (1/keep)^t diverges within the first segments.",
        files=files, drawn={"runs": rows})


def stability_figures(runs: Runs, fig_dir: Path) -> list[SavedFigure | None]:
    """The stability figures in report order (None for those without data)."""
    records = probe_records(runs)
    return [plot_state_norms(runs, records, fig_dir / "state_norm.png"),
            plot_grad_norms(runs, fig_dir / "grad_norm.png"),
            plot_divergence(runs, fig_dir / "divergence.png"),
            plot_explosion(records, fig_dir / "explosion.png")]
