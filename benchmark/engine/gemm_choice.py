"""Which library runs a segment's matrix product on this CPU: measured on first use, then remembered.

Why (issue 24): the segments' GEMMs can run on oneDNN's linear or on the BLAS behind ``mm``
(MKL in torch's x86 wheels), and which one is faster depends on the CPU and the shape. On the
AMD EPYC machines of issue 16 oneDNN won every product; on an Intel Xeon (AVX-512) the BLAS
won the segment-wide products and the recurrent backward by 5-16 % while oneDNN kept the
recurrent forward, enough to put five LSTM rows of the speed table over their target. A fixed
rule tuned on one machine is wrong on the other, so, as cuDNN's benchmark mode does for
convolutions, each product is timed both ways the first time its shape appears and the faster
one is used from then on.

The choice is keyed by the product's kind and shape, the dtype and the thread count, and kept
per CPU (model, vector flags, torch version, instruction-set caps) in a JSON file,
``~/.cache/rnn-bench/gemm-choices.json`` (``RNN_BENCH_GEMM_CACHE`` names another): later
processes on the same machine reuse it without measuring, so a seed gives the same numbers run
after run (the libraries sum in different orders, so the choice moves the last bits). A
product too small for a measurement to mean anything (under ``MIN_FLOPS``) takes the default,
oneDNN, without one; so does a challenger that is not clearly faster (``MARGIN``), which keeps
a near tie from flipping between processes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

BACKENDS: tuple[str, ...] = ("onednn", "blas")  # the libraries; the first is the default
# Untied gates' products, per gate or batched: gemm.Recurrent, gemm.gate_input_grads, gemm.gate_weight_grads.
GATE_WAYS: tuple[str, ...] = ("looped", "batched")
MIN_FLOPS = 2e6  # below this one product takes microseconds: timer noise, not the library, would decide
MARGIN = 0.03  # the challenger must be this much faster than the default to be chosen
WARMUP, ROUNDS = 2, 5
CACHE_ENV = "RNN_BENCH_GEMM_CACHE"

_chosen: dict[str, dict[str, Any]] = {}  # this CPU's decisions, read from the file and made here
_loaded: set[str] = set()
_forced: str | None = None
_warned: set[str] = set()


def cache_path() -> Path:
    """Where the decisions are kept: ``$RNN_BENCH_GEMM_CACHE``, else under ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnn-bench" / "gemm-choices.json"


@functools.lru_cache(maxsize=None)
def cpu_identity() -> str:
    """The CPU as the decisions depend on it: model, AVX-512/AVX2 flags, torch, and any ISA cap set."""
    from benchmark.machine import machine  # the machine record every table prints

    m = machine(torch.device("cpu"))
    caps = " ".join(f"{k}={v}" for k, v in sorted(m.get("isa_caps", {}).items()))
    return f"{m['cpu']} | {m['vector']} | torch {m['torch']} | kernels {m['kernels']}" + (f" | {caps}" if caps else "")


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):  # nothing kept yet; a path that cannot be used warns on saving
        return {}
    except (OSError, ValueError) as exc:
        _warn_once(f"GEMM choice cache {path} is unreadable ({exc.__class__.__name__}); measuring again and rewriting it")
        return {}
    return data if isinstance(data, dict) else {}


def _load() -> dict[str, Any]:
    cpu = cpu_identity()
    if cpu not in _loaded:
        _loaded.add(cpu)
        saved = _read_file(cache_path()).get(cpu, {})
        if isinstance(saved, dict):
            good = {k: v for k, v in saved.items() if isinstance(v, dict) and isinstance(v.get("choice"), str)}
            _chosen.setdefault(cpu, {}).update(good)
    return _chosen.setdefault(cpu, {})


def _save(key: str, record: dict[str, Any]) -> None:
    """Merge one decision into the file, written whole to a temporary file and renamed over it."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_file(path)
        data.setdefault(cpu_identity(), {})[key] = record
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".gemm-choices-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        _warn_once(f"cannot keep GEMM choices in {path} ({exc.strerror or exc}); each process will measure again")


def measure(candidates: Mapping[str, Callable[[], Any]]) -> dict[str, float]:
    """Median milliseconds of each candidate, timed in alternation after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for run in candidates.values():
        for _ in range(WARMUP):
            run()
    for _ in range(ROUNDS):
        for name, run in candidates.items():
            started = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - started) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def pick(kind: str, shape: tuple[int, ...], dtype: torch.dtype,
         candidates: Callable[[], Mapping[str, Callable[[], Any]]], names: tuple[str, ...] = BACKENDS) -> str:
    """Which of ``names`` (the libraries ``BACKENDS``, or ways to run one product; the first is the
    default) runs this product: forced, remembered, the default, or measured now.

    ``shape`` is the product's (M, N, K) and whatever else tells its variants apart;
    ``candidates()`` makes one call per name that runs the product once on operands of that
    shape. It is called only when a measurement is due, so setting up costs nothing afterwards.
    """
    if _forced in names:
        return _forced
    if 2.0 * shape[0] * shape[1] * shape[2] < MIN_FLOPS:
        return names[0]
    key = f"{kind} {'x'.join(map(str, shape))} {str(dtype).removeprefix('torch.')} threads={torch.get_num_threads()}"
    known = _load().get(key)
    if known is not None and known["choice"] in names:
        return known["choice"]
    ms = measure(candidates())
    record = {"choice": decide(ms, names[0]), "ms": {k: round(v, 4) for k, v in ms.items()}}
    _chosen[cpu_identity()][key] = record
    _save(key, record)
    return record["choice"]


def decide(ms: Mapping[str, float], default: str = BACKENDS[0]) -> str:
    """The fastest of the measured milliseconds, unless it beats the default by less than ``MARGIN``."""
    best = min(ms, key=ms.__getitem__)
    return best if ms[best] < (1 - MARGIN) * ms[default] else default


def choices() -> dict[str, dict[str, Any]]:
    """This CPU's decisions known to this process (made here or read from the file): for the speed table's record."""
    return dict(_chosen.get(cpu_identity(), {}))


@contextlib.contextmanager
def forced(backend: str | None) -> Iterator[None]:
    """Run every product that has ``backend`` among its ways that way (None: choose as usual), e.g. to compare them."""
    global _forced
    if backend is not None and backend not in BACKENDS + GATE_WAYS:
        raise ValueError(f"unknown GEMM backend {backend!r}; use one of {', '.join(BACKENDS + GATE_WAYS)}")
    before, _forced = _forced, backend
    try:
        yield
    finally:
        _forced = before
