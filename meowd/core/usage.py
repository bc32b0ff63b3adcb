"""What running tasks use: GPU memory per task (from per-process reports), peaks, and
over-use. Pure: the controller feeds it process samples and device snapshots."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from meowd.core.models import Task, TaskUsage
from meowd.core.units import format_mib


def attribute(devices: Iterable[tuple[int, Iterable[tuple[int, int]]]],
              owner_of: Callable[[int], int | None]) -> dict[int, dict[int, int]]:
    """GPU index -> {task id: MiB}, from each GPU's (pid, MiB) processes, as NVML lists them.
    Processes that belong to no task are other users' and stay out."""
    usage: dict[int, dict[int, int]] = {}
    for index, processes in devices:
        per_task: dict[int, int] = {}
        for pid, mib in processes:
            owner = owner_of(pid)
            if owner is not None:
                per_task[owner] = per_task.get(owner, 0) + mib
        usage[index] = per_task
    return usage


def record(usage: TaskUsage, rss_mib: int, cpu_seconds: float,
           gpu_mib: dict[int, int]) -> bool:
    """Store a sample as the live values and raise the peaks. True if a peak moved."""
    before = (usage.rss_peak_mib, dict(usage.gpu_peak_mib))
    usage.rss_mib = rss_mib
    usage.cpu_seconds = max(usage.cpu_seconds, cpu_seconds)  # reaped children leave it
    usage.rss_peak_mib = max(usage.rss_peak_mib, rss_mib)
    usage.gpu_mib = dict(gpu_mib)
    for index, mib in gpu_mib.items():
        usage.gpu_peak_mib[index] = max(usage.gpu_peak_mib.get(index, 0), mib)
    return (usage.rss_peak_mib, usage.gpu_peak_mib) != before


def over_memory(task: Task) -> str | None:
    """Why a task counts as over its memory request, or None."""
    for index, reserved in zip(task.devices, task.reserved_mib, strict=False):
        used = task.usage.gpu_mib.get(index, 0)
        if reserved and used > reserved:
            return (f"uses {format_mib(used)} on GPU {index}, over the "
                    f"{format_mib(reserved)} it asked for")
    return None
