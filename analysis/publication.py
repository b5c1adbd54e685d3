"""What a published result is made of, and the README's marked blocks it is copied into.

A results directory under ``docs/results`` holds a result's committed inputs (a benchmark's
JSON, a sweep's or a study's runs) and everything derived from them. A renderer reads the
inputs and returns a ``Publication``: the text files it derives, the README blocks, and the
figures it draws. The one publisher (``analysis.publish``) writes them, puts the blocks
between their markers (``replace_block``) and checks them, the same way for every kind of
result. Standard library only: ``python -m runners.scheme_configs`` writes the README's
scheme table through ``replace_block`` too, without loading the analysis stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class PublishError(ValueError):
    """Inputs that cannot be published or checked; the message is one line for the user."""


@dataclass
class Publication:
    """Everything a results directory's inputs determine.

    ``files``: name in the results directory -> text, compared character for character by a
    check. ``blocks``: README block -> its body, between ``<!-- DIR:block -->`` and
    ``<!-- /DIR:block -->`` (DIR: the results directory's name). ``draw`` writes the figures
    ``figures`` names; images are not byte-stable across matplotlib versions, so a check
    asks only that they are there.
    """

    files: dict[str, str]
    blocks: dict[str, str]
    figures: tuple[str, ...] = ()
    draw: Callable[[Path], object] | None = field(default=None, repr=False)


class BlockMissing(PublishError):
    """The README has no single ``<!-- NAME -->`` ... ``<!-- /NAME -->`` block."""


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with what lies between the markers of block ``name`` replaced by ``body``.

    Exactly one start and one end marker, in that order: a second copy of a block would be
    left stale, so it is refused (``BlockMissing``) rather than half-written.
    """
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise BlockMissing(f"has no single {start} ... {end} block")
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{body}{end}{rest.split(end, 1)[1]}"
