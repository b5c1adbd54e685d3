"""Where a measurement or a run was made: CPU model and vector flags, torch and its kernels, device.

Speed ratios depend on the vector instructions the GEMM kernels use (issue 16), and a result
table names the machine that produced it, so the speed benchmark, the Keras comparison, the
study and every training job (``summary.json``'s ``machine``) describe it the same way.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

# The switches that cap the instruction sets of torch's kernels, oneDNN and MKL (benchmark.speed's doc).
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def machine(device: torch.device) -> dict[str, Any]:
    """This machine as a JSON-ready mapping: CPU model, its AVX-512/AVX2 flags, the instruction set
    torch's kernels dispatch to and any cap set on it, cores, torch, threads, device (and GPU)."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and cpu == (platform.processor() or platform.machine()):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    # The GEMM kernels, and so every speed ratio, depend on these (issue 16).
    vector = [name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags]
    info = {"cpu": cpu, "vector": ", ".join(vector) or "none", "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(), "platform": platform.platform(), "device": str(device)}
    info["kernels"] = torch.backends.cpu.get_cpu_capability()  # what torch's own kernels dispatch to
    caps = {k: os.environ[k] for k in ISA_CAPS if os.environ.get(k)}
    if caps:
        info["isa_caps"] = caps
    if hasattr(os, "getloadavg"):
        info["load_avg_at_start"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def machine_line(m: dict[str, Any]) -> str:
    """``machine()``'s record as the one line a published table prints under its command."""
    line = f"{m['cpu']} ({m.get('vector', 'vector flags unknown')}"
    if "kernels" in m:
        line += f"; torch kernels {m['kernels']}"
    if m.get("isa_caps"):
        line += "; capped with " + " ".join(f"{k}={v}" for k, v in m["isa_caps"].items())
    threads = f"{m['threads']} thread" + ("" if m["threads"] == 1 else "s")
    line += f"), {m['cores']} cores, torch {m['torch']}, {threads}, device {m['device']}"
    if "gpu" in m:
        line += f" ({m['gpu']}, CUDA {m['cuda']})"
    if "load_avg_at_start" in m:
        line += f", load average {m['load_avg_at_start']} at start"
    return line
