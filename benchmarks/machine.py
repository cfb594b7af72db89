"""What every benchmark table prints about the machine: CPU model, cores, vector extensions, load.

Ratios measured on one 2-core machine do not carry to another (the same benchmark gave fnn
0.92x and 2.0x PyTorch's CNN epoch on two of this project's machines, the second AVX2 only),
so every table names the CPU and its vector flags.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "amx_tile", "amx_bf16", "avx_vnni")
"""The /proc/cpuinfo flags that decide which kernels XLA, Eigen, oneDNN and XNNPACK pick."""


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name")."""
    return _cpuinfo_field("model name") or platform.processor() or "unknown CPU"


def cpu_flags() -> list[str]:
    """The vector-extension flags of ``VECTOR_FLAGS`` this CPU has, in that order."""
    have = set((_cpuinfo_field("flags") or "").split())
    return [f for f in VECTOR_FLAGS if f in have]


def header_lines() -> list[str]:
    """``# cpu: ...`` and ``# load average: ...`` lines for a benchmark's table header."""
    lines = [f"# cpu: {cpu_model()} ({os.cpu_count()} cores); vector flags: {' '.join(cpu_flags()) or 'none found'}"]
    try:
        load = os.getloadavg()
        lines.append(f"# load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    except OSError:
        pass
    return lines
