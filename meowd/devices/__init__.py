"""GPUs behind one small interface. Backends: NVML (real) and fake (simulated, in the package).

The scheduler never sees a backend: the controller turns each `snapshot()` into
frozen views. Only `meowd/devices/nvml.py` imports pynvml.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from meowd.core.errors import BadRequest
from meowd.core.paths import Paths
from meowd.core.settings import DEFAULT_FAKE_GPUS, Settings, parse_fake_gpus


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
    "no GPUs are visible to meow (NVML found none, no fake GPUs): use -c 0 for a task "
    f"without GPUs, or simulate GPUs: `meow set fake_gpus {DEFAULT_FAKE_GPUS}; meow exit` "
    f"(the next meow command starts meowd with them; or MEOW_FAKE_GPUS={DEFAULT_FAKE_GPUS} "
    "meow run)"
)
"""Said by a running meowd: the hint names what to do next, not how to start a daemon."""


def open_backend(settings: Settings, paths: Paths,
                 environ: Mapping[str, str] | None = None) -> DeviceBackend | None:
    """Fake GPUs when configured (MEOW_FAKE_GPUS or the fake_gpus setting), else NVML when
    it works, else None: only tasks without GPUs (-c 0) run, GPU tasks are refused with
    NO_GPU_HINT. (A first `meow` command on a machine without an NVIDIA driver writes
    fake_gpus into that home's config, so it lands in the first branch.)"""
    if settings.fake_gpus:
        from meowd.devices.fake import FakeBackend

        env = os.environ if environ is None else environ
        source = ("MEOW_FAKE_GPUS" if env.get("MEOW_FAKE_GPUS") == settings.fake_gpus
                  else "the fake_gpus setting")
        try:
            totals = parse_fake_gpus(settings.fake_gpus)
        except BadRequest as exc:
            raise BadRequest(f"{source}: {exc.message}") from None
        return FakeBackend(totals, paths.fake_gpu_holds)
    from meowd.devices.nvml import NvmlBackend

    return NvmlBackend.open()
