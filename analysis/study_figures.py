"""The study's figures: every tuning trial, and every seeded run's test perplexity.

Drawn by ``analysis.study_report`` into the results directory as PNG, SVG and PDF, from the
same committed CSVs as its tables (``runs.csv``, ``trials.csv``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import study_tables as tables
from analysis.runs import CELL_ORDER, SCHEME_ORDER, ordered

FIGURES = ("tuning", "seeds")



def _save(fig: Any, out: Path, name: str) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = []
    for suffix in ("png", "svg", "pdf"):
        path = out / f"{name}.{suffix}"
        fig.savefig(path, dpi=130, **({"metadata": {"Date": None}} if suffix == "svg" else
                                      {"metadata": {"CreationDate": None}} if suffix == "pdf" else {}))
        paths.append(path)
    plt.close(fig)
    return paths


def tuning_figure(trials: pd.DataFrame, runs: pd.DataFrame, out: Path) -> list[Path]:
    """Every tuning trial's best validation perplexity: schemes down, grid points across, one panel per cell.

    The point each scheme was re-run at is boxed; a diverged trial is marked as such; ``naive``
    has no recurrent rate, so only its ``rec = -`` column is filled.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = ordered(trials.cell, CELL_ORDER)
    ffs = sorted(trials.rate_ff.dropna().unique())
    recs = [math.nan, *sorted(trials.rate_rec.dropna().unique())]
    columns = [(f, r) for f in ffs for r in recs]
    schemes = ordered(trials.scheme, SCHEME_ORDER)
    finite = trials[trials.status == "finished"].best_val_ppl
    low, high = (float(finite.min()), float(finite.quantile(0.9))) if len(finite) else (0.0, 1.0)
    fig, axes = plt.subplots(1, len(cells), figsize=(1.0 + 0.9 * len(columns) * len(cells), 1.2 + 0.5 * len(schemes)),
                             squeeze=False, layout="constrained")
    first = runs[runs.setting == tables.settings_of(runs)[0]] if len(runs) else runs
    image = None
    for ax, cell in zip(axes[0], cells):
        grid = np.full((len(schemes), len(columns)), np.nan)
        for i, scheme in enumerate(schemes):
            rows = trials[(trials.cell == cell) & (trials.scheme == scheme)]
            chosen = first[(first.cell == cell) & (first.scheme == scheme)]
            for j, (f, r) in enumerate(columns):
                hit = rows[np.isclose(rows.rate_ff, f) & (rows.rate_rec.isna() if math.isnan(r) else np.isclose(rows.rate_rec, r))]
                if hit.empty:
                    continue
                t = hit.iloc[0]
                if t.status == "finished":
                    grid[i, j] = t.best_val_ppl
                    ax.text(j, i, f"{t.best_val_ppl:.0f}", ha="center", va="center", fontsize=7)
                else:
                    ax.text(j, i, "div." if t.status == "diverged" else t.status[:4], ha="center", va="center",
                            fontsize=7, color="crimson")
                if len(chosen) and np.isclose(chosen.rate_ff.iloc[0], f) and (
                        (math.isnan(r) and chosen.rate_rec.isna().iloc[0]) or np.isclose(chosen.rate_rec.iloc[0], r)):
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, linewidth=2, edgecolor="black"))
        image = ax.imshow(grid, cmap="viridis_r", vmin=low, vmax=high, aspect="auto")
        ax.set_xticks(range(len(columns)), [f"ff {f:g}\nrec {'-' if math.isnan(r) else f'{r:g}'}" for f, r in columns],
                      fontsize=7)
        ax.set_yticks(range(len(schemes)), schemes, fontsize=8)
        ax.set_title(f"{cell.upper()}: best validation ppl per trial (seed {int(trials.seed.iloc[0])})", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="best validation perplexity")
    return _save(fig, out, "tuning")


def seeds_figure(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Test perplexity of every seeded run: one dot per seed, a bar at the mean, per setting x cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from analysis.plotting import scheme_colour

    settings, cells = tables.settings_of(runs), ordered(runs.cell, CELL_ORDER)
    fig, axes = plt.subplots(len(settings), len(cells), figsize=(5.2 * len(cells), 3.2 * len(settings)),
                             squeeze=False, layout="constrained")
    for row, setting in enumerate(settings):
        for col, cell in enumerate(cells):
            ax = axes[row][col]
            here = runs[(runs.setting == setting) & (runs.cell == cell)]
            schemes = ordered(here.scheme, SCHEME_ORDER)
            for i, scheme in enumerate(schemes):
                done = here[(here.scheme == scheme) & (here.status == "finished")].test_ppl.astype(float)
                jitter = np.linspace(-0.18, 0.18, len(done)) if len(done) else []
                ax.plot(i + np.asarray(jitter), done, "o", markersize=3, alpha=0.7, color=scheme_colour(scheme))
                if len(done):
                    ax.hlines(done.mean(), i - 0.3, i + 0.3, color="black", linewidth=1.2)
                failed = int((here.scheme == scheme).sum() - len(done))
                if failed:
                    ax.annotate(f"{failed} div.", (i, 1.0), xycoords=("data", "axes fraction"), ha="center",
                                va="top", fontsize=7, color="crimson")
            ax.set_xticks(range(len(schemes)), schemes, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{setting}, {cell.upper()}", fontsize=9)
            ax.set_ylabel("test perplexity")
            ax.grid(axis="y", alpha=0.3)
    return _save(fig, out, "seeds")
