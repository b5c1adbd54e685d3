"""The statistics a study reports, each from scipy or statsmodels (issue 22: none written by hand).

Why these: a study compares schemes over a handful of seeds, paired by seed (the same seed
gives two runs the same initialisation and data order). At that n a t-test's p rests on
normality, so every comparison also gets an exact paired sign-flip test (all 2^n sign
assignments of the differences: no distributional assumption; its smallest two-sided p is
2 / 2^n), and the p-values of a table are adjusted together with Holm's step-down method, so a
claim drawn from a table of many comparisons keeps its error rate.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

EXACT_LIMIT = 20  # up to 2^20 sign assignments are enumerated; more seeds would be sampled instead


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The t interval for the mean of ``values`` (NaN with fewer than 2 values)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    if x.std() == 0:
        return float(x.mean()), float(x.mean())
    low, high = stats.t.interval(level, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return float(low), float(high)


def summarise(values: Sequence[float]) -> dict[str, float]:
    """n, mean, sd (n - 1) and 95 % t interval."""
    x = np.asarray(values, dtype=float)
    low, high = t_interval(x)
    return {"n": len(x), "mean": float(x.mean()) if len(x) else math.nan,
            "sd": float(x.std(ddof=1)) if len(x) > 1 else math.nan, "ci_low": low, "ci_high": high}


def sign_flip_p(differences: Sequence[float]) -> float:
    """Two-sided exact paired permutation p: the share of the 2^n sign flips whose mean is as extreme.

    scipy's ``permutation_test`` with one sample and ``permutation_type='samples'`` flips the
    signs of the observations; ``n_resamples=inf`` enumerates every assignment.
    """
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    if len(d) < 2 or not np.any(d):
        return math.nan
    if len(d) > EXACT_LIMIT:
        raise ValueError(f"{len(d)} pairs: an exact sign-flip test enumerates 2^n assignments; at most {EXACT_LIMIT}")
    result = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                                    alternative="two-sided")
    return float(min(1.0, result.pvalue))


def paired(a: pd.Series, b: pd.Series) -> dict[str, float]:
    """``a - b`` over the seeds where both finished.

    Both series are indexed by seed. Returns the number of pairs, the mean difference and its
    95 % t interval, the paired t-test's p (``p_t``), the exact sign-flip p (``p_exact``) and
    how many seeds ``a`` won (a lower perplexity).
    """
    from scipy import stats

    both = pd.concat([a, b], axis=1, keys=["a", "b"]).dropna()
    d = (both["a"] - both["b"]).to_numpy(dtype=float)
    low, high = t_interval(d)
    varies = len(d) > 1 and d.std() > 0
    return {"pairs": len(d), "diff": float(d.mean()) if len(d) else math.nan, "diff_low": low,
            "diff_high": high, "p_t": float(stats.ttest_rel(both["a"], both["b"]).pvalue) if varies else math.nan,
            "p_exact": sign_flip_p(d), "wins": int((d < 0).sum())}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment over one family (statsmodels); NaN stays NaN and is not counted."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), math.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return [float(v) for v in out]


def kendall_tau(first: Sequence[float], second: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b between two scorings of the same items, and its p (scipy)."""
    from scipy import stats

    if len(first) < 2:
        return math.nan, math.nan
    result = stats.kendalltau(first, second)
    return float(result.statistic), float(result.pvalue)
