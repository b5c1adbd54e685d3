"""The one publisher: every published table rendered from its committed inputs, written, copied into the README, checked.

    python -m analysis.publish RESULTS_DIR [RESULTS_DIR ...] [--readme README.md] [--check]
    python -m analysis.publish RESULTS_DIR --from SWEEP_OR_STUDY_DIR [--readme README.md]

A results directory (``docs/results/NAME``) holds one result's committed inputs, and which
inputs it holds says what it is and what is derived from them:

    speed.json                         (python -m benchmark.speed --out DIR)          speed.md
    keras_compare.json                 (python -m benchmark.keras_compare --out DIR)  keras_compare.md
    runs.csv, sweep.json               (--from a sweep directory)                     table.md
    runs.csv, trials.csv, study.json   (--from a study directory)    tables, figures, README.md

The benchmark commands measure and write their JSON, nothing else; ``--from`` first exports
a finished sweep's or study's run stores into the inputs. From there every kind goes the
same way: rendered (``analysis.timing_tables``, ``analysis.sweep_table``,
``analysis.study_report``), written beside its inputs, and with ``--readme`` each of its
blocks put between the README's ``<!-- NAME:block -->`` and ``<!-- /NAME:block -->``, closed
by a line naming the inputs and this command. ``--check`` writes nothing: exit 1 with one
line per file that differs from what the inputs give (a number edited by hand cannot pass),
0 when all agree; inputs that cannot be read, or a bad command line, exit 2 with one line.
``tests/test_published.py`` checks every results directory under ``docs/results``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from analysis import study_report, sweep_table, timing_tables
from analysis.publication import BlockMissing, Publication, PublishError, replace_block

PROG = "python -m analysis.publish"


@dataclass(frozen=True)
class Kind:
    """One kind of published result: the inputs that make a results directory this kind, its
    README blocks, its renderer and, for a result made of runs, how ``--from`` exports them."""

    inputs: tuple[str, ...]
    blocks: tuple[str, ...]
    render: Callable[[Path], Publication]
    source: str | None = None  # the file that makes a directory a source of this kind, for --from
    export: Callable[[Path, Path, str], None] | None = None  # (source, results, this command)


KINDS = {
    "speed": Kind((timing_tables.SPEED,), ("table",), timing_tables.render_speed),
    "keras": Kind((timing_tables.KERAS,), ("table",), timing_tables.render_keras),
    "sweep": Kind(sweep_table.INPUTS, ("table",), sweep_table.render, "multirun.yaml", sweep_table.export),
    "study": Kind(study_report.INPUTS, ("answer", "headline"), study_report.render, "study.json",
                  lambda source, results, command: study_report.export(source, results)),
}


def kind_of(results: Path) -> Kind:
    """The kind whose inputs ``results`` holds, or ``PublishError`` naming what a results directory holds."""
    if not results.is_dir():
        raise PublishError(f"no such results directory: {results}")
    for kind in KINDS.values():
        if all((results / name).is_file() for name in kind.inputs):
            return kind
    known = "; ".join(" + ".join(kind.inputs) for kind in KINDS.values())
    raise PublishError(f"{results} holds the inputs of no published result (one of: {known})")


def source_kind(source: Path) -> Kind:
    """The kind ``--from`` exports from ``source``: a study directory or a Hydra sweep directory."""
    for kind in KINDS.values():
        if kind.source is not None and (source / kind.source).is_file():
            return kind
    raise PublishError(f"{source} is neither a study directory (no study.json) nor a sweep directory "
                       f"(no multirun.yaml)")


def name_of(results: Path) -> str:
    """The results directory's name, which its README blocks carry (``quickstart:table``)."""
    return Path(os.path.abspath(results)).name


def note(results: Path, readme: Path, kind: Kind) -> str:
    """A README block's last line: the inputs it is written from and the command that writes and checks it."""
    rel = Path(os.path.relpath(Path(results).resolve(), readme.resolve().parent)).as_posix()
    links = [f"[{name}]({rel}/{name})" for name in kind.inputs]
    inputs = links[0] if len(links) == 1 else f"{', '.join(links[:-1])} and {links[-1]}"
    give = "it gives" if len(links) == 1 else "they give"
    return (f"*Written from {inputs} by `{PROG} {rel} --readme {readme.name}`; with `--check` it fails if this "
            f"block differs from what {give} (tests/test_published.py).*")


def _readme_text(readme: Path) -> str:
    try:
        return readme.read_text(encoding="utf-8")
    except OSError as e:
        raise PublishError(f"--readme {readme}: {e.strerror or type(e).__name__}") from None


def with_blocks(readme: Path, results: Path, kind: Kind, bodies: dict[str, str]) -> str:
    """The README's text with each of ``bodies`` (block -> body) between its markers, each closed by its note."""
    text = _readme_text(readme)
    for block, body in bodies.items():
        try:
            text = replace_block(text, f"{name_of(results)}:{block}", f"{body}\n{note(results, readme, kind)}\n")
        except BlockMissing as e:
            raise BlockMissing(f"{readme} {e}") from None
    return text


def expected(results: Path, readme: Path | None = None) -> tuple[Publication, dict[Path, str]]:
    """What ``results``'s inputs give: the publication, and every text file with its text (the README's too)."""
    kind = kind_of(results)
    publication = kind.render(results)
    wanted = {results / name: text for name, text in publication.files.items()}
    if readme is not None:
        wanted[readme] = with_blocks(readme, results, kind, publication.blocks)
    return publication, wanted


def check(results: Path, readme: Path | None = None) -> list[str]:
    """One line per file of ``results`` (or the README) that differs from what its inputs give."""
    fix = f"write it again with {PROG} {results}" + (f" --readme {readme}" if readme is not None else "")
    try:
        publication, wanted = expected(results, readme)
    except BlockMissing as e:
        return [str(e)]
    stale = [f"{path} differs from what {results} gives; {fix}" for path, text in wanted.items()
             if not path.is_file() or path.read_text(encoding="utf-8") != text]
    return stale + [f"{results / name} is missing; {fix}" for name in publication.figures
                    if not (results / name).is_file()]


def publish(results: Path, readme: Path | None = None, source: Path | None = None, command: str = PROG) -> list[Path]:
    """Write everything ``results``'s inputs give (after exporting them from ``source``); the paths written.

    Nothing is written when the README lacks a block the result fills: that is found first.
    """
    if source is not None:
        kind = source_kind(source)
        if readme is not None:
            with_blocks(readme, results, kind, dict.fromkeys(kind.blocks, ""))
        kind.export(source, results, command)
    publication, wanted = expected(results, readme)
    for path, text in wanted.items():
        path.write_text(text, encoding="utf-8")
    if publication.draw is not None:
        publication.draw(results)
    return [*wanted, *(results / name for name in publication.figures)]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=PROG, description="Render every published table from its committed "
                                                            "inputs into its results directory and the README, "
                                                            "or check that they are what the inputs give.")
    parser.add_argument("results", nargs="+", type=Path, help="results directories (docs/results/NAME)")
    parser.add_argument("--from", dest="source", type=Path, metavar="DIR",
                        help="first export the inputs from this sweep (outputs/sweeps/TIMESTAMP) or study "
                             "(<output dir>/studies/NAME) directory")
    parser.add_argument("--readme", type=Path, help="also write (with --check: check) the blocks in this README")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a file or README block differs from what its inputs give")
    args = parser.parse_args(argv)
    if args.source is not None and (args.check or len(args.results) > 1):
        parser.error("--from exports into one results directory, and does not go with --check")
    try:
        if args.check:
            stale = [line for results in args.results for line in check(results, args.readme)]
            for line in stale:
                print(f"error: {line}", file=sys.stderr)
            return 1 if stale else 0
        for results in args.results:
            for path in publish(results, args.readme, args.source, shlex.join([*PROG.split(), *argv])):
                print(f"wrote {path}")
    except PublishError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
