"""The published study (docs/results/study_cpu): its tables are what its committed runs give.

Issue 14: no number in docs/results or in the README's study tables is typed by hand. The
tables are re-derived here from the committed runs.csv, exactly as the renderer does, and
compared character for character. The directory still holds the one-rate study (issue 14's
design), checked by ``analysis.study_v1``, until the fair study of issue 22 is published there
by ``python -m analysis.study``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import study_v1 as study

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "study_cpu"


def test_the_published_tables_and_the_readmes_copy_are_what_the_runs_give():
    assert study.check(RESULTS, ROOT / "README.md") == []


def test_every_scheme_and_cell_has_five_seeds_at_its_tuned_rate():
    runs = pd.read_csv(RESULTS / "runs.csv")
    trials = pd.read_csv(RESULTS / "trials.csv")
    assert set(runs.status) <= {"finished", "diverged"}  # no failed or missing run
    for (scheme, cell), group in runs.groupby(["scheme", "cell"]):
        assert len(set(group.seed)) >= 5, (scheme, cell)
        assert 0 not in set(group.seed)  # the tuning seed is not compared
        if scheme != "none":
            tuned = trials[(trials.scheme == scheme) & (trials.cell == cell)]
            assert group.dropout.nunique() == 1
            assert group.dropout.iloc[0] in set(tuned.dropout)
    # the same grid for every scheme: equal budget
    grids = trials.groupby(["scheme", "cell"]).dropout.apply(lambda r: tuple(sorted(r)))
    assert grids.nunique() == 1
