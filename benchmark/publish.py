"""A command's committed JSON, its Markdown and the README's copy of it: re-derived, never typed.

``python -m benchmark.speed`` and ``python -m benchmark.keras_compare`` take ``--render JSON``
(write the Markdown again from a run summary), ``--readme README.md`` (put it into the README
between ``<!-- NAME -->`` and ``<!-- /NAME -->``) and ``--check`` (write nothing; exit 1 with
one line per file that differs), as ``analysis.study_report`` does for the study. This module imports
nothing of the suite (``benchmark`` imports no Hydra, ``runners`` or ``analysis``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable


class BlockMissing(ValueError):
    """The README has no single ``<!-- NAME -->`` ... ``<!-- /NAME -->`` block."""


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with what lies between the markers of ``name`` replaced by ``body``."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise BlockMissing(f"has no single {start} ... {end} block")
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{body}{end}{rest.split(end, 1)[1]}"


def readme_problem(readme: Path, name: str) -> str | None:
    """Why ``--readme`` cannot take the block ``name``: checked before a run that takes minutes."""
    try:
        replace_block(readme.read_text(), name, "")
    except OSError as exc:
        return f"--readme {readme}: {exc.strerror or exc}"
    except BlockMissing as exc:
        return f"--readme {readme} {exc}"
    return None


def readme_body(markdown: str, note: str) -> str:
    """The Markdown without its ``# title`` (the README has its own headings), then ``note``."""
    body = markdown.split("\n", 2)[2] if markdown.startswith("# ") else markdown
    return f"{body}\n{note}\n"


def publish(json_path: Path, *, prog: str, marker: str, md_name: str, markdown: Callable[[dict[str, Any]], str],
            note: Callable[[dict[str, Any], str, str], str], out: Path | None = None, readme: Path | None = None,
            check: bool = False) -> int:
    """Render ``json_path`` into ``md_name`` (next to it, or in ``out``) and the README's ``marker`` block.

    ``note(result, source, command)``: the README block's last line, given the JSON's path as the
    README links it and the command that writes the block. With ``check``: write nothing and
    return 1 after one line per differing file on stderr. Returns 2 on unreadable input.
    """
    try:
        result = json.loads(json_path.read_text())
        text = markdown(result)
        readme_text = readme.read_text() if readme is not None else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: cannot render {json_path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    md_path = (out if out is not None else json_path.parent) / md_name
    wanted = {md_path: text}
    if readme is not None:
        source = Path(os.path.relpath(json_path.resolve(), readme.resolve().parent)).as_posix()
        command = f"python -m {prog} --render {source} --readme {readme.name}"
        try:
            wanted[readme] = replace_block(readme_text, marker, readme_body(text, note(result, source, command)))
        except BlockMissing as exc:
            print(f"error: {readme} {exc}", file=sys.stderr)
            return 1 if check else 2
    if check:
        stale = [path for path, content in wanted.items() if not path.is_file() or path.read_text() != content]
        for path in stale:
            print(f"error: {path} differs from what {json_path} renders; rewrite it with python -m {prog} "
                  f"--render {json_path}" + (f" --readme {readme}" if readme is not None else ""), file=sys.stderr)
        return 1 if stale else 0
    for path, content in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        print(f"wrote {path}")
    return 0


PUBLISH_OPTIONS = ("out", "render", "readme", "check")


def usage_problem(parser: argparse.ArgumentParser, args: argparse.Namespace, json_name: str) -> str | None:
    """What is wrong with a publishing command line, in one line, or None.

    ``--check`` needs ``--render JSON``, and ``--render`` measures nothing, so it takes no
    measuring option (any option but ``--out``, ``--render``, ``--readme``, ``--check`` set to
    other than its default).
    """
    if args.check and args.render is None:
        return f"--check goes with --render JSON (the committed {json_name} to check against)"
    if args.render is not None:
        defaults = vars(parser.parse_args([]))
        measuring = [k for k, v in vars(args).items() if k not in PUBLISH_OPTIONS and v != defaults[k]]
        if measuring:
            return f"--render measures nothing; --{measuring[0].replace('_', '-')} is a measuring option"
    return None

