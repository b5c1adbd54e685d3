"""How the report writes values, the same in every format it renders.

The HTML page and report.md show the same runs; a missing score must read as the same
dash, a perplexity with the same digits and a count with the same plural in both, so the
two renderers (``analysis.report_html``, ``analysis.report_markdown``) format through
these few functions rather than each its own.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import pandas as pd

from analysis.runs import RunColumn

DASH = "\u2014"
TITLE = "Recurrent dropout benchmark report"


def missing(value: Any) -> bool:
    """Whether a table value is absent: ``None``, ``pd.NA`` or a float NaN."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def number(fmt: str) -> Callable[[Any], str]:
    """A formatter writing a number with the format spec ``fmt``, a dash when missing."""
    return lambda v: DASH if missing(v) else format(v, fmt)


def text(value: Any) -> str:
    """A value as text, ``""`` when missing (an empty cell, not a dash: text has no zero)."""
    return "" if missing(value) else str(value)


def formatter(column: RunColumn) -> Callable[[Any], str]:
    """How a column of the run listing writes its values: numbers by their spec, text as is."""
    return number(column.number) if column.number is not None else text


def plural(n: int, noun: str) -> str:
    """``1 run``, ``2 runs``, ``3 job directories``."""
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"
