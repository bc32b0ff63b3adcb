"""Placement: which waiting tasks start now, and on which GPUs. Pure: no I/O, no clock.

Rules:
- candidates in queue order: higher priority first, then older, then lower id;
- a task that does not fit is skipped and never blocks the tasks behind it...
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
from itertools import compress, islice
from operator import attrgetter, ge, le, neg, sub
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
    def shape(self) -> tuple[int, MemoryRequest, bool]:
        """Tasks of one shape fit or fail alike. 1 (MiB) and 1.0 (100%) hash alike in
        Python, hence the type in the key."""
        return (self.min_devices, self.memory, isinstance(self.memory, float))


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


class WaitQueue:
    """Tasks ready to start, grouped by shape, each group sorted in queue order."""

    def __init__(self, candidates: Iterable[Candidate] = ()) -> None:
        self._shapes: dict[tuple[int, MemoryRequest, bool], list[tuple[tuple, Candidate]]] = {}
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


_FREE = attrgetter("free_mib")
_TASKS = attrgetter("tasks")


class DeviceTable:
    """Devices by position (index order) with two sorted indexes, so that finding the
    GPUs for a MiB request costs O(log GPUs), not a scan:
      `levels`: task count -> sorted [(free, position)]   (the "spread" order)
      `by_free`: sorted [(free, tasks, position)]         (the "pack" order)
    A pass works on a `copy()` (list copies in C). A caller with many GPUs (the
    simulator) keeps one table and `update()`s the devices that changed."""

    __slots__ = ("by_free", "devices", "free", "levels", "positions", "room", "tasks")

    def __init__(self, devices: list[DeviceView]) -> None:
        self.devices = list(devices)
        self.free = list(map(_FREE, devices))
        self.tasks = list(map(_TASKS, devices))
        self.positions = {d.index: p for p, d in enumerate(devices)}
        self.room = [d.total_mib - d.others_mib for d in devices]
        """What meow could ever use on each GPU: its total less others' memory."""
        self.levels: dict[int, list[tuple[int, int]]] = {}
        for p, (free, tasks) in enumerate(zip(self.free, self.tasks, strict=True)):
            self.levels.setdefault(tasks, []).append((free, p))
        for entries in self.levels.values():
            entries.sort()
        self.by_free = sorted(zip(self.free, self.tasks, range(len(devices)), strict=True))

    def _set(self, p: int, free: int, tasks: int) -> None:
        old_free, old_tasks = self.free[p], self.tasks[p]
        level = self.levels[old_tasks]
        del level[bisect_left(level, (old_free, p))]
        if not level:
            del self.levels[old_tasks]
        del self.by_free[bisect_left(self.by_free, (old_free, old_tasks, p))]
        self.free[p], self.tasks[p] = free, tasks
        insort(self.levels.setdefault(tasks, []), (free, p))
        insort(self.by_free, (free, tasks, p))

    def update(self, view: DeviceView) -> None:
        p = self.positions[view.index]
        self.devices[p] = view
        self.room[p] = view.total_mib - view.others_mib
        self._set(p, view.free_mib, view.tasks)

    def copy(self) -> DeviceTable:
        new = object.__new__(DeviceTable)
        new.devices, new.positions, new.room = self.devices, self.positions, self.room
        new.free, new.tasks, new.by_free = self.free.copy(), self.tasks.copy(), self.by_free.copy()
        new.levels = {tasks: entries.copy() for tasks, entries in self.levels.items()}
        return new

    def needs(self, memory: MemoryRequest) -> list[int] | int:
        """A MiB request is the same everywhere; a ratio resolves per GPU total."""
        if isinstance(memory, int):
            return memory
        return [resolve_mib(memory, d.total_mib) for d in self.devices]

    def take(self, chosen: list[int], needs: list[int] | int, count: bool = True) -> tuple:
        used = []
        for p in chosen:
            need = needs if isinstance(needs, int) else needs[p]
            # A hold may drive free below zero: nothing else fits there.
            self._set(p, self.free[p] - need, self.tasks[p] + (1 if count else 0))
            used.append(need)
        return tuple(self.devices[p].index for p in chosen), tuple(used)


def can_ever_fit(min_devices: int, memory: MemoryRequest, totals: list[int]) -> bool:
    """Whether some set of these devices could hold the task if all were empty."""
    if min_devices == 0:
        return True
    fitting = sum(1 for total in totals if resolve_mib(memory, total) <= total)
    return fitting >= min_devices


def _choose(candidate: Candidate, pool: DeviceTable, needs: list[int] | int,
            fit: Fit) -> list[int] | None:
    """Positions of the GPUs to start the candidate on, or None if it does not fit.

    MiB requests use the table's sorted indexes; ratio requests and first-fit scan with
    C-level builtins (map, compress, zip, nsmallest on tuples).
    """
    k, free, tasks = candidate.min_devices, pool.free, pool.tasks
    if isinstance(needs, int) and fit == "pack":
        start = bisect_left(pool.by_free, (needs, -1, -1))
        best = pool.by_free[start:start + k]
        return sorted(p for _, _, p in best) if len(best) == k else None
    if isinstance(needs, int) and fit == "spread":
        chosen: list[int] = []
        for level in sorted(pool.levels):
            entries = pool.levels[level]
            start = bisect_left(entries, (needs, -1))
            chosen.extend(p for _, p in entries[start:start + k - len(chosen)])
            if len(chosen) == k:
                return sorted(chosen)
        return None
    if isinstance(needs, int):
        fits = map(needs.__le__, free)
        leftover: list[int] = free  # same order as free - need when the need is uniform
    else:
        fits = map(ge, free, needs)
        leftover = list(map(sub, free, needs))
    positions = range(len(free))
    if fit == "first":
        chosen = list(islice(compress(positions, fits), k))
        return chosen if len(chosen) == k else None
    if fit == "spread":
        keys = zip(tasks, leftover, positions, strict=True)
    else:
        keys = zip(leftover, tasks, positions, strict=True)
    best = heapq.nsmallest(k, compress(keys, fits))
    if len(best) < k:
        return None
    return sorted(key[2] for key in best)


def _hold(candidate: Candidate, pool: DeviceTable, needs: list[int] | int) -> list[int] | None:
    """The GPUs with the most free memory (so the first to fit once meow's own tasks there
    end) among those that could ever fit the task: memory held by processes outside
    meow is not waited for. Ties go to fewer tasks, then the lower index. Chosen afresh
    each pass: keeping a hold where it first fell measured worse (it can sit behind one
    long job)."""
    k = candidate.min_devices
    room = pool.room
    if isinstance(needs, int) and min(room) >= needs:
        # Every GPU could hold it: walk the free-memory index from the top, one group of
        # equal free memory at a time (each group is in (tasks, position) order).
        by_free, chosen, end = pool.by_free, [], len(pool.by_free)
        while end > 0 and len(chosen) < k:
            start = bisect_left(by_free, (by_free[end - 1][0], -1, -1), 0, end)
            chosen.extend(p for _, _, p in by_free[start:end][: k - len(chosen)])
            end = start
        return sorted(chosen) if len(chosen) == k else None
    n = len(pool.free)
    need_list = [needs] * n if isinstance(needs, int) else needs
    keys = zip(map(neg, pool.free), pool.tasks, range(n), strict=True)
    best = heapq.nsmallest(k, compress(keys, map(le, need_list, room)))
    if len(best) < k:
        return None
    return sorted(key[2] for key in best)


def place(
    queue: WaitQueue | Iterable[Candidate],
    devices: list[DeviceView] | DeviceTable,
    cpu_slots_free: int,
    policy: Policy = Policy(),  # frozen, so one shared default is safe
    now: float = 0.0,
    visible: frozenset[int] | None = None,
) -> Plan:
    """Choose the tasks to start now, and the GPUs to hold for a starving task.

    `visible` restricts meow to those GPU indices (setting `visible_devices`).
    Devices must come in index order: ties break on position.
    """
    if not isinstance(queue, WaitQueue):
        queue = WaitQueue(queue)
    if isinstance(devices, DeviceTable):
        table = devices
        if visible is not None:
            table = DeviceTable([d for d in table.devices if d.index in visible])
    else:
        table = DeviceTable([d for d in devices if visible is None or d.index in visible])
    pool = table.copy()
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
            needs = pool.needs(candidate.memory)
            chosen = _choose(candidate, pool, needs, policy.fit)
            fits = chosen is not None
            if chosen is not None:
                plan.placements.append(Placement(candidate.task_id, *pool.take(chosen, needs)))
            elif (
                policy.starvation_guard
                and plan.hold is None
                and now - candidate.created_at >= policy.reserve_after
                and (held := _hold(candidate, pool, needs)) is not None
            ):
                indices, _ = pool.take(held, needs, count=False)
                plan.hold = Hold(candidate.task_id, indices)
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
