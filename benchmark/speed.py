"""Training-step speed of every scheme x cell against native ``torch.nn.LSTM`` / ``torch.nn.GRU``.

``python -m benchmark.speed [--quick] [--device cpu|cuda] [--threads N] [--widths small,medium]
[--out DIR]`` times one training step of the language model (forward,
backward, gradient clipping, SGD step: what ``benchmark.train`` does per segment) for every scheme of
``benchmark.engine.SCHEMES`` on the LSTM and the GRU, and of a baseline language model with
the same embedding and decoder around the native ``torch.nn.LSTM`` / ``torch.nn.GRU`` (no
recurrent dropout). Why: Keras' ``recurrent_dropout`` falls off cuDNN onto a per-step loop
(tensorflow issue 38236); lmnt-com/haste shows DropConnect and zoneout can run at cuDNN
speed. A scheme that makes a comparison impractically slow is a bug of this suite.

Protocol. All models of one (width, cell) group live in one process and are timed
interleaved: after ``warmup`` steps each, every round runs each scheme once (rotating the
order) between two native steps (``N A N B N C N ...``). Reported per configuration: the
median step time, tokens/s (``batch * bptt`` over that median) and ``ratio``, the median
over rounds of (step time / the mean of the two native steps around it). Why adjacent: on
a shared machine the speed of a core changes within seconds (with CPU time tracking wall
time, so it is not preemption), and a native step timed several steps away made the
per-round ratio swing by several percent. Why both sides: a native step on one side only
(``N A B N``) still let the kernel's own control row, ``none``, drift above 1 while the
machine slowed down; the mean of the steps before and after cancels a slowdown that starts
or ends next to the scheme's step. Each step starts from a
zero state (``hidden=None``): the cost is that of a carried state, and a scheme that
explodes (GRU state dropout) cannot poison the following rounds through the state.

Peak memory. CUDA: ``torch.cuda.max_memory_allocated`` during the measured steps minus
the allocation before them. CPU: growth of the peak resident set (Linux ``VmHWM`` after
resetting it through ``/proc/self/clear_refs``) over the resident set before the first
step, in a process forked per configuration from a helper that has imported torch but
run nothing: activations, gradients and allocator slack of two training steps, not the
parameters (``benchmark.step_memory``). ``--no-memory`` skips it (``--quick`` skips it unless
``--memory``). The step itself, and the native baseline, are ``benchmark.timed_step``'s.

Targets (issues 7 and 16), printed per row: on CPU at medium width, the schemes on the
hand-written segment at most 1.1x native, the schemes on the native kernel (none, naive,
weightdrop) at most 1.05x; on CUDA at medium width, the segment schemes (there replayed as
CUDA graphs) at most 1.5x cuDNN. Other rows have no target.

Which CPU. The GEMMs, and so every ratio, depend on the vector instructions the kernels use;
the machine line names the CPU's AVX-512 / AVX2 flags and the instruction set torch's own
kernels dispatch to. To measure what another kind of x86 CPU would see, cap the libraries with
their documented switches: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
MKL_ENABLE_INSTRUCTIONS=AVX2 python -m benchmark.speed ...`` runs torch's kernels, oneDNN and
MKL as on an AVX2 CPU without AVX-512; the caps in effect are recorded with the machine.

Published results. The command writes ``speed.json`` (every step, the command, the machine, the
settings) into ``--out`` and nothing else; ``python -m analysis.publish docs/results/speed_cpu
--readme README.md`` renders its table beside it (``speed.md``) and into the README, and checks
them with ``--check``, so that no number of a published table is typed by hand.

This module imports no Hydra, ``runners`` or ``analysis``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from benchmark.engine import SCHEMES, gemm_choice
from benchmark.machine import machine, set_flush_denormal
from benchmark.step_memory import CpuMemory, cuda_memory
from benchmark.timed_step import NATIVE, Settings, Stepper, build, path_of

WIDTHS = {"small": 200, "medium": 650, "large": 1500}  # Zaremba et al. 2014
CELLS = ("lstm", "gru")
KERNEL_TARGET, LOOP_TARGET, CUDA_LOOP_TARGET = 1.05, 1.10, 1.50
TARGET_WIDTH = "medium"


@dataclass
class Row:
    width: str
    hidden: int
    cell: str
    scheme: str
    path: str  # torch.nn (the baseline) | native | segment: what runs the recurrence in training
    step_ms: float  # median
    step_ms_runs: list[float]
    tokens_per_s: float
    ratio: float  # median over rounds of (this / native), same round
    peak_mem_mb: float | None = None
    target: float | None = None
    status: str = "-"  # PASS | OVER | - (no target for this row)
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- the run
def target_for(scheme: str, path: str, width: str, device: str) -> float | None:
    if width != TARGET_WIDTH or scheme == NATIVE:
        return None
    if device == "cuda":
        return CUDA_LOOP_TARGET if path == "segment" else None
    return LOOP_TARGET if path == "segment" else KERNEL_TARGET


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def round_sequence(order: Sequence[str]) -> list[str]:
    """One round: every scheme between two native steps, ``N A N B N C N``."""
    sequence = [NATIVE]
    for name in order:
        sequence += [name, NATIVE]
    return sequence


def adjacent_native(measured: Sequence[tuple[str, float]], k: int) -> float:
    """The native step time around position ``k``: the mean of the native neighbours."""
    near = [measured[j][1] for j in (k - 1, k + 1) if 0 <= j < len(measured) and measured[j][0] == NATIVE]
    return sum(near) / len(near)


def run_group(width: str, hidden: int, cell: str, s: Settings, device: torch.device,
              memory: CpuMemory | None, counter: list[int], total: int) -> list[Row]:
    names = [NATIVE, *s.schemes]
    steppers = {}
    for name in names:
        steppers[name] = Stepper(build(name, cell, hidden, s, device), s, device)
    log(f"[{width} {cell}] warm-up: {len(names)} models x {s.warmup} steps")
    for _ in range(s.warmup):
        for name in names:
            steppers[name].step()
    times: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    schemes = names[1:]
    for r in range(s.repeats):
        order = schemes[r % len(schemes):] + schemes[: r % len(schemes)] if schemes else []  # rotate
        sequence = round_sequence(order)
        measured = [(name, steppers[name].step()) for name in sequence]
        natives = [t for name, t in measured if name == NATIVE]
        times[NATIVE].append(statistics.median(natives))
        ratios[NATIVE].append(1.0)
        for k, (name, t) in enumerate(measured):
            if name != NATIVE:
                times[name].append(t)
                ratios[name].append(t / adjacent_native(measured, k))
        log(f"[{width} {cell}] round {r + 1}/{s.repeats}: native {times[NATIVE][-1] * 1e3:.1f} ms")
    rows = []
    native_med = statistics.median(times[NATIVE])
    for name in names:
        counter[0] += 1
        med = statistics.median(times[name])
        ratio = statistics.median(ratios[name])
        path = path_of(steppers[name].model)
        mem = None
        if s.memory:
            log(f"[{counter[0]}/{total}] {width} {cell} {name}: memory")
            mem = cuda_memory(steppers[name]) if device.type == "cuda" else memory.measure(name, cell, hidden)
        target = target_for(name, path, width, device.type)
        status = "-" if target is None else ("PASS" if ratio <= target else "OVER")
        rows.append(Row(width, hidden, cell, name, path, med * 1e3, [t * 1e3 for t in times[name]],
                        s.batch * s.bptt / med, ratio, mem, target, status,
                        {"ratio_of_medians": med / native_med}))
        log(f"[{counter[0]}/{total}] {width} {cell} {name:13s} {med * 1e3:9.1f} ms  x{ratio:.3f}  {status}")
    del steppers
    return rows


def parse_widths(text: str) -> tuple[tuple[str, int], ...]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if item in WIDTHS:
            out.append((item, WIDTHS[item]))
        elif item.isdigit() and int(item) > 0:
            name = next((k for k, v in WIDTHS.items() if v == int(item)), item)
            out.append((name, int(item)))
        else:
            raise argparse.ArgumentTypeError(f"width {item!r}: use a positive integer or one of {', '.join(WIDTHS)}")
    return tuple(out)


def parse_list(allowed: Sequence[str]):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in text.split(",") if x.strip())
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{','.join(bad) or text!r}: choose from {', '.join(allowed)}")
        return items
    return parse


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("outputs/speed"),
                   help="where speed.json goes (default outputs/speed/); publish it with python -m analysis.publish")
    p.add_argument("--quick", action="store_true", help="small width, 1 warm-up + 3 rounds, no memory: under a minute")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    p.add_argument("--widths", type=parse_widths, default=None, help="e.g. small,medium or 16 (default small,medium)")
    p.add_argument("--cells", type=parse_list(CELLS), default=CELLS)
    p.add_argument("--schemes", type=parse_list(list(SCHEMES)), default=tuple(SCHEMES))
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 7, quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per model (default 2, quick 1)")
    p.add_argument("--vocab", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--keep-denormals", action="store_true",
                   help="do not flush denormal floats to zero (the default flushes them on the CPU, as training jobs do)")
    mem = p.add_mutually_exclusive_group()
    mem.add_argument("--memory", dest="memory", action="store_true", default=None, help="measure peak memory")
    mem.add_argument("--no-memory", dest="memory", action="store_false", help="skip peak memory")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out} is a file, not a directory", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"error: --device cuda asked for, but this torch {torch.__version__} sees no CUDA device; "
              "use --device cpu", file=sys.stderr)
        return 2
    for name in ("repeats", "warmup", "vocab", "batch", "bptt", "layers", "threads"):
        value = getattr(args, name)
        if value is not None and value < (0 if name in ("warmup", "threads") else 1):
            print(f"error: --{name}={value} is too small", file=sys.stderr)
            return 2
    set_flush_denormal(not args.keep_denormals)  # before any parallel op: worker threads inherit it
    if args.threads:
        torch.set_num_threads(args.threads)
    s = Settings(
        widths=args.widths or ((("small", WIDTHS["small"]),) if args.quick else
                               (("small", WIDTHS["small"]), ("medium", WIDTHS["medium"]))),
        cells=args.cells, schemes=args.schemes, layers=args.layers, batch=args.batch, bptt=args.bptt,
        vocab=args.vocab, dropout=args.dropout,
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
        repeats=args.repeats if args.repeats is not None else (3 if args.quick else 7),
        memory=args.memory if args.memory is not None else not args.quick,
        device=args.device, threads=args.threads,
    )
    device = torch.device(s.device)
    command = "python -m benchmark.speed" + ("" if not argv else " " + " ".join(argv))
    info = machine(device)
    log(command)
    memory = CpuMemory(s) if s.memory and device.type == "cpu" else None
    if not s.memory:
        method = "not measured"
    elif device.type == "cuda":
        method = "torch.cuda.max_memory_allocated growth over 2 training steps"
    else:
        method = ("peak RSS growth over 2 training steps (Linux VmHWM after clear_refs), one forked process "
                  "per configuration; parameters excluded")
    total = len(s.widths) * len(s.cells) * (len(s.schemes) + 1)
    counter = [0]
    rows: list[Row] = []
    started = time.perf_counter()
    try:
        for width, hidden in s.widths:
            for cell in s.cells:
                rows += run_group(width, hidden, cell, s, device, memory, counter, total)
    finally:
        if memory is not None:
            memory.close()
    result = {
        "command": command,
        "machine": info,
        "settings": {k: v for k, v in asdict(s).items()},
        "memory_method": method,
        "targets": {"width": TARGET_WIDTH, "cpu_kernel": KERNEL_TARGET, "cpu_loop": LOOP_TARGET,
                    "cuda_loop": CUDA_LOOP_TARGET},
        "wall_s": round(time.perf_counter() - started, 1),
        "rows": [asdict(r) for r in rows],
        "gemm_choices": gemm_choice.choices(),  # which library ran each segment product on this CPU (issue 24)
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'speed.json'} ({result['wall_s']} s); its table: python -m analysis.publish {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
