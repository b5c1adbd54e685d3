"""Where a measurement or a run was made: CPU model and vector flags, torch and its kernels, device.

Speed ratios depend on the vector instructions the GEMM kernels use (issue 16), and a result
table names the machine that produced it, so the speed benchmark, the Keras comparison, the
study and every training job (``summary.json``'s ``machine``) record it the same way; every
published table writes that record as one line (``analysis.machine.machine_line``).
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

# The switches that cap the instruction sets of torch's kernels, oneDNN and MKL (benchmark.speed's doc).
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def flushes_denormals() -> bool:
    """Whether this thread's CPU arithmetic flushes denormal floats to zero, read off the arithmetic.

    torch has a setter (``torch.set_flush_denormal``) but no getter; a denormal operand times
    one is zero exactly when denormals-are-zero is on, so the record never depends on who set it.
    """
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # below float32's smallest normal, 1.18e-38
    return bool((tiny * 1.0).item() == 0.0)


def set_flush_denormal(on: bool) -> bool:
    """Flush denormal floats to zero on the CPU (FTZ/DAZ), or stop; returns whether it is on now.

    Why (issue 24): a state that grows like (1/keep)^t, the GRU under TensorFlow's state dropout,
    leaves denormals in the saturated gates' products and gradients, which some CPUs (an Intel
    Xeon measured here) compute at a fraction of normal speed: that row of the speed table ran at
    about 2x native with denormals and at native speed flushed. Values below 1.2e-38 are
    rounding noise next to the activations of a language model. Where the CPU has no such mode
    torch's call is a no-op, and the record says it is off.
    """
    torch.set_flush_denormal(bool(on))
    return flushes_denormals()


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
    info["flush_denormal"] = flushes_denormals()
    caps = {k: os.environ[k] for k in ISA_CAPS if os.environ.get(k)}
    if caps:
        info["isa_caps"] = caps
    if hasattr(os, "getloadavg"):
        info["load_avg_at_start"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
