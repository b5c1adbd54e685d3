"""The published study (docs/results/study_cpu): its tables are what its committed runs give.

Issues 14 and 22: no number in docs/results or in the README's study blocks is typed by hand.
``analysis.publish.check`` re-renders every table, figure caption and README block from the
committed ``runs.csv``, ``trials.csv`` and ``study.json`` and compares them character for
character (``tests/test_published.py`` runs it on every results directory). The design checks
below read the same files: equal budget, seeds never the tuning seed, the best pair the one the
seeds ran at.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis import publish

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "study_cpu"


def test_the_published_tables_and_the_readmes_copy_are_what_the_runs_give():
    assert publish.check(RESULTS, ROOT / "README.md") == []


def test_every_scheme_ran_the_same_grid_then_at_least_eight_seeds_at_its_tuned_pair():
    runs = pd.read_csv(RESULTS / "runs.csv")
    trials = pd.read_csv(RESULTS / "trials.csv")
    record = json.loads((RESULTS / "study.json").read_text())["study"]
    assert set(runs.status) <= {"finished", "diverged"}  # no failed or missing run
    assert 0 not in set(runs.seed)  # the tuning seed is never compared
    assert set(runs.setting) == set(record["settings"])
    for (setting, scheme, cell), group in runs.groupby(["setting", "scheme", "cell"]):
        assert group.seed.nunique() >= 8, (setting, scheme, cell)
        assert group.rate_ff.nunique(dropna=False) == 1 and group.rate_rec.nunique(dropna=False) == 1
        if scheme == "none":
            assert group.rate_ff.isna().all() and group.rate_rec.isna().all()
            continue
        tuned = trials[(trials.scheme == scheme) & (trials.cell == cell)]
        pair = (group.rate_ff.iloc[0], group.rate_rec.iloc[0])
        assert any(t.rate_ff == pair[0] and (pd.isna(pair[1]) or t.rate_rec == pair[1]) for t in tuned.itertuples())
    # equal budget: every scheme with a recurrent part searched the same grid, naive its ff points
    grids = {key: {(t.rate_ff, t.rate_rec) for t in g.itertuples()}
             for key, g in trials[trials.scheme != "naive"].groupby(["scheme", "cell"])}
    full = {(f, r) for f in record["rates_ff"] for r in record["rates_rec"]}
    assert grids and all(points == full for points in grids.values())
    naive = trials[trials.scheme == "naive"].groupby("cell").rate_ff.apply(set)
    assert all(points == set(record["rates_ff"]) for points in naive)
