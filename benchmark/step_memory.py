"""Peak memory of a training step (``benchmark.timed_step``): what ``benchmark.speed`` reports beside its times.

CUDA: ``torch.cuda.max_memory_allocated`` during the measured steps minus the allocation before
them. CPU: growth of the peak resident set (Linux ``VmHWM`` after resetting it through
``/proc/self/clear_refs``) over the resident set before the first step, in a process forked per
configuration from a helper (``python -m benchmark.step_memory``) that has imported torch but
run nothing: activations, gradients and allocator slack of two training steps, not the parameters.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from dataclasses import asdict

import torch

from benchmark.timed_step import Settings, Stepper, build


def _read_status(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024  # kB -> bytes
    except OSError:
        return None
    return None


def _probe(scheme: str, cell: str, hidden: int, s: Settings, steps: int = 2) -> float | None:
    """Peak-RSS growth (MiB) of ``steps`` training steps; runs in a fresh forked child."""
    if s.threads:
        torch.set_num_threads(s.threads)
    device = torch.device("cpu")
    stepper = Stepper(build(scheme, cell, hidden, s, device), s, device)
    before = _read_status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    for _ in range(steps):
        stepper.step()
    peak = _read_status("VmHWM")
    if before is None or peak is None:
        return None
    return max(peak - before, 0) / 2**20


def _memory_server() -> None:
    """Helper process: imports torch, computes nothing, forks one child per request (stdin JSON lines)."""
    for line in sys.stdin:
        req = json.loads(line)
        s = Settings(**{**req["settings"], "widths": (), "cells": (), "schemes": ()})
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(read_fd)
            try:
                value = _probe(req["scheme"], req["cell"], req["hidden"], s)
            except Exception:  # noqa: BLE001 - reported as "not measured"
                value = None
            os.write(write_fd, json.dumps(value).encode())
            os._exit(0)
        os.close(write_fd)
        chunks = []
        while chunk := os.read(read_fd, 4096):
            chunks.append(chunk)
        os.close(read_fd)
        os.waitpid(pid, 0)
        sys.stdout.write((b"".join(chunks).decode() or "null") + "\n")
        sys.stdout.flush()


class CpuMemory:
    """Client of ``_memory_server``; ``None`` where the platform cannot measure."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.proc = None
        if sys.platform.startswith("linux") and hasattr(os, "fork"):
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchmark.step_memory"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )

    def measure(self, scheme: str, cell: str, hidden: int) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        settings = {k: v for k, v in asdict(self.s).items() if k not in ("widths", "cells", "schemes")}
        self.proc.stdin.write(json.dumps({"scheme": scheme, "cell": cell, "hidden": hidden, "settings": settings}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 600)
        if not ready:
            return None
        value = json.loads(self.proc.stdout.readline() or "null")
        return None if value is None else float(value)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def cuda_memory(stepper: Stepper, steps: int = 2) -> float:
    device = stepper.device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    for _ in range(steps):
        stepper.step()
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


if __name__ == "__main__":
    _memory_server()
