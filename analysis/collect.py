"""``python -m analysis.collect``: read run-store sweeps, or a W&B project, into parquet tables.

    python -m analysis.collect SWEEP_DIR [SWEEP_DIR ...] --out DIR
    python -m analysis.collect --wandb [ENTITY/]PROJECT [--group GROUP] --out DIR

write ``DIR/runs.parquet`` and ``DIR/events.parquet`` (``analysis.parquet_cache``); for
sweep directories ``DIR`` is also the cache. The readers live in their own modules
(``analysis.store_reader``, ``analysis.wandb_reader``) and share one schema
(``analysis.runs``); ``collect`` and ``collect_wandb`` are imported here too, as the one
place a script reads runs from. The source options are shared with ``analysis.tables``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from analysis.parquet_cache import EVENTS_PARQUET, RUNS_PARQUET, write_parquet
from analysis.runs import Runs
from analysis.store_reader import collect
from analysis.wandb_reader import collect_wandb

__all__ = ["add_source_arguments", "collect", "collect_wandb", "error_line", "main", "print_notes",
           "runs_from_arguments"]


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The run-source options, shared by this CLI and ``analysis.tables``."""
    parser.add_argument("dirs", nargs="*", type=Path, metavar="SWEEP_DIR",
                        help="a sweep directory (job directories at any depth) or one job directory")
    parser.add_argument("--wandb", metavar="[ENTITY/]PROJECT", help="read a W&B project instead (needs network)")
    parser.add_argument("--group", help="with --wandb: only this group (a sweep directory's name)")


def runs_from_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser,
                        cache: Path | None = None) -> Runs:
    """The ``Runs`` the source options name; ``parser.error`` (exit 2) when they conflict.

    Raises ``OSError`` for a missing directory and ``ValueError`` when no run was read,
    and lets W&B's errors through, for the caller to print on one line. ``cache`` applies to sweep directories only: W&B
    offers no cheap fingerprint of a project.
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
    """``prog: error: message`` on exactly one line, whatever the message holds."""
    message = " ".join(str(error).split()) or type(error).__name__
    return f"{prog}: error: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: the tables as parquet in ``--out``; notes go to stderr.

    For sweep directories ``--out`` is also the cache: run again on an unchanged store,
    it reads the parquet files back instead of the store.
    """
    parser = argparse.ArgumentParser(
        prog="python -m analysis.collect",
        description="Read run-store sweeps (or a W&B project) into runs.parquet and events.parquet.")
    add_source_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="where runs.parquet, events.parquet and collect.json are written")
    args = parser.parse_args(argv)
    try:
        runs = runs_from_arguments(args, parser, cache=args.out)
        if args.wandb:
            write_parquet(runs, args.out)
    except Exception as e:  # noqa: BLE001 - one line for any failure, W&B's included
        print(error_line(parser.prog, e), file=sys.stderr)
        return 2
    print_notes(runs)
    counts = ", ".join(f"{n} {s}" for s, n in runs.runs["status"].value_counts().items())
    print(f"{len(runs.runs)} runs ({counts}), {len(runs.skipped)} skipped: "
          f"{args.out / RUNS_PARQUET} {args.out / EVENTS_PARQUET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
