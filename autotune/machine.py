"""What this machine offers a trial: usable CPUs (affinity and cgroup quota) and its fingerprint.

The host's core count oversubscribes containers: a pod limited to 2 CPUs on a 64-core host must
not search 64 threads. ``usable_cpus`` takes the smaller of the affinity mask and the cgroup CPU
quota, the way a deployment on the same machine would see it.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: onnxruntime distributions that install the same ``onnxruntime`` module.
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
)


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPU quota of this process's cgroup in CPUs, or None when there is none (v2, then v1)."""
    v2 = root / "cpu.max"
    try:
        quota, period = v2.read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 else None


def usable_cpus() -> int:
    """CPUs this process may really use: affinity mask, then cgroup quota (rounded up), >= 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return max(1, count)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: The CPU features ONNX Runtime's kernels pick between (int8 speedups depend on VNNI and AMX).
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve",
)  # fmt: skip


def isa_flags() -> list[str]:
    """The ``ISA_FLAGS`` this CPU has (from /proc/cpuinfo; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
            break
    return [f for f in ISA_FLAGS if f in flags]


def installed_ort_distributions() -> dict[str, str]:
    """Every installed onnxruntime distribution with its version (two at once is a breakage)."""
    found = {}
    for name in ORT_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def environment() -> dict[str, Any]:
    """The facts a timing depends on, recorded with every study and every best.json."""
    import psutil

    from autotune import __version__
    from autotune.gpu import gpu_devices

    distributions = installed_ort_distributions()
    gpus = gpu_devices()
    return {
        "gpu": ", ".join(sorted({str(g["name"]) for g in gpus})) or None,
        "gpu_driver": gpus[0]["driver"] if gpus else None,
        "autotune_version": __version__,
        "onnxruntime_version": next(iter(distributions.values()), None),
        "onnxruntime_package": ",".join(distributions) or None,
        "cpu_model": cpu_model(),
        "isa_flags": isa_flags(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cpus": usable_cpus(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": sys.version.split()[0],
    }


def cpu_times() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs from /proc/stat; None where there is no /proc."""
    try:
        with Path("/proc/stat").open() as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (values[7] if len(values) > 7 else 0), sum(values)


def steal_share(since: tuple[int, int] | None = None) -> float | None:
    """The share of CPU time the hypervisor stole since ``since`` (a :func:`cpu_times`)."""
    now = cpu_times()
    if now is None or since is None:
        return None
    total = now[1] - since[1]
    return (now[0] - since[0]) / total if total > 0 else 0.0
