"""Placement: which waiting tasks start now, and on which GPUs. A pure function.

Rules (issue #2):
- candidates in order of higher priority first, then older (then lower id);
- a task that does not fit is skipped, never blocks the tasks behind it;
- a task needs `min_devices` distinct GPUs that each have its memory free;
- among fitting GPUs, prefer those running the fewest meow tasks (spread work out,
  one training per card where possible), then the most free memory, then lowest index;
- tasks that need no GPU are limited only by `cpu_slots`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meowd.core.units import MemoryRequest, resolve_mib


@dataclass(frozen=True)
class DeviceView:
    """What placement needs to know about one GPU at this instant."""

    index: int
    total_mib: int
    free_mib: int
    """Free for meow: NVML free + meow tasks' usage - meow reservations (see accounting)."""
    tasks: int = 0


@dataclass(frozen=True)
class Candidate:
    task_id: int
    priority: int
    created_at: float
    min_devices: int
    memory: MemoryRequest


@dataclass(frozen=True)
class Placement:
    task_id: int
    devices: tuple[int, ...]
    reserved_mib: tuple[int, ...]


@dataclass
class _Free:
    index: int
    total: int
    free: int
    tasks: int


def queue_order(candidate: Candidate) -> tuple[int, float, int]:
    return (-candidate.priority, candidate.created_at, candidate.task_id)


def can_ever_fit(min_devices: int, memory: MemoryRequest, totals: list[int]) -> bool:
    """Whether some set of these devices could hold the task if all were empty."""
    if min_devices == 0:
        return True
    fitting = sum(1 for total in totals if resolve_mib(memory, total) <= total)
    return fitting >= min_devices


def place(
    candidates: list[Candidate],
    devices: list[DeviceView],
    cpu_slots_free: int,
) -> list[Placement]:
    """Choose the tasks to start now. Candidates may come in any order."""
    pool = [_Free(d.index, d.total_mib, d.free_mib, d.tasks) for d in devices]
    placements: list[Placement] = []
    # Once a (devices, memory) shape fails, every later task of that shape fails too:
    # remembering that keeps a 10,000-task queue cheap to scan.
    failed_shapes: set[tuple[int, MemoryRequest]] = set()
    for candidate in sorted(candidates, key=queue_order):
        if candidate.min_devices == 0:
            if cpu_slots_free > 0:
                cpu_slots_free -= 1
                placements.append(Placement(candidate.task_id, (), ()))
            continue
        shape = (candidate.min_devices, candidate.memory)
        if shape in failed_shapes:
            continue
        fitting = [
            (d, need)
            for d in pool
            if (need := resolve_mib(candidate.memory, d.total)) <= d.free
        ]
        if len(fitting) < candidate.min_devices:
            failed_shapes.add(shape)
            continue
        fitting.sort(key=lambda pair: (pair[0].tasks, -pair[0].free, pair[0].index))
        chosen = sorted(fitting[: candidate.min_devices], key=lambda pair: pair[0].index)
        for device, need in chosen:
            device.free -= need
            device.tasks += 1
        placements.append(
            Placement(
                candidate.task_id,
                tuple(d.index for d, _ in chosen),
                tuple(need for _, need in chosen),
            )
        )
    return placements


@dataclass
class Usage:
    """One device's memory as meow accounts it, in MiB."""

    index: int
    total: int
    used_by_meow: int = 0
    used_by_others: int = 0
    reserved: int = 0
    """Reserved for meow tasks but not yet allocated by them."""
    task_ids: list[int] = field(default_factory=list)

    @property
    def free(self) -> int:
        return max(0, self.total - self.used_by_meow - self.used_by_others - self.reserved)


def account(
    index: int,
    total_mib: int,
    nvml_used_mib: int,
    task_usage: dict[int, int],
    task_reservations: dict[int, int],
) -> Usage:
    """Split one device's memory into meow usage, others' usage, open reservations and free.

    free = NVML free + meow tasks' usage - meow reservations, except that a task using
    more than it reserved counts with its real usage (never a negative reservation), so
    a greedy task can never make the card look emptier than it is.
    """
    used_by_meow = sum(task_usage.values())
    reserved = sum(
        max(0, mib - task_usage.get(task_id, 0)) for task_id, mib in task_reservations.items()
    )
    return Usage(
        index=index,
        total=total_mib,
        used_by_meow=used_by_meow,
        used_by_others=max(0, nvml_used_mib - used_by_meow),
        reserved=reserved,
        task_ids=sorted(set(task_reservations) | set(task_usage)),
    )
