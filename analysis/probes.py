"""Reading the stability probes: one record per run, the growth it measured, and what compounds.

Under TensorFlow-style state dropout a kept unit of the carried state is divided by ``keep``
at every step; where the cell carries that value on almost unchanged the state grows like
``(1/keep)^t``. The job's probes (``"split": "probe"`` events: the norm of the carried state
at each of 200 steps from a zero state, masks on) measure how fast it grew. This module turns
them into ``ProbeRecord``s with the measured growth per step, the first overflow, and the
compounding site and rate read from each run's recorded plan (``summary.json``'s ``plan``,
the engine's ``DropoutPlan.describe()``), so a scheme added to the registry needs no entry
here. ``analysis.stability`` draws them; nothing here draws (issue 27, item 4).

Runs written before runs recorded their plan have no compounding site: their probes are
still read (norms, measured growth, overflow), without the ``(1/keep)^t`` reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from analysis.plotting import cell_name, events_by_run, select, short_variant, with_groups
from analysis.runs import DROP_CELL_KEY, Runs, column, config_value, run_config, run_plan

# log10 of the largest value a reference line is computed to (float64 overflows at 308).
LOG10_MAX = 300.0



def masked_carried(plan: Mapping[str, Any] | None, site: str | None) -> tuple[str, ...] | None:
    """The carried values (``h``, the LSTM memory ``c``) the plan's ``site`` masks, from its
    ``masks_carried``; None where the plan does not say (recorded before plans listed them)."""
    record = ((plan or {}).get("sites") or {}).get(site)
    values = record.get("masks_carried") if isinstance(record, Mapping) else None
    return tuple(str(v) for v in values) if isinstance(values, list) else None


def compounding_site(plan: Mapping[str, Any] | None) -> tuple[str, float | None] | None:
    """``(site, rate)``: the site of a recorded plan whose mask compounds over time (the
    carried value multiplied by mask/keep every step), with its rate; None when no site
    compounds or the run recorded no plan (see the module docstring).

    Where several sites compound, the one with the highest rate: its 1/keep is the fastest
    growth the run can show. The rate is None when the plan's value is not a number.
    """
    if plan is None:
        return None
    found: list[tuple[str, float | None]] = []
    for name, site in (plan.get("sites") or {}).items():
        if isinstance(site, Mapping) and site.get("compounds") is True:
            rate = site.get("rate")
            found.append((str(name), float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool)
                          else None))
    if not found:
        return None
    return max(found, key=lambda f: -1.0 if f[1] is None else f[1])


def as_norms(values: Any) -> np.ndarray:
    """A probe's norm list as floats, NaN where the store wrote null (an overflowed value)."""
    if values is None or (isinstance(values, float) and math.isnan(values)):
        return np.array([], dtype=float)
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)


def fit_growth(norms: np.ndarray) -> float | None:
    """exp of the least-squares slope of log(norm) against t over the finite, positive
    steps: the factor the state grows by per step (the job's own formula, for probes
    that did not record it)."""
    t = np.arange(len(norms), dtype=float)
    ok = np.isfinite(norms) & (norms > 0)
    if ok.sum() < 3:
        return None
    t, y = t[ok], np.log(norms[ok])
    slope = float(((t - t.mean()) * (y - y.mean())).sum() / ((t - t.mean()) ** 2).sum())
    return math.exp(slope) if slope < 700 else math.inf


def first_overflow(norms: np.ndarray) -> int | None:
    """The first step (0-based) whose norm is not finite, None if all are."""
    bad = np.flatnonzero(~np.isfinite(norms))
    return int(bad[0]) if len(bad) else None


@dataclass(frozen=True)
class ProbeRecord:
    """The stability probe that speaks for one run (its fastest growth, see
    ``probe_to_read``), with what is needed to draw and judge it."""

    run_dir: str
    run_name: str
    seed: int | None
    scheme: str
    cell: str
    group: str
    case: str                # "LSTM state_dropout + drop_cell": cell and scheme as a reader names them
    label: str               # the case without the cell, for a panel that is already one cell
    status: str
    diverged_step: int | None
    diverged_what: str | None
    epoch: int | None
    step: int | None
    quantity: str            # "memory c" (LSTM) or "state h" (GRU): what growth is fitted to
    measured: str            # "c" or "h": the carried value the probe read
    norms: np.ndarray        # per step, NaN where it overflowed
    overflow_at: int | None  # first non-finite step (0-based), None if none
    growth: float | None     # measured growth per step
    max_state: float
    site: str | None         # the compounding mask site from the run's plan; None: none, or no plan recorded
    rate: float | None       # the plan's dropout rate at ``site``
    site_masks: tuple[str, ...] | None  # the carried values ``site`` masks; None: the plan does not say

    @property
    def keep(self) -> float | None:
        return None if self.rate is None or not 0 < self.rate < 1 else 1.0 - self.rate

    @property
    def inv_keep(self) -> float | None:
        return None if self.keep is None else 1.0 / self.keep

    @property
    def expected_growth(self) -> float | None:
        """1/keep where it is the growth the probe can show: the compounding mask is on the value
        the probe reads, so the state grows by 1/keep per step when the gate passes it on (the
        GRU's h; the LSTM's memory c only when its mask reaches c, as with ``drop_cell``). None
        otherwise: an LSTM whose mask is on h alone recomputes h from an unmasked c every step.
        A plan that does not list what its site masks: a GRU carries nothing but h, an LSTM is
        not known, so no expectation is drawn for it."""
        masks = self.site_masks if self.site_masks is not None else ("h",) if self.cell == "gru" else ()
        return self.inv_keep if self.measured in masks else None

    @property
    def t(self) -> np.ndarray:
        """Time steps 1..T (the state after reading the t-th token)."""
        return np.arange(1, len(self.norms) + 1)


def case_label(scheme: Any, variant: Any, drop_cell: bool, cell: Any = None) -> str:
    """``GRU state_dropout``, ``LSTM state_dropout + drop_cell``: a case of the study,
    named by what a reader of the paper knows, not by config keys."""
    label = (f"{cell_name(cell)} " if cell is not None else "") + str(scheme)
    label += " + drop_cell" if drop_cell else ""
    parts = [p for p in str(variant or "").split(", ") if p and not p.startswith("scheme.drop_cell=")]
    short = short_variant(", ".join(parts))
    return label + (f" ({short})" if short else "")


def optional_int(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def probe_to_read(events: pd.DataFrame) -> pd.Series:
    """The probe that speaks for a run: the one that measured the fastest growth per step.

    Stability asks whether the carried state ever grew geometrically, and the weights
    that make it explode may not survive the next update: on the GRU under state
    dropout (``experiment=gru_explosion``) the probe after the third update grew by
    x1.318 per step (1/keep = 1.333), while the probes after the huge clipped updates
    that followed read x1.0008, although the carried training state had reached 4.7e10.
    The training loop probes every step up to 16 for this reason. Without a finite
    growth anywhere, the last probe is read; among equal growths, the latest.
    """
    ordered_events = events.sort_values(["epoch", "step"], kind="stable", na_position="first")
    growth = pd.to_numeric(ordered_events.get("growth_per_step"), errors="coerce")
    finite = growth[np.isfinite(growth)] if growth is not None else None
    if finite is not None and len(finite):
        return ordered_events.loc[finite[::-1].idxmax()]  # on a tie, the latest
    return ordered_events.iloc[-1]


def probe_records(runs: Runs) -> list[ProbeRecord]:
    """One record per run that logged a probe, from its fastest-growing probe, in scheme order."""
    if not len(runs.events) or "split" not in runs.events.columns:
        return []
    probes = select(runs.events, split="probe")
    if probes.empty:
        return []
    by_run = events_by_run(probes)
    table = with_groups(runs.runs)
    variants = column(table, "variant", "")
    records = []
    for (_, run), variant in zip(table.iterrows(), variants):
        events = by_run.get(run["run_dir"])
        if events is None:
            continue
        last = probe_to_read(events)
        cell_norms = as_norms(last.get("cell_norm"))
        lstm_memory = len(cell_norms) > 0
        norms = cell_norms if lstm_memory else as_norms(last.get("state_norm"))
        if not len(norms):
            continue
        config = run_config(run.to_dict())
        plan = run_plan(run.to_dict())
        site, rate = compounding_site(plan) or (None, None)
        drop_cell = bool(config_value(config, DROP_CELL_KEY) or False)
        growth = last.get("growth_per_step")
        growth = float(growth) if growth is not None and np.isfinite(float(growth)) else fit_growth(norms)
        max_state = last.get("max_state")
        records.append(ProbeRecord(
            run_dir=str(run["run_dir"]), run_name=str(run["run_name"]), seed=optional_int(run.get("seed")),
            scheme=str(run["scheme"]),
            cell=str(run["cell"]), group=str(run["group"]),
            case=case_label(run["scheme"], variant, drop_cell, run["cell"]),
            label=case_label(run["scheme"], variant, drop_cell),
            status=str(run["status"]), diverged_step=optional_int(run.get("diverged_step")),
            diverged_what=optional_text(run.get("diverged_what")), epoch=optional_int(last.get("epoch")),
            step=optional_int(last.get("step")), quantity="memory c" if lstm_memory else "state h",
            measured="c" if lstm_memory else "h", norms=norms, overflow_at=first_overflow(norms), growth=growth,
            max_state=float(max_state) if max_state is not None else math.nan, site=site, rate=rate,
            site_masks=masked_carried(plan, site)))
    return records


def reference_line(record: ProbeRecord) -> tuple[np.ndarray, np.ndarray, float] | None:
    """``(t, norm_0 · (1/keep)^(t - t_0), norm_0)`` from the record's first finite step:
    what the state would do if every kept unit were carried on unchanged. None where 1/keep
    is not the growth the probe can show (``ProbeRecord.expected_growth``): no mask on the
    value it reads, or rate 0."""
    if record.expected_growth is None:
        return None
    finite = np.flatnonzero(np.isfinite(record.norms) & (record.norms > 0))
    if not len(finite):
        return None
    start = int(finite[0])
    t = record.t[start:]
    norm0 = float(record.norms[start])
    log10 = math.log10(norm0) + (t - t[0]) * math.log10(record.expected_growth)
    keep = log10 <= LOG10_MAX
    return t[keep], np.power(10.0, log10[keep]), norm0


# --- figures --------------------------------------------------------------------------
