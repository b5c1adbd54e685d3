"""This suite's training step against Keras 3's, the same language model in both, side by side.

``python -m benchmark.keras_compare [--widths 200,650] [--repeats N] [--warmup N] [--threads N]
[--out DIR]`` times one training step (forward, loss, backward, gradient-norm clipping, SGD
step) of the word-level language model of ``benchmark.speed``: embedding -> 2-layer LSTM of
width W -> dense decoder over a 10k vocabulary, batch 20, BPTT 35, in four versions:

- ``suite variational``: ``LanguageModel(..., cell="lstm", scheme="variational", dropout=0.5)``
  (Gal & Ghahramani 2016: per-sequence masks on each layer's input, on h_{t-1} entering U,
  untied per gate, on the output, and word-type dropout on the embedding), stepped by
  ``benchmark.speed.Stepper``, the suite's own definition of a training step;
- ``suite none``: the same model with no dropout, which runs on torch's fused LSTM kernel;
- ``keras recurrent_dropout``: ``keras.layers.LSTM(W, dropout=0.5, recurrent_dropout=0.5,
  return_sequences=True)`` twice (Keras' cell draws one mask per sequence and per gate for the
  input and for h_{t-1}: the same variational dropout) and a ``Dropout(0.5)`` with one mask
  per sequence (``noise_shape=(None, 1, W)``) on the output. Keras has no word-type embedding
  dropout, so the suite's row pays for one site more than Keras';
- ``keras none``: the same Keras model with ``dropout=0, recurrent_dropout=0`` and no output
  dropout.

Keras runs on its torch backend (``KERAS_BACKEND=torch`` is set before keras is imported,
overriding any other choice), so both libraries use the same torch, the same threads and
the same batch. A Keras step is ``model.train_on_batch(x, y)``, what a Keras user runs (eager:
with the torch backend, ``compile``'s ``jit_compile="auto"`` means no compiling), with ``SGD(learning_rate=1.0,
global_clipnorm=5.0)`` and ``SparseCategoricalCrossentropy(from_logits=True)``: the suite's
SGD at lr 1 with ``clip_grad_norm_(5.0)`` and mean cross-entropy over the batch's tokens.

Protocol. All models of one width live in one process, since the speed of a core on a shared
machine changes within seconds (``benchmark.speed``'s docstring). After ``--warmup`` steps each,
every round runs the models around the cycle suite variational -> keras recurrent_dropout ->
keras none -> suite none -> suite variational, closing it (five steps), so that the two sides of
every ratio below run back to back; the start moves every two rounds and every other round goes
the other way round. Reported: the median step time of each model over all its steps, tokens/s
(batch x BPTT over that median), ``keras / suite``: the median over rounds of the Keras step over
the suite's step with the same dropout run next to it, and ``x no dropout``: the median over
rounds of each library's dropout step over its own no-dropout step next to it, which is the cost
of recurrent dropout in that library.

Published results. The command writes ``keras_compare.json`` (every step and per-round ratio,
the command, the machine, the settings) into ``--out`` and nothing else; ``python -m
analysis.publish docs/results/keras_cpu --readme README.md`` renders its table beside it
(``keras_compare.md``) and into the README, without keras, and checks them with ``--check``,
so that no number of a published table is typed by hand.

Keras is an optional dependency (``pip install -e ".[compare]"``); without it the command
exits 2 with one line saying so. This module imports no Hydra, ``runners`` or ``analysis``,
and imports keras only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from benchmark.machine import machine
from benchmark.speed import parse_widths
from benchmark.timed_step import Settings, Stepper, build, path_of

INSTALL = 'pip install -c constraints.txt -e ".[compare]"'
DROPOUT = 0.5
SUITE, KERAS = "suite", "keras"
# (library, dropout) in the order of the table; the suite's names are its schemes.
MODELS = ((SUITE, "variational"), (SUITE, "none"), (KERAS, "recurrent_dropout"), (KERAS, "none"))
PAIRS = {"variational": "recurrent_dropout", "none": "none"}  # suite -> keras, the same dropout
KERAS_PATHS = {
    # keras/src/layers/rnn/lstm.py: recurrent_dropout != 0 sets implementation 1 and skips
    # backend.lstm, so keras.src.backend.torch.rnn.rnn calls LSTMCell.call once per step.
    "recurrent_dropout": "cell loop",
    # Without recurrent dropout, LSTM.inner_loop calls backend.lstm: on a CPU the torch
    # backend's _fallback_lstm (one input matmul, then one matmul per step in Python).
    "none": "torch-op loop",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def name_of(library: str, dropout: str) -> str:
    return f"{library} {dropout}"


# ---------------------------------------------------------------------------- keras
class KerasMissing(Exception):
    """keras cannot be imported, or runs on another backend than torch."""


def import_keras():
    """keras on its torch backend, or ``KerasMissing`` with the reason."""
    os.environ["KERAS_BACKEND"] = "torch"  # read once, when keras is first imported
    try:
        import keras
    except ImportError as exc:
        what = "is not installed" if exc.name == "keras" else f"cannot be imported ({str(exc).splitlines()[0]})"
        raise KerasMissing(f"keras {what}; install it with: {INSTALL}") from None
    if keras.backend.backend() != "torch":
        raise KerasMissing(f"keras was imported with the {keras.backend.backend()!r} backend before this module "
                           "could choose torch; run python -m benchmark.keras_compare in a fresh process")
    return keras


def keras_model(keras, hidden: int, s: Settings, recurrent_dropout: bool):
    """The language model in Keras: embedding -> 2 LSTM layers -> (dropout) -> dense decoder."""
    keras.utils.set_random_seed(s.seed)
    p = s.dropout if recurrent_dropout else 0.0
    layers = [keras.Input(shape=(s.bptt,), batch_size=s.batch, dtype="int32"), keras.layers.Embedding(s.vocab, hidden)]
    for _ in range(s.layers):
        layers.append(keras.layers.LSTM(hidden, dropout=p, recurrent_dropout=p, return_sequences=True))
    if p:
        layers.append(keras.layers.Dropout(p, noise_shape=(None, 1, hidden)))  # one mask per sequence
    layers.append(keras.layers.Dense(s.vocab))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=s.lr, global_clipnorm=s.clip),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class KerasStepper:
    """One Keras model and the suite stepper's batch, batch-first; ``step()`` returns seconds."""

    def __init__(self, model, tokens: torch.Tensor, targets: torch.Tensor) -> None:
        self.model = model
        self.x = tokens.T.contiguous().to(torch.int32).numpy()  # (T, B) -> (B, T), as a Keras user feeds it
        self.y = targets.T.contiguous().to(torch.int32).numpy()

    def step(self) -> float:
        started = time.perf_counter()
        self.model.train_on_batch(self.x, self.y)  # returns the loss as a float: the step is done
        return time.perf_counter() - started


# ---------------------------------------------------------------------------- timing
def round_order(names: Sequence[str], r: int) -> list[str]:
    """Round ``r``: the cycle ``names`` closed on itself, from a start and in a direction that change.

    Every two neighbours of the cycle are timed back to back once per round (``a b c d a``), so
    each ratio the table reports comes from two adjacent steps; the start moves every two
    rounds and every other round runs the cycle backwards, so that neither side of a ratio is
    always the later one while the machine speeds up or slows down.
    """
    names = list(names)
    k = (r // 2) % len(names)
    cycle = names[k:] + names[:k]
    if r % 2:
        cycle = cycle[:1] + cycle[:0:-1]  # the same start, the other way round
    return cycle + cycle[:1]


Rounds = list[list[tuple[str, float]]]  # per round, (model, seconds) in the order run


def interleave(steps: dict[str, Callable[[], float]], warmup: int, repeats: int,
               progress: Callable[[str], None] = log) -> Rounds:
    """``warmup`` steps of every model, then ``repeats`` rounds in ``round_order`` (``steps`` in cycle order)."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    rounds: Rounds = []
    for r in range(repeats):
        rounds.append([(name, steps[name]()) for name in round_order(names, r)])
        progress(f"round {r + 1}/{repeats}: " + ", ".join(f"{n} {t * 1e3:.1f} ms" for n, t in rounds[-1]))
    return rounds


def times_of(rounds: Rounds, name: str) -> list[float]:
    return [t for measured in rounds for n, t in measured if n == name]


def adjacent_ratios(rounds: Rounds, num: str, den: str) -> list[float]:
    """``num``'s step over ``den``'s wherever the two ran back to back, either way round."""
    out = []
    for measured in rounds:
        for (a, ta), (b, tb) in zip(measured, measured[1:]):
            if (a, b) == (num, den):
                out.append(ta / tb)
            elif (a, b) == (den, num):
                out.append(tb / ta)
    return out


@dataclass
class Row:
    hidden: int
    library: str
    dropout: str  # the suite's scheme, or Keras' recurrent_dropout | none
    path: str  # what runs the recurrence in training
    step_ms: float  # median over every step timed
    step_ms_runs: list[float]
    tokens_per_s: float
    keras_over_suite: float | None = None  # Keras rows: median of keras / suite, same dropout, back to back
    over_no_dropout: float | None = None  # dropout rows: median of this / the library's none, back to back
    extra: dict = field(default_factory=dict)  # the per-round ratios behind the two medians


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def cycle_of(names: Sequence[str]) -> list[str]:
    """The models in the order whose neighbours are the table's ratios.

    suite variational - keras recurrent_dropout - keras none - suite none - (back to the first):
    Keras over the suite with dropout, Keras' cost of dropout, Keras over the suite without,
    the suite's cost of dropout.
    """
    order = [name_of(SUITE, "variational"), name_of(KERAS, "recurrent_dropout"), name_of(KERAS, "none"),
             name_of(SUITE, "none")]
    return [n for n in order if n in names]


def rows_of(hidden: int, rounds: Rounds, paths: dict[str, str], s: Settings) -> list[Row]:
    rows = []
    for library, dropout in MODELS:
        name = name_of(library, dropout)
        runs = times_of(rounds, name)
        if not runs:
            continue
        med = statistics.median(runs)
        row = Row(hidden, library, dropout, paths[name], med * 1e3, [t * 1e3 for t in runs], s.batch * s.bptt / med)
        if library == KERAS:
            suite = name_of(SUITE, next(k for k, v in PAIRS.items() if v == dropout))
            ratios = adjacent_ratios(rounds, name, suite)
            row.keras_over_suite = _median(ratios)
            row.extra["keras_over_suite_runs"] = ratios
        if dropout != "none":
            ratios = adjacent_ratios(rounds, name, name_of(library, "none"))
            row.over_no_dropout = _median(ratios)
            row.extra["over_no_dropout_runs"] = ratios
        rows.append(row)
    return rows


def measure(hidden: int, s: Settings, keras=None, progress: Callable[[str], None] = log) -> list[Row]:
    """The four models (two without ``keras``) at one width, interleaved; their rows."""
    device = torch.device("cpu")
    steppers: dict[str, Any] = {}
    paths: dict[str, str] = {}
    for scheme in ("variational", "none"):
        name = name_of(SUITE, scheme)
        steppers[name] = Stepper(build(scheme, "lstm", hidden, s, device), s, device)
        paths[name] = path_of(steppers[name].model)
    if keras is not None:
        batch = steppers[name_of(SUITE, "none")]
        for dropout in ("recurrent_dropout", "none"):
            name = name_of(KERAS, dropout)
            model = keras_model(keras, hidden, s, recurrent_dropout=dropout != "none")
            steppers[name] = KerasStepper(model, batch.tokens, batch.targets)
            paths[name] = KERAS_PATHS[dropout]
    progress(f"[width {hidden}] {len(steppers)} models: {s.warmup} warm-up step(s) each, then {s.repeats} rounds")
    rounds = interleave({n: steppers[n].step for n in cycle_of(steppers)}, s.warmup, s.repeats,
                        lambda msg: progress(f"[width {hidden}] {msg}"))
    return rows_of(hidden, rounds, paths, s)


def compare(s: Settings, keras, command: str, progress: Callable[[str], None] = log) -> dict[str, Any]:
    """Every width of ``s``, both libraries (the suite alone when ``keras`` is None): the result."""
    info = machine(torch.device("cpu"))
    if keras is not None:
        info.update(keras=keras.__version__, keras_backend=keras.backend.backend())
    progress(command)
    started = time.perf_counter()
    rows: list[Row] = []
    for _, hidden in s.widths:
        rows += measure(hidden, s, keras, progress)
    return {
        "command": command,
        "machine": info,
        "settings": asdict(s),
        "keras_step": "model.train_on_batch(x, y), eager (the torch backend's default)",
        "wall_s": round(time.perf_counter() - started, 1),
        "rows": [asdict(r) for r in rows],
    }


# ---------------------------------------------------------------------------- output
def write(result: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "keras_compare.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    return json_path


# ---------------------------------------------------------------------------- command line
def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.keras_compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=parse_widths, default=parse_widths("200,650"),
                   help="LSTM widths, e.g. 200,650 or small,medium (default 200,650)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps per model (default 2)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads for both libraries (default: torch's)")
    p.add_argument("--out", type=Path, default=Path("outputs/keras_compare"),
                   help="where keras_compare.json goes (default outputs/keras_compare/); publish it with "
                        "python -m analysis.publish")
    p.add_argument("--vocab", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--bptt", type=int, default=35)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    args = parser.parse_args(argv)
    for name in ("repeats", "warmup", "threads", "vocab", "batch", "bptt"):
        value = getattr(args, name)
        if value < (0 if name in ("warmup", "threads") else 1):
            print(f"error: --{name}={value} is too small", file=sys.stderr)
            return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out} is a file, not a directory", file=sys.stderr)
        return 2
    try:
        keras = import_keras()
    except KerasMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)  # after importing keras: both libraries run on these
    s = Settings(widths=args.widths, cells=("lstm",), schemes=("variational", "none"), vocab=args.vocab,
                 batch=args.batch, bptt=args.bptt, dropout=DROPOUT, warmup=args.warmup, repeats=args.repeats,
                 memory=False, device="cpu", threads=args.threads)
    command = "python -m benchmark.keras_compare" + ("" if not argv else " " + " ".join(argv))
    result = compare(s, keras, command)
    json_path = write(result, args.out)
    print(f"wrote {json_path} ({result['wall_s']} s); its table: python -m analysis.publish {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
