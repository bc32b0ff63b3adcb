"""What clients see of the controller's state: tasks with secrets masked and why they wait,
`meow show`'s details, `meow devices`, and the whole state `meow top` is pushed.

Read-only: nothing here changes state or writes to the store.
"""

from __future__ import annotations

import gc
import heapq
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from meowd.core import listing, listjson
from meowd.core.models import ACTIVE, NO_USAGE, Task, TaskStatus
from meowd.core.units import format_duration, format_mib
from meowd.devices import NO_GPU_HINT
from meowd.secrets import redact

if TYPE_CHECKING:
    from meowd.controller import Controller


def public(c: Controller, task: Task) -> dict[str, Any]:
    """A task as clients see it: secret values masked wherever they appear."""
    data = task.to_wire()
    data["why"] = why_waiting(c, task)
    data["held_for"] = c.hold is not None and c.hold.task_id == task.id
    estimate = c.estimate(task) if task.status in (TaskStatus.WAITING, TaskStatus.RUNNING) \
        else None
    data["estimate"] = estimate.describe() if estimate else None
    reservation = c.reservations.get(task.id)
    data["starts_by"] = reservation.start if reservation else None
    hidden = c.secrets_of(task)
    if hidden:
        for key in ("command", "reason", "warning"):
            data[key] = redact(data[key], hidden)
    return data


COLUMNS = (*Task(0, "", "", "", "", "").to_wire(), "why", "held_for", "estimate", "starts_by")
"""The keys of `public`, in its order: what `meow list` sends once instead of per task."""
_HEAD = attrgetter(*COLUMNS[:COLUMNS.index("usage")])
_TAIL = attrgetter(*COLUMNS[COLUMNS.index("usage") + 1:COLUMNS.index("why")])


def recent(c: Controller) -> tuple[list[Task], dict[str, int]]:
    """`listing.bounded` of every task, without a pass over 100,000 waiting ones: the
    ready ones come from the wait queue, already in start order. Tests check that both
    choose alike."""
    index, waiting = c.index, c.index.waiting
    limit, finished_limit = listing.RECENT_WAITING, listing.RECENT_FINISHED
    if len(waiting) <= limit:
        nexts = list(waiting.values())
    elif len(waiting) == len(index.queue):  # all ready and local: the queue's order
        nexts = [index[cand.task_id] for cand in islice(index.queue, limit)]
    else:
        nexts = heapq.nsmallest(limit, waiting.values(), key=_start_order)
    running = [t for t in (index.tasks.get(i) for i in c.running)
               if t is not None and t.status is TaskStatus.RUNNING]
    finished = len(index) - len(waiting) - len(running)
    if not finished:
        ended = []
    elif finished <= finished_limit:
        ended = [t for t in index if t.status not in ACTIVE]
    else:
        ended = heapq.nlargest(finished_limit, (t for t in index if t.status not in ACTIVE),
                               key=_end_order)
    shown = sorted((*running, *nexts, *ended), key=attrgetter("id"))
    return shown, {"waiting": max(0, len(waiting) - limit),
                   "finished": max(0, finished - finished_limit)}


def _start_order(t: Task) -> tuple[int, float, int]:
    return -t.priority, t.created_at, t.id


def _end_order(t: Task) -> tuple[float, int]:
    return (t.created_at if t.ended_at is None else t.ended_at), t.id


JSON_KEPT = 20_000
"""Ended tasks whose `meow list --json` row meowd keeps encoded (~700 bytes each)."""


def json_list(c: Controller, tasks: Iterable[Task]) -> bytes:
    """`meow list --json`'s bytes (listjson), the tasks sorted by id. An ended task's row
    is encoded once and kept in `c.row_json` until a change to the task (`bump`) drops
    it: a listing of 1000 ended tasks was mostly building and encoding the same rows.
    That row depends on the task alone (no hold, reservation, estimate or reason to
    wait), so nothing else drops it."""
    kept = c.row_json
    shown = sorted(tasks, key=attrgetter("id"))
    fresh = [t for t in shown if t.id not in kept]
    with _gc_paused():
        built = dict(zip((t.id for t in fresh), _rows(c, fresh), strict=True))
        for task in fresh:
            if task.status not in ACTIVE and len(kept) < JSON_KEPT:
                built[task.id] = kept[task.id] = listjson.encode_row(COLUMNS, built[task.id])
        return listjson.encode_mixed(COLUMNS, [kept.get(t.id) or built[t.id] for t in shown])


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Building 100,000 acyclic rows or structs: the cyclic collector would walk every
    task again and again meanwhile (60% of the time)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def rows(c: Controller, tasks: Iterable[Task]) -> list[tuple[Any, ...]]:
    """`public` of each task as a row of COLUMNS' values, built for 100,000 tasks: plain
    fields read in one C call, the never-used usage and the common reasons to wait
    formatted once per call. A task with secrets goes through `public` itself."""
    with _gc_paused():
        return _rows(c, tasks)


def _rows(c: Controller, tasks: Iterable[Task]) -> list[tuple[Any, ...]]:
    out = []
    empty_usage = NO_USAGE.to_wire()
    memo: dict[tuple[int, Any, bool], str] = {}
    hold = c.hold.task_id if c.hold is not None else None
    reservations, estimate = c.reservations, c.estimate
    # What estimate() keeps: read here without a call per task, a third of this loop.
    known: dict[int, Any] = c._estimates
    waiting, running = TaskStatus.WAITING, TaskStatus.RUNNING
    secrets: dict[str, bool] = {}  # env hash -> has secrets
    notes, plain = c.ledger_notes, not c.store.degraded
    for task in tasks:
        hidden = secrets.get(task.env_hash)
        if hidden is None:
            hidden = secrets[task.env_hash] = bool(c.secrets_of(task))
        if hidden:
            out.append(tuple(public(c, task).values()))
            continue
        status = task.status
        reservation = reservations.get(task.id)
        why = None
        if status is waiting:
            found = known[task.id] if task.id in known else estimate(task)
            # why_waiting's last answer, no GPU has room, from the memo it fills
            if plain and reservation is None and task.min_devices and not task.dependency \
                    and task.id not in notes:
                memory = task.requires_memory_per_device
                why = memo.get((task.min_devices, memory, memory.__class__ is float))
            if why is None:
                why = why_waiting(c, task, memo)
        else:
            found = estimate(task) if status is running else None
        usage = task.usage
        out.append((
            *_HEAD(task), empty_usage if usage is NO_USAGE else usage.to_wire(), *_TAIL(task),
            why, hold == task.id, found.describe() if found else None,
            reservation.start if reservation else None))
    return out


def why_waiting(c: Controller, task: Task,
                memo: dict[tuple[int, Any, bool], str] | None = None) -> str | None:
    """Why a waiting task has not started, in words (None if it is about to). `memo`
    keeps the common answer (no GPU has room) per shape across one listing."""
    if task.status is not TaskStatus.WAITING:
        return None
    if task.dependency:
        return task.dependency
    if c.store.degraded:
        return "meowd cannot record new starts until its disk has room"
    if task.id in c.ledger_notes:  # placed, but another queue's claim came first
        return c.ledger_notes[task.id]
    hold = c.hold
    reservation = c.reservations.get(task.id)
    if reservation is not None:
        gpus = ",".join(map(str, reservation.devices))
        if reservation.start is not None:
            at = time.strftime("%H:%M", time.localtime(reservation.start))
            return f"starts by ~{at} on GPUs {gpus} (reserved; others backfill around it)"
        return f"GPUs {gpus} held for it until they have room"
    if task.min_devices == 0:
        return f"all {c.settings.cpu_slots} CPU slots busy"
    memory = task.requires_memory_per_device
    shape = (task.min_devices, memory, isinstance(memory, float))
    if memo is not None and shape in memo:
        return memo[shape]
    why = f"no {task.min_devices} GPU(s) with {format_mib(memory)} free"
    if hold is not None and hold.task_id in c.index:
        held = c.index[hold.task_id]
        why += f"; GPUs {','.join(map(str, hold.devices))} held for {held.fullname}"
    if memo is not None:
        memo[shape] = why
    return why


_NO_LOGS = {"stdout": None, "stderr": None}


def log_paths(c: Controller, task: Task) -> dict[str, str | None]:
    """The latest attempt's logs, for `meow top`."""
    if not task.attempts:
        return _NO_LOGS
    base = c.attempt_stem(task, task.attempts)
    return {"stdout": f"{base}.stdout.log", "stderr": f"{base}.stderr.log"}


def state(c: Controller, with_tasks: bool = True) -> dict[str, Any]:
    """Everything `meow top` shows, in one message (the server sends 100,000 tasks in
    pieces: `with_tasks=False` and `task_states`)."""
    return {
        "version": c.version,
        **({"tasks": task_states(c, list(c.index))} if with_tasks else {}),
        "devices": devices(c),
        "cpu_slots": c.settings.cpu_slots,
        "degraded": c.store.degraded,
    }


def task_states(c: Controller, tasks: list[Task]) -> list[dict[str, Any]]:
    """What `meow top` shows of these tasks: `public`, and their latest logs."""
    return [dict(zip(COLUMNS, row, strict=True), **log_paths(c, t))
            for row, t in zip(rows(c, tasks), tasks, strict=True)]


def show(c: Controller, task: Task) -> dict[str, Any]:
    attempts = c.store.attempts(task.id)
    run = c.running.get(task.id)
    if run is not None and attempts and attempts[-1].n == run.attempt.n:
        attempts[-1] = run.attempt
    hidden = c.secrets_of(task)
    now = time.time()
    runtime = None
    if task.started_at is not None:
        runtime = (task.ended_at or now) - task.started_at
    events = [
        {"ts": ts, "kind": kind, "detail": redact(detail, hidden)}
        for ts, kind, detail in c.store.events(task.id)
    ]
    return {
        **public(c, task),
        "task_home": str(c.task_home(task)),
        "env_keys": sorted(c.store.get_env(task.env_hash)),
        "pid": run.attempt.pid if run else None,
        "runtime_s": runtime,
        "runtime": format_duration(runtime) if runtime is not None else None,
        "remaining_s": (task.deadline - now) if task.deadline and run else None,
        "depends_on_names": [c.index[d].fullname for d in task.depends_on if d in c.index],
        "hold_devices": list(c.hold.devices) if c.hold and c.hold.task_id == task.id else [],
        "executor_info": c.describe(task),
        "attempt_list": [{**a.to_wire(), "reason": redact(a.reason, hidden)}
                         for a in attempts],
        "history": [e for e in events if e["kind"] in _STATUS_EVENTS],
        "events": events,
    }


_STATUS_EVENTS = frozenset({*(str(s) for s in TaskStatus), "created"})


def usage(c: Controller, task: Task) -> dict[str, Any]:
    """Per attempt: runtime, peak RSS, CPU seconds, peak GPU memory per device."""
    rows = []
    for a in show(c, task)["attempt_list"]:
        end = a["ended_at"] or time.time()
        rows.append({
            "attempt": a["n"], "started_at": a["started_at"], "ended_at": a["ended_at"],
            "runtime_s": end - a["started_at"], "exit_code": a["exit_code"],
            "end_reason": a["end_reason"], "devices": a["devices"],
            "rss_peak_mib": a["usage"]["rss_peak_mib"],
            "cpu_seconds": a["usage"]["cpu_seconds"],
            "gpu_peak_mib": a["usage"]["gpu_peak_mib"],
        })
    return {"id": task.id, "fullname": task.fullname, "attempts": rows}


def devices(c: Controller) -> dict[str, Any]:
    names = {d.index: d for d in c.monitor.devices}
    others: dict[int, list[dict[str, Any]]] = {}
    for f in c.foreign:  # what every user may see of other queues' claims
        others.setdefault(f.device, []).append(
            {"user": f.user, "mib": f.mib, "since": f.since, "same_user": f.same_user,
             "outstanding_mib": f.outstanding_mib})
    return {
        "backend": c.backend.name if c.backend else None,
        "hint": None if c.backend else NO_GPU_HINT,
        "devices": [
            {
                "index": u.index, "name": names[u.index].name, "total_mib": u.total,
                "used_by_meow_mib": u.used_by_meow, "used_by_others_mib": u.used_by_others,
                "reserved_mib": u.reserved,
                "reserved_by_others_mib": sum(o["outstanding_mib"]
                                              for o in others.get(u.index, ())),
                "free_mib": max(0, u.free - sum(o["outstanding_mib"]
                                                for o in others.get(u.index, ()))),
                "utilization": names[u.index].utilization,
                "tasks": [c.index[i].fullname for i in u.task_ids if i in c.index],
                "others": others.get(u.index, []),
            }
            for u in c.accounting()
        ],
    }
