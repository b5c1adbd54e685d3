"""The machine a published result names, in the one line every table prints.

``benchmark.machine.machine()`` records where a measurement or a job ran (CPU model, its
AVX-512/AVX2 flags, the instruction set torch's kernels dispatch to and any cap on it,
whether denormals were flushed, cores, torch, threads, device, load); the speed table, the
Keras comparison, a sweep's table and the study all write that record the same way, here.
A key the record lacks (a record older than the key) is left out of the line.
"""

from __future__ import annotations

from typing import Any

# What describes one process rather than the machine: a sweep's or a study's jobs each had
# their own, so their published line leaves these out.
PER_PROCESS = ("threads", "load_avg_at_start")


def of_jobs(machine: dict[str, Any]) -> dict[str, Any]:
    """The record without what describes one process: the machine many jobs ran on."""
    return {k: v for k, v in machine.items() if k not in PER_PROCESS}


def machine_line(m: dict[str, Any]) -> str:
    """A machine record as one line: ``AMD EPYC (AVX-512, AVX2; torch kernels AVX512), 2 cores, torch 2.13.0+cpu, ...``."""
    line = f"{m['cpu']} ({m.get('vector', 'vector flags unknown')}"
    if "kernels" in m:
        line += f"; torch kernels {m['kernels']}"
    if m.get("isa_caps"):
        line += "; capped with " + " ".join(f"{k}={v}" for k, v in m["isa_caps"].items())
    if "flush_denormal" in m:  # records made before issue 24 do not say
        line += "; denormals flushed to zero" if m["flush_denormal"] else "; denormals kept"
    line += f"), {m['cores']} cores, torch {m['torch']}"
    if "threads" in m:
        line += f", {m['threads']} thread" + ("" if m["threads"] == 1 else "s")
    line += f", device {m['device']}"
    if "gpu" in m:
        line += f" ({m['gpu']}, CUDA {m['cuda']})"
    if "load_avg_at_start" in m:
        line += f", load average {m['load_avg_at_start']} at start"
    if "keras" in m:  # the Keras comparison ran Keras too
        line += f", keras {m['keras']} ({m['keras_backend']} backend)"
    return line
