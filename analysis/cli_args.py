"""What the analysis command lines share: where runs come from, and how they fail.

``python -m analysis.collect``, ``python -m analysis.tables`` and ``python -m
analysis.report`` read runs the same way and report problems the same way, so a user
who learnt one knows the others: the same source options (sweep directories or
``--wandb PROJECT [--group GROUP]``), one ``prog: error: message`` line and exit
status 2 for anything that stops them, and one ``warning:`` line per skipped job
directory or damaged run. These helpers live here rather than in one of those commands
so that no command has to import another to get them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.runs import Runs
from analysis.store_reader import collect
from analysis.wandb_reader import collect_wandb

__all__ = ["add_source_arguments", "error_line", "print_notes", "runs_from_arguments"]


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The run-source options: sweep directories, or ``--wandb`` with an optional ``--group``."""
    parser.add_argument("dirs", nargs="*", type=Path, metavar="SWEEP_DIR",
                        help="a sweep directory (job directories at any depth) or one job directory")
    parser.add_argument("--wandb", metavar="[ENTITY/]PROJECT", help="read a W&B project instead (needs network)")
    parser.add_argument("--group", help="with --wandb: only this group (a sweep directory's name)")


def runs_from_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser,
                        cache: Path | None = None) -> Runs:
    """The ``Runs`` the source options name; ``parser.error`` (exit 2) when they conflict.

    Raises ``OSError`` for a missing directory and ``ValueError`` when no run was read,
    and lets W&B's errors through, for the caller to print on one line. ``cache`` applies
    to sweep directories only: W&B offers no cheap fingerprint of a project.
    """
    if bool(args.dirs) == bool(args.wandb):
        parser.error("give sweep directories or --wandb PROJECT, not both or neither")
    if args.group and not args.wandb:
        parser.error("--group needs --wandb")
    runs = collect_wandb(args.wandb, args.group) if args.wandb else collect(args.dirs, cache=cache)
    if runs.runs.empty:
        raise ValueError("no runs read" + (f" ({len(runs.skipped)} skipped)" if runs.skipped else ""))
    return runs


def print_notes(runs: Runs) -> None:
    """The skipped job directories and the warnings, one line each on stderr."""
    for note in runs.skipped:
        print(f"warning: skipped {note}", file=sys.stderr)
    for note in runs.warnings:
        print(f"warning: {note}", file=sys.stderr)


def error_line(prog: str, error: BaseException) -> str:
    """``prog: error: message`` on exactly one line, whatever the message holds (a path
    with a newline in it included), so a script can read the last line of stderr."""
    message = " ".join(str(error).split()) or type(error).__name__
    return f"{prog}: error: {message}"
