"""Placement: which waiting tasks start now, on which GPUs, and when a blocked task will
start. Pure: no I/O, no clock (the caller passes `now` and the running tasks' expected
ends).

The policy, in the order of one pass:
- candidates in queue order: higher priority first, then older, then lower id. A task
  needs `min_devices` distinct GPUs that each have its memory free (a ratio request
  resolves against each GPU's own total); several tasks share a GPU by MiB;
- a task that does not fit never blocks the tasks behind it, yet never starves: the first
  task in queue order that does not fit (and has waited `reserve_after`) gets a
  *reservation*: the GPUs that have its memory free soonest, going by the running tasks'
  expected ends (`Running.ends_at`), and that time, its expected start;
- later tasks backfill around it (`Policy.backfill = "easy"`, the default: EASY
  backfilling): on GPUs the reservation does not need, or where they leave it its
  memory, or anywhere if their estimate (`Candidate.estimate_s`) says they end before it
  can start. A task with no estimate backfills only where it leaves the reservation its
  memory. A running task with no estimate may end any moment: the reservation then
  claims its memory from the soonest it could start, and if it waits on such a task its
  start is unknown and it holds its GPUs as the old guard did. With no runtimes known at
  all, "easy" places exactly as "guard";
- "conservative": the first `Policy.depth` blocked tasks each get a reservation, in
  queue order, each for its estimated duration around the earlier ones, and a task
  starts only if it delays none of them. "guard": the old starvation guard (held GPUs
  drain; runtimes ignored). "none" (or `starvation_guard = False`): no reservation,
  first-fit backfill, big tasks may starve;
- GPU choice (`Policy.fit`): "spread" (default) takes the GPUs running the fewest meow
  tasks (one training per card while cards are idle: sharing compute costs more than
  memory), then the tightest fit, which leaves the largest remainders whole for
  multi-GPU tasks; "pack" puts tightest fit first; "first" is plain first-fit by index;
  `head_of_line` is Cattino's order: stop at the first task that does not fit (it still
  gets its reservation, so `meow list` can say when it starts);
- ties break on the lowest GPU index, so a placement is a function of its inputs.

A reservation is a *claim* on its GPUs' memory over time; a pass re-plans them all, so a
task that outruns its estimate delays a reservation at most until the next pass sees it
(estimates.expected_end raises an outlived estimate). Estimates come from
meowd/core/estimates.py: a time limit, else a high quantile of similar tasks' runtimes.

Cost: the queue is kept per *bucket* (GPU count, memory request, estimate to a power of
two), each in queue order. Within one pass free memory only shrinks, so once a shape
does not fit, nothing more of that shape fits; once a bucket's shortest possible
estimate would outlast the reservations' slack, nothing more of that bucket backfills.
The pass merges the heads of the buckets and drops one at its first such miss. GPUs no
reservation claims need no profile over time (their memory only comes back), so a pass
costs O((started + buckets) x log GPUs) plus, per reservation, a walk over the earliest
running ends until its GPUs are found: not O(queue), not O(running) (see
benchmarks/simulate.py --scale).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import compress, islice
from math import frexp, inf, ldexp
from operator import attrgetter, ge, le, neg, sub
from typing import Literal

from meowd.core.units import MemoryRequest, resolve_mib

Fit = Literal["spread", "pack", "first"]
Backfill = Literal["easy", "conservative", "guard", "none"]
BACKFILL_MODES: tuple[Backfill, ...] = ("easy", "conservative", "guard", "none")


@dataclass(frozen=True)
class Policy:
    starvation_guard: bool = True
    """False: no task ever gets GPUs kept for it, whatever `backfill` says (mode "none")."""
    reserve_after: float = 0.0
    """Seconds a blocked task must have waited before it gets a reservation."""
    fit: Fit = "spread"
    head_of_line: bool = False
    """Cattino's policy: stop at the first task that does not fit (a baseline, not advice)."""
    backfill: Backfill = "easy"
    """How later tasks may pass a blocked one (see the module docstring)."""
    depth: int = 8
    """"conservative": at most this many blocked tasks get reservations in one pass."""

    @property
    def mode(self) -> Backfill:
        return self.backfill if self.starvation_guard else "none"


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


@dataclass(frozen=True, slots=True)
class Candidate:
    task_id: int
    priority: int
    created_at: float
    min_devices: int
    memory: MemoryRequest
    estimate_s: float | None = None
    """How long it is expected to run (meowd/core/estimates.py); None: unknown."""

    @property
    def key(self) -> tuple[int, float, int]:
        return (-self.priority, self.created_at, self.task_id)

    @property
    def shape(self) -> tuple[int, MemoryRequest, bool]:
        """Tasks of one shape fit or fail alike. 1 (MiB) and 1.0 (100%) hash alike in
        Python, hence the type in the key."""
        return (self.min_devices, self.memory, isinstance(self.memory, float))

    @property
    def bucket(self) -> tuple[int, MemoryRequest, bool, int | None]:
        """The shape and the estimate to a power of two: a bucket whose shortest possible
        estimate ends too late to backfill is dropped whole."""
        return (*self.shape, _bin(self.estimate_s))


def _bin(estimate_s: float | None) -> int | None:
    """None (unknown), 0 for [0, 1) s, else e for [2**(e-1), 2**e) s."""
    if estimate_s is None:
        return None
    return 0 if estimate_s < 1 else frexp(estimate_s)[1]


def _bin_floor(b: int | None) -> float:
    """The shortest estimate in bin b (infinite for unknown)."""
    if b is None:
        return inf
    return 0.0 if b == 0 else ldexp(1.0, b - 1)


@dataclass(frozen=True)
class Running:
    """A running task as placement sees it: the memory it gives back, and when."""

    devices: tuple[int, ...]
    mib: tuple[int, ...]
    """Per device, what its end frees: what `account` counts for it (max(reserved, used))."""
    ends_at: float | None = None
    """Its expected end (estimates.expected_end; an outlived estimate is raised there);
    None: no estimate, it may end any moment or never."""


@dataclass(frozen=True)
class Placement:
    task_id: int
    devices: tuple[int, ...]
    reserved_mib: tuple[int, ...]


@dataclass(frozen=True)
class Hold:
    """GPUs kept for a task that keeps being overtaken (the first reservation)."""

    task_id: int
    devices: tuple[int, ...]


@dataclass(frozen=True)
class Reservation:
    """A blocked task's GPUs and expected start: "starts by ~14:20 on GPUs 2,3"."""

    task_id: int
    devices: tuple[int, ...]
    start: float | None
    """Expected start, from the running tasks' expected ends; None when it waits on a
    task with no estimate (or backfill "guard", which ignores runtimes)."""


@dataclass
class Plan:
    placements: list[Placement] = field(default_factory=list)
    hold: Hold | None = None
    """The first reservation's task and GPUs (what the daemon shows as "held")."""
    reservations: list[Reservation] = field(default_factory=list)
    """In queue order; "easy" and "guard" make at most one."""


class WaitQueue:
    """Tasks ready to start, grouped by bucket (shape and estimate bin), each group sorted
    in queue order."""

    def __init__(self, candidates: Iterable[Candidate] = ()) -> None:
        self._shapes: dict[tuple, list[tuple[tuple, Candidate]]] = {}
        self._where: dict[int, Candidate] = {}
        for candidate in candidates:
            self.add(candidate)

    def add(self, candidate: Candidate) -> None:
        self.discard(candidate.task_id)
        bucket = self._shapes.setdefault(candidate.bucket, [])
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
        bucket = self._shapes[candidate.bucket]
        del bucket[bisect_left(bucket, candidate.key, key=lambda e: e[0])]
        if not bucket:
            del self._shapes[candidate.bucket]
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
    k = candidate.min_devices
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
    return _scan(k, pool.free, pool.tasks, needs, fit)


def _fits(k: int, pool: DeviceTable, needs: list[int] | int) -> bool:
    """Whether k GPUs have the memory free (what `_choose` finds, without choosing)."""
    if isinstance(needs, int):
        return len(pool.by_free) - bisect_left(pool.by_free, (needs, -1, -1)) >= k
    return sum(map(ge, pool.free, needs)) >= k


def _scan(k: int, free: list[int], tasks: list[int], needs: list[int] | int,
          fit: Fit) -> list[int] | None:
    """`_choose` by a linear scan over per-position free memory and task counts."""
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


class Timeline:
    """When running tasks give their memory back: every known end in time order, the
    same per device, and per device the memory of tasks with no estimate. A caller with
    many GPUs (the simulator) keeps one and `add`s / `discard`s tasks as they start, end
    or outlive their estimate; the daemon may pass a list of `Running` each pass."""

    __slots__ = ("_tasks", "ends", "per_device", "unknown")

    def __init__(self, running: Mapping[int, Running] | Iterable[Running] = ()) -> None:
        self.ends: list[tuple[float, int, int, int]] = []
        """Sorted (end, device index, MiB, task key)."""
        self.per_device: dict[int, list[tuple[float, int]]] = {}
        """Device index -> sorted (end, MiB)."""
        self.unknown: dict[int, int] = {}
        """Device index -> MiB held by running tasks with no estimate."""
        self._tasks: dict[int, Running] = {}
        items = running.items() if isinstance(running, Mapping) else enumerate(running)
        for key, task in items:
            self._tasks[key] = task
            for index, mib in zip(task.devices, task.mib, strict=True):
                if task.ends_at is None:
                    self.unknown[index] = self.unknown.get(index, 0) + mib
                else:
                    self.ends.append((task.ends_at, index, mib, key))
                    self.per_device.setdefault(index, []).append((task.ends_at, mib))
        self.ends.sort()
        for ends in self.per_device.values():
            ends.sort()

    def add(self, key: int, task: Running) -> None:
        self.discard(key)
        self._tasks[key] = task
        for index, mib in zip(task.devices, task.mib, strict=True):
            if task.ends_at is None:
                self.unknown[index] = self.unknown.get(index, 0) + mib
            else:
                insort(self.ends, (task.ends_at, index, mib, key))
                insort(self.per_device.setdefault(index, []), (task.ends_at, mib))

    def discard(self, key: int) -> None:
        task = self._tasks.pop(key, None)
        if task is None:
            return
        for index, mib in zip(task.devices, task.mib, strict=True):
            if task.ends_at is None:
                self.unknown[index] -= mib
            else:
                del self.ends[bisect_left(self.ends, (task.ends_at, index, mib, key))]
                ends = self.per_device[index]
                del ends[bisect_left(ends, (task.ends_at, mib))]

    def __len__(self) -> int:
        return len(self._tasks)


Started = list[tuple[float, int, int, int]]
"""This pass's placements with an estimate: sorted (end, device index, MiB, task id)."""


class _Pass:
    """One pass: the pool (free memory now) and the reservations backfill must respect.

    A reservation *claims* its memory on its GPUs from its earliest possible start until
    its expected end ("easy": for good). Per claimed GPU a profile says how much memory
    is free over time: known ends raise it, claims lower it. A GPU nobody claimed only
    gains memory as time passes, so it needs no profile: its free memory now is what a
    task may use. `long` is the pool with each claimed GPU at the least it will have
    from now on: what a task that may run for good can use. A task with an estimate may
    use more there, as long as the profile stays above its memory until it ends."""

    def __init__(self, pool: DeviceTable, timeline: Timeline, policy: Policy,
                 now: float, plan: Plan) -> None:
        self.pool, self.timeline, self.policy, self.now, self.plan = (
            pool, timeline, policy, now, plan)
        self.mode = policy.mode
        self.started: Started = []
        self.started_on: dict[int, list[tuple[float, int]]] = {}
        """`started` per position: sorted (end, MiB)."""
        self.unknown: dict[int, int] = {}
        """Per position, MiB of this pass's placements with no estimate."""
        self.long: DeviceTable | None = None
        self.changes: dict[int, list[tuple[float, int]]] = {}
        """Per claimed position, sorted (time, MiB change) from now on."""
        self.times: dict[int, list[float]] = {}
        self.sums: dict[int, list[int]] = {}
        """Per claimed position, the distinct times of change and the total change up to
        each: free memory at t is pool.free + sums[number of times <= t]."""
        self.lows: dict[int, float] = {}
        """Per claimed position, when its free memory first reaches its lowest: a task
        that runs past then may only use what `long` says."""

    # -- placing now -------------------------------------------------------------------
    def choose(self, candidate: Candidate, needs: list[int] | int,
               estimate: float | None) -> list[int] | None:
        """The GPUs to start it on now without delaying any reservation, or None."""
        fit = self.policy.fit
        long = self.long
        if long is None:
            return _choose(candidate, self.pool, needs, fit)
        chosen = _choose(candidate, long, needs, fit)
        if chosen is not None or estimate is None:
            return chosen
        # It ends: on claimed GPUs it may use what stays free until then.
        end, free, tasks = self.now + estimate, self.pool.free, self.pool.tasks
        more = [(p, room) for p, low in self.lows.items() if end <= low
                and (room := min(free[p], self.lowest(p, self.now, end))) > long.free[p]]
        if not more:
            return None
        saved = [(p, long.free[p]) for p, _ in more]
        for p, room in more:
            long._set(p, room, tasks[p])
        chosen = _choose(candidate, long, needs, fit)
        for p, room in saved:
            long._set(p, room, tasks[p])
        return chosen

    def delayed(self, candidate: Candidate, needs: list[int] | int) -> bool | None:
        """After `choose` failed: None if it has no room now (nothing of its shape has);
        else it would delay a reservation: could a task of its bucket with the shortest
        estimate of its bin pass?"""
        if self.long is None or not _fits(candidate.min_devices, self.pool, needs):
            return None
        # Cheap and never wrong the other way: a claimed GPU keeps more memory than
        # `long` says only until its lowest point.
        return self.now + _bin_floor(candidate.bucket[3]) <= max(self.lows.values())

    def take(self, candidate: Candidate, chosen: list[int], needs: list[int] | int
             ) -> Placement:
        pool = self.pool
        placement = Placement(candidate.task_id, *pool.take(chosen, needs))
        estimate = candidate.estimate_s
        for p, mib in zip(chosen, placement.reserved_mib, strict=True):
            if estimate is None:
                self.unknown[p] = self.unknown.get(p, 0) + mib
            else:
                end = self.now + estimate
                insort(self.started, (end, pool.devices[p].index, mib, candidate.task_id))
                insort(self.started_on.setdefault(p, []), (end, mib))
                if p in self.changes:
                    self._change(p, end, mib)
            if self.long is not None:
                self._sync(p)
        return placement

    # -- profiles of claimed GPUs ------------------------------------------------------
    def lowest(self, p: int, start: float, end: float) -> int:
        """The least memory free on claimed position p over [start, end), and at least at
        `start`: a task with a zero estimate (history of runs that ended at once) still
        holds its memory the instant it starts; an empty range would have no minimum."""
        times = self.times[p]
        first = bisect_right(times, start)
        return self.pool.free[p] + min(
            self.sums[p][first:max(first, bisect_left(times, end)) + 1])

    def _sync(self, p: int) -> None:
        """Keep `long` at what position p has for good."""
        free = self.pool.free[p]
        if p in self.changes:
            free = min(free, self.lowest(p, self.now, inf))
        self.long._set(p, free, self.pool.tasks[p])

    def _change(self, p: int, at: float, mib: int) -> None:
        insort(self.changes[p], (at, mib))
        self._derive(p)

    def _derive(self, p: int) -> None:
        times, sums, total = [], [0], 0
        for t, delta in self.changes[p]:
            total += delta
            if times and times[-1] == t:  # changes at one instant count together
                sums[-1] = total
            else:
                times.append(t)
                sums.append(total)
        self.times[p], self.sums[p] = times, sums
        least = sums.index(min(sums))
        self.lows[p] = self.now if least == 0 else times[least - 1]

    def _ends(self, p: int) -> list[tuple[float, int]]:
        """Sorted (end, MiB) of the tasks with known ends on position p, from now on."""
        index, now = self.pool.devices[p].index, self.now
        return [(max(end, now), mib) for end, mib in heapq.merge(
            self.timeline.per_device.get(index, ()), self.started_on.get(p, ()))]

    # -- reservations ------------------------------------------------------------------
    def reserve(self, candidate: Candidate, needs: list[int] | int) -> None:
        """Give a blocked task its reservation, and record it in the plan."""
        pool = self.pool
        if self.mode == "guard":  # held GPUs drain: they are taken from the pool now
            held = _hold(candidate, pool, needs)
            if held is not None:
                indices, _ = pool.take(held, needs, count=False)
                self._record(candidate, indices, None)
            return
        found = self._earliest_gpus(candidate, needs)
        if found is None:
            return
        positions, start = found
        need = (lambda p: needs) if isinstance(needs, int) else needs.__getitem__
        duration = candidate.estimate_s
        # Tasks with no estimate there may end any moment: claim from the earliest it
        # could then start.
        begin = start
        if start is None or any(self._unknown_mib(p) for p in positions):
            earliest = self._earliest(positions, need)
            begin = earliest if start is None else min(start, earliest)
        end = (inf if start is None or duration is None or self.mode == "easy"
               else start + duration)
        if self.long is None:
            self.long = pool.copy()
        for p in positions:
            changes = self.changes.get(p)
            if changes is None:
                changes = self.changes[p] = self._ends(p)
            insort(changes, (begin, -need(p)))
            if end < inf:
                insort(changes, (end, need(p)))
            self._derive(p)
            self._sync(p)
        self._record(candidate, tuple(pool.devices[p].index for p in positions), start)

    def _record(self, candidate: Candidate, indices: tuple[int, ...],
                start: float | None) -> None:
        if self.plan.hold is None:
            self.plan.hold = Hold(candidate.task_id, indices)
        self.plan.reservations.append(Reservation(candidate.task_id, indices, start))

    def _earliest_gpus(self, candidate: Candidate, needs: list[int] | int
                       ) -> tuple[list[int], float | None] | None:
        """The soonest time k GPUs have the candidate's memory free for its estimate
        ("easy", or no estimate: for good), going by expected ends and earlier claims,
        and those GPUs (fewest free first among those free soonest). A GPU nobody
        claimed only gains memory: it qualifies from the first time it has enough.
        None for the time: it waits on tasks with no estimate; then the GPUs are those
        with the most free memory (the old guard's order). None when no k GPUs could
        ever hold it (others' memory)."""
        pool, now, changes = self.pool, self.now, self.changes
        k, free, room, positions = candidate.min_devices, pool.free, pool.room, pool.positions
        need = (lambda p: needs) if isinstance(needs, int) else needs.__getitem__
        estimate = candidate.estimate_s
        duration = inf if estimate is None or self.mode == "easy" else estimate
        # GPUs nobody claimed: when each first has the memory (sweep the ends in order).
        ready: dict[int, float] = {}
        if isinstance(needs, int):
            at = bisect_left(pool.by_free, (needs, -1, -1))
            for _, _, p in pool.by_free[at:]:
                if p not in changes:
                    ready[p] = now
                    if len(ready) == k:
                        break
        else:
            for p in compress(range(len(free)), map(ge, free, needs)):
                if p not in changes:
                    ready[p] = now
                    if len(ready) == k:
                        break
        sweep = heapq.merge(self.timeline.ends, self.started)
        released: dict[int, int] = {}
        upcoming = next(sweep, None)
        claimed = [p for p in changes if room[p] >= need(p)]
        rises = sorted({t for p in claimed for t, mib in changes[p] if mib > 0 and t > now})
        at, r = now, 0
        while True:
            while upcoming is not None and max(upcoming[0], now) <= at:
                _, index, mib, _ = upcoming
                p = positions.get(index)
                if p is not None and p not in ready and p not in changes:
                    got = released[p] = released.get(p, 0) + mib
                    if free[p] + got >= need(p):
                        ready[p] = at
                upcoming = next(sweep, None)
            if len(ready) + len(claimed) >= k:
                options = [(t, -free[p], pool.tasks[p], p) for p, t in ready.items()]
                options += [(at, -low, pool.tasks[p], p) for p in claimed
                            if (low := self.lowest(p, at, at + duration)) >= need(p)]
                if len(options) >= k:
                    return sorted(p for *_, p in heapq.nsmallest(k, options)), at
            while r < len(rises) and rises[r] <= at:
                r += 1
            later = [t for t in (None if upcoming is None else max(upcoming[0], now),
                                 rises[r] if r < len(rises) else None) if t is not None]
            if not later:
                break
            at = min(later)
        # It waits on tasks with no estimate: hold the GPUs with the most memory for good.
        rest = [(-(self.lowest(p, now, inf) if p in changes else free[p]), pool.tasks[p], p)
                for p in range(len(free)) if room[p] >= need(p)]
        if len(rest) < k:
            return None
        return sorted(p for *_, p in heapq.nsmallest(k, rest)), None

    def _unknown_mib(self, p: int) -> int:
        """MiB on position p held by running tasks with no estimate."""
        return self.unknown.get(p, 0) + self.timeline.unknown.get(self.pool.devices[p].index, 0)

    def _earliest(self, positions: list[int], need) -> float:
        """The soonest these GPUs could all have the memory, if every task with no
        estimate ended now and the others when expected (claims aside): a task that ends
        by then cannot delay the reservation."""
        earliest = self.now
        for p in positions:
            have = self.pool.free[p] + self._unknown_mib(p)
            for end, mib in self._ends(p):
                if have >= need(p):
                    break
                have += mib
                earliest = max(earliest, end)
        return earliest


def place(
    queue: WaitQueue | Iterable[Candidate],
    devices: list[DeviceView] | DeviceTable,
    cpu_slots_free: int,
    policy: Policy = Policy(),  # frozen, so one shared default is safe
    now: float = 0.0,
    visible: frozenset[int] | None = None,
    running: Timeline | Mapping[int, Running] | Iterable[Running] = (),
) -> Plan:
    """Choose the tasks to start now, and the reservation(s) of blocked tasks.

    `running`: the running GPU tasks with their expected ends (a `Timeline`, or
    `Running`s); without them every running task counts as "may end any moment" and
    "easy" behaves as "guard". `visible` restricts meow to those GPU indices (setting
    `visible_devices`). Devices must come in index order: ties break on position.
    """
    if not isinstance(queue, WaitQueue):
        queue = WaitQueue(queue)
    if isinstance(devices, DeviceTable):
        table = devices
        if visible is not None:
            table = DeviceTable([d for d in table.devices if d.index in visible])
    else:
        table = DeviceTable([d for d in devices if visible is None or d.index in visible])
    timeline = running if isinstance(running, Timeline) else Timeline(running)
    plan = Plan()
    state = _Pass(table.copy(), timeline, policy, now, plan)
    mode = policy.mode
    depth = 1 if mode != "conservative" else max(1, policy.depth)
    buckets = queue.buckets()
    dead: set[tuple] = set()
    """Shapes that found no room this pass: nothing more of them fits now."""
    heads = [(bucket[0][0], n, 0) for n, bucket in enumerate(buckets)]
    heapq.heapify(heads)
    while heads:
        _, n, i = heapq.heappop(heads)
        candidate = buckets[n][i][1]
        more = i + 1 < len(buckets[n])
        if candidate.min_devices == 0:
            fits = cpu_slots_free > 0
            if fits:
                cpu_slots_free -= 1
                plan.placements.append(Placement(candidate.task_id, (), ()))
            elif policy.head_of_line:
                break
            if fits and more:
                heapq.heappush(heads, (buckets[n][i + 1][0], n, i + 1))
            continue
        needs = state.pool.needs(candidate.memory)
        if candidate.shape not in dead:
            chosen = state.choose(candidate, needs, candidate.estimate_s)
            if chosen is not None:
                plan.placements.append(state.take(candidate, chosen, needs))
                if more:
                    heapq.heappush(heads, (buckets[n][i + 1][0], n, i + 1))
                continue
            if policy.head_of_line:
                if mode != "none" and now - candidate.created_at >= policy.reserve_after:
                    state.reserve(candidate, needs)
                break
            delayed = state.delayed(candidate, needs)
            if delayed is not None:
                if delayed and more:  # a shorter task of its bucket may yet pass
                    heapq.heappush(heads, (buckets[n][i + 1][0], n, i + 1))
                continue
            dead.add(candidate.shape)
        if (mode != "none" and len(plan.reservations) < depth
                and now - candidate.created_at >= policy.reserve_after):
            before = len(plan.reservations)
            state.reserve(candidate, needs)
            if more and before < len(plan.reservations) < depth:
                # Conservative: the tasks of its shape behind it get theirs too.
                heapq.heappush(heads, (buckets[n][i + 1][0], n, i + 1))
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
