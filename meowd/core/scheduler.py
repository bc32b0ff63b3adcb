"""Placement: which waiting tasks start now, and on which GPUs. Pure: no I/O, no clock.

Rules:
- candidates in queue order: higher priority first, then older, then lower id;
- a task that does not fit is skipped and never blocks the tasks behind it ...
- ... yet never starves: the first task in queue order that does not fit (and has waited
  `Policy.reserve_after` seconds) gets GPUs *held* for it. Held GPUs drain: later tasks
  may only use what the held task leaves over there ("backfill where it does not delay
  it"). Only one task holds GPUs at a time, so holds cannot deadlock each other;
- a task needs `min_devices` distinct GPUs that each have its memory free; a ratio
  request resolves against each GPU's own total;
- GPU choice (`Policy.fit`): "spread" (default) takes the GPUs running the fewest meow
  tasks (one training per card while cards are idle: sharing compute costs more than
  memory), then the tightest fit, which leaves the largest remainders whole for
  multi-GPU tasks; "pack" puts tightest fit first; "first" is plain first-fit by index;
- ties break on the lowest GPU index, so a placement is a function of its inputs.

The queue is kept per *shape* (GPU count, memory request), each shape in queue order.
Within one pass free memory only shrinks, so once a shape does not fit, nothing more of
that shape fits: the pass merges the heads of the shapes and drops a shape at its first
miss. A pass costs O((started + shapes) x GPUs), not O(queue), which keeps a 100,000-task
queue cheap (see benchmarks/simulate.py).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from meowd.core.units import MemoryRequest, resolve_mib

Fit = Literal["spread", "pack", "first"]


@dataclass(frozen=True)
class Policy:
    starvation_guard: bool = True
    reserve_after: float = 0.0
    """Seconds a blocked task must have waited before GPUs are held for it."""
    fit: Fit = "spread"
    head_of_line: bool = False
    """Cattino's policy: stop at the first task that does not fit (a baseline, not advice)."""


@dataclass(frozen=True)
class DeviceView:
    """What placement needs to know about one GPU at this instant."""

    index: int
    total_mib: int
    free_mib: int
    """Free for meow: NVML free + meow tasks' usage - meow reservations (see `account`)."""
    tasks: int = 0
    others_mib: int = 0
    """Held by processes outside meow: a hold never waits for those to leave."""


@dataclass(frozen=True)
class Candidate:
    task_id: int
    priority: int
    created_at: float
    min_devices: int
    memory: MemoryRequest

    @property
    def key(self) -> tuple[int, float, int]:
        return (-self.priority, self.created_at, self.task_id)

    @property
    def shape(self) -> tuple[int, MemoryRequest]:
        return (self.min_devices, self.memory)


@dataclass(frozen=True)
class Placement:
    task_id: int
    devices: tuple[int, ...]
    reserved_mib: tuple[int, ...]


@dataclass(frozen=True)
class Hold:
    """GPUs kept draining for a task that keeps being overtaken."""

    task_id: int
    devices: tuple[int, ...]


@dataclass
class Plan:
    placements: list[Placement] = field(default_factory=list)
    hold: Hold | None = None


def queue_order(candidate: Candidate) -> tuple[int, float, int]:
    return candidate.key


class WaitQueue:
    """Tasks ready to start, grouped by shape, each group sorted in queue order."""

    def __init__(self, candidates: Iterable[Candidate] = ()) -> None:
        self._shapes: dict[tuple[int, MemoryRequest], list[tuple[tuple, Candidate]]] = {}
        self._where: dict[int, Candidate] = {}
        for candidate in candidates:
            self.add(candidate)

    def add(self, candidate: Candidate) -> None:
        self.discard(candidate.task_id)
        bucket = self._shapes.setdefault(candidate.shape, [])
        entry = (candidate.key, candidate)
        if not bucket or bucket[-1][0] < entry[0]:
            bucket.append(entry)  # the common case: a newer task at the same priority
        else:
            insort(bucket, entry, key=lambda e: e[0])
        self._where[candidate.task_id] = candidate

    def discard(self, task_id: int) -> bool:
        candidate = self._where.pop(task_id, None)
        if candidate is None:
            return False
        bucket = self._shapes[candidate.shape]
        del bucket[bisect_left(bucket, candidate.key, key=lambda e: e[0])]
        if not bucket:
            del self._shapes[candidate.shape]
        return True

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._where

    def buckets(self) -> list[list[tuple[tuple, Candidate]]]:
        return list(self._shapes.values())

    def __iter__(self) -> Iterator[Candidate]:
        """Every candidate in queue order (for display; placement never needs this)."""
        return (c for _, c in heapq.merge(*self._shapes.values(), key=lambda e: e[0]))


@dataclass
class _Free:
    index: int
    total: int
    free: int
    tasks: int
    others: int


def can_ever_fit(min_devices: int, memory: MemoryRequest, totals: list[int]) -> bool:
    """Whether some set of these devices could hold the task if all were empty."""
    if min_devices == 0:
        return True
    fitting = sum(1 for total in totals if resolve_mib(memory, total) <= total)
    return fitting >= min_devices


def _choose(
    candidate: Candidate, pool: list[_Free], fit: Fit
) -> list[tuple[_Free, int]] | None:
    k, memory = candidate.min_devices, candidate.memory
    if isinstance(memory, int):
        fitting = [(d, memory) for d in pool if memory <= d.free]
    else:
        fitting = [(d, need) for d in pool if (need := resolve_mib(memory, d.total)) <= d.free]
    if len(fitting) < k:
        return None
    if fit == "first":
        chosen = fitting[:k]
    elif fit == "pack":
        chosen = heapq.nsmallest(k, fitting, key=lambda p: (p[0].free - p[1], p[0].tasks,
                                                            p[0].index))
    else:
        chosen = heapq.nsmallest(k, fitting, key=lambda p: (p[0].tasks, p[0].free - p[1],
                                                            p[0].index))
    return sorted(chosen, key=lambda p: p[0].index)


def _hold(candidate: Candidate, pool: list[_Free]) -> list[tuple[_Free, int]] | None:
    """The GPUs closest to fitting the task once meow's own tasks there end, if enough
    could ever fit it (memory held by others is not waited for)."""
    possible = [
        (d, need) for d in pool
        if (need := resolve_mib(candidate.memory, d.total)) <= d.total - d.others
    ]
    if len(possible) < candidate.min_devices:
        return None
    chosen = heapq.nsmallest(
        candidate.min_devices, possible,
        key=lambda p: (max(0, p[1] - p[0].free), p[0].tasks, p[0].index),
    )
    return sorted(chosen, key=lambda p: p[0].index)


def place(
    queue: WaitQueue | Iterable[Candidate],
    devices: list[DeviceView],
    cpu_slots_free: int,
    policy: Policy = Policy(),  # frozen, so one shared default is safe
    now: float = 0.0,
    visible: frozenset[int] | None = None,
) -> Plan:
    """Choose the tasks to start now, and the GPUs to hold for a starving task.

    `visible` restricts meow to those GPU indices (setting `visible_devices`).
    """
    if not isinstance(queue, WaitQueue):
        queue = WaitQueue(queue)
    pool = [
        _Free(d.index, d.total_mib, d.free_mib, d.tasks, d.others_mib)
        for d in devices
        if visible is None or d.index in visible
    ]
    plan = Plan()
    buckets = queue.buckets()
    heads = [(bucket[0][0], n, 0) for n, bucket in enumerate(buckets)]
    heapq.heapify(heads)
    while heads:
        _, n, i = heapq.heappop(heads)
        candidate = buckets[n][i][1]
        if candidate.min_devices == 0:
            fits = cpu_slots_free > 0
            if fits:
                cpu_slots_free -= 1
                plan.placements.append(Placement(candidate.task_id, (), ()))
        else:
            chosen = _choose(candidate, pool, policy.fit)
            fits = chosen is not None
            if chosen is not None:
                for device, need in chosen:
                    device.free -= need
                    device.tasks += 1
                plan.placements.append(Placement(
                    candidate.task_id,
                    tuple(d.index for d, _ in chosen),
                    tuple(need for _, need in chosen),
                ))
            elif (
                policy.starvation_guard
                and plan.hold is None
                and now - candidate.created_at >= policy.reserve_after
                and (held := _hold(candidate, pool)) is not None
            ):
                for device, need in held:
                    device.free -= need  # may go negative: nothing else fits there
                plan.hold = Hold(candidate.task_id, tuple(d.index for d, _ in held))
        if fits and i + 1 < len(buckets[n]):
            heapq.heappush(heads, (buckets[n][i + 1][0], n, i + 1))
        elif not fits and policy.head_of_line:
            break
    return plan


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
