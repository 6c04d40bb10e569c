"""NVIDIA GPU facts from NVML (nvidia-ml-py): the devices, and one process's GPU memory.

Everything here degrades to "unknown" on a machine without an NVIDIA driver: NVML calls fail
with an NVMLError, never with a crash of the tuner.
"""

from __future__ import annotations

import contextlib
from typing import Any


def _nvml() -> Any | None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no package, no driver, no device: all mean "no NVML here"
        return None
    return pynvml


def gpu_devices() -> list[dict[str, Any]]:
    """Name, driver, total and used memory of every NVIDIA GPU; empty without a driver."""
    nvml = _nvml()
    if nvml is None:
        return []
    devices = []
    try:
        driver = nvml.nvmlSystemGetDriverVersion()
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                {
                    "index": index,
                    "name": nvml.nvmlDeviceGetName(handle),
                    "driver": driver,
                    "memory_total_mb": memory.total / 2**20,
                    "memory_used_mb": memory.used / 2**20,
                }
            )
    except Exception:
        return devices
    finally:
        nvml.nvmlShutdown()
    return devices


class GpuMemoryMonitor:
    """Peak GPU memory of one process on one device, sampled by the caller.

    NVML lists processes by host pid; inside a container the worker's pid is not among them, so
    the device's memory growth since the monitor started stands in (exact when one trial runs
    on the GPU at a time, which the machine lock ensures).
    """

    def __init__(self, pid: int, device_index: int = 0) -> None:
        self.pid = pid
        self.peak_mb: float | None = None
        self._nvml = _nvml()
        self._handle = None
        self._base_used = 0.0
        if self._nvml is not None:
            try:
                self._handle = self._nvml.nvmlDeviceGetHandleByIndex(device_index)
                self._base_used = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
            except Exception:
                self._handle = None

    @property
    def available(self) -> bool:
        return self._handle is not None

    def sample(self) -> float | None:
        if self._handle is None:
            return None
        nvml = self._nvml
        assert nvml is not None
        try:
            used = None
            for process in nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if process.pid == self.pid and process.usedGpuMemory is not None:
                    used = process.usedGpuMemory / 2**20
            if used is None:
                total = nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
                used = max(0.0, total - self._base_used)
        except Exception:
            return self.peak_mb
        self.peak_mb = used if self.peak_mb is None else max(self.peak_mb, used)
        return used

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
