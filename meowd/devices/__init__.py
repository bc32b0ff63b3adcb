"""GPUs behind one small interface. Backends: NVML (real) and fake (simulated, in the package).

The scheduler never sees a backend: the controller turns each `snapshot()` into
frozen views. Only `meowd/devices/nvml.py` imports pynvml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from meowd.config import Settings
from meowd.core.paths import Paths


@dataclass(frozen=True)
class GpuProcess:
    """A process holding memory on a GPU, as NVML reports it."""

    pid: int
    used_mib: int


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    total_mib: int
    used_mib: int
    utilization: int | None
    processes: tuple[GpuProcess, ...] = ()


class DeviceBackend(Protocol):
    name: str

    def snapshot(self) -> list[DeviceInfo]:
        """One consistent read of every device; called off the event loop."""
        ...

    def close(self) -> None: ...


NO_GPU_HINT = (
    "no GPUs are visible to meow (no NVML, no fake GPUs); use -c 0 for a task without GPUs, "
    "or simulate GPUs: MEOW_FAKE_GPUS=4x80GiB meow run"
)


def open_backend(settings: Settings, paths: Paths) -> DeviceBackend | None:
    """Fake GPUs when configured, else NVML when it works, else None (CPU-only tasks)."""
    if settings.fake_gpus:
        from meowd.devices.fake import FakeBackend, parse_fake_spec

        return FakeBackend(parse_fake_spec(settings.fake_gpus), paths.fake_gpu_holds)
    from meowd.devices.nvml import NvmlBackend

    return NvmlBackend.open()
