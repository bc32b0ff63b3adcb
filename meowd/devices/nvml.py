"""Real GPUs through NVML. The only module that imports pynvml (package nvidia-ml-py).

NVML is initialised once, when the backend opens; every query of one snapshot goes
through `_query`, so a device that stops answering degrades to missing numbers
instead of taking the daemon down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from meowd.devices import DeviceInfo, GpuProcess

log = logging.getLogger("meowd.devices")
MIB = 1024 * 1024


class NvmlBackend:
    name = "nvml"

    def __init__(self, pynvml: Any, count: int) -> None:
        self._nvml = pynvml
        self._count = count

    @classmethod
    def open(cls) -> NvmlBackend | None:
        """Initialise NVML; None when there is no driver or no GPU (not an error)."""
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded...
            log.info("NVML unavailable (%s)", exc)
            return None
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            pynvml.nvmlShutdown()
            return None
        return cls(pynvml, count)

    def _query(self, func: Callable[..., Any], *args: Any, default: Any = None) -> Any:
        try:
            return func(*args)
        except self._nvml.NVMLError as exc:
            log.debug("NVML %s failed: %s", getattr(func, "__name__", func), exc)
            return default

    def _processes(self, handle: Any) -> tuple[GpuProcess, ...]:
        nv = self._nvml
        used: dict[int, int] = {}
        for getter in (nv.nvmlDeviceGetComputeRunningProcesses,
                       nv.nvmlDeviceGetGraphicsRunningProcesses):
            for proc in self._query(getter, handle, default=[]) or []:
                mib = (proc.usedGpuMemory or 0) // MIB  # None where the driver hides it
                used[proc.pid] = max(used.get(proc.pid, 0), mib)
        return tuple(GpuProcess(pid, mib) for pid, mib in sorted(used.items()))

    def snapshot(self) -> list[DeviceInfo]:
        nv = self._nvml
        devices = []
        for index in range(self._count):
            handle = self._query(nv.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                continue
            memory = self._query(nv.nvmlDeviceGetMemoryInfo, handle)
            if memory is None:
                continue
            name = self._query(nv.nvmlDeviceGetName, handle, default="GPU")
            util = self._query(nv.nvmlDeviceGetUtilizationRates, handle)
            devices.append(
                DeviceInfo(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    total_mib=memory.total // MIB,
                    used_mib=(memory.total - memory.free) // MIB,
                    utilization=None if util is None else int(util.gpu),
                    processes=self._processes(handle),
                )
            )
        return devices

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass
