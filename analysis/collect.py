"""``python -m analysis.collect``: read run-store sweeps, or a W&B project, into parquet tables.

    python -m analysis.collect SWEEP_DIR [SWEEP_DIR ...] --out DIR
    python -m analysis.collect --wandb [ENTITY/]PROJECT [--group GROUP] --out DIR

write ``DIR/runs.parquet`` and ``DIR/events.parquet`` (``analysis.parquet_cache``); for
sweep directories ``DIR`` is also the cache. The readers live in their own modules
(``analysis.store_reader``, ``analysis.wandb_reader``) and share one schema
(``analysis.runs``); ``collect`` and ``collect_wandb`` are imported here too, as the one
place a script reads runs from. The source options and the one-line errors are those of
every analysis command (``analysis.cli_args``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from analysis.cli_args import add_source_arguments, error_line, print_notes, runs_from_arguments
from analysis.parquet_cache import EVENTS_PARQUET, RUNS_PARQUET, write_parquet
from analysis.store_reader import collect
from analysis.wandb_reader import collect_wandb

# The command-line helpers stay importable from here, where they used to live.
__all__ = ["add_source_arguments", "collect", "collect_wandb", "error_line", "main", "print_notes",
           "runs_from_arguments"]


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
