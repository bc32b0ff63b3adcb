"""`meow list`'s bounded view: what a person reads in a table when the queue holds
100,000 tasks.

Every running task, the waiting tasks next in line (the order they would start in:
priority, then age), and the tasks that ended most recently; the rest is counted, and
`meow list --all` shows it. A queue within the limits is shown whole, as task-spooler's
`tsp -l` shows it. Pure: the daemon applies it to its tasks, the CLI to the rows it
filtered (`meow list --filter`, `meow list NAME`).
"""

from __future__ import annotations

import heapq

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs `meow list` start-up time (the CLI's fast path)
    from collections.abc import Callable, Iterable
    from typing import TypeVar

    T = TypeVar("T")

RECENT_WAITING = 50
"""Waiting tasks shown: the next ones to start."""
RECENT_FINISHED = 50
"""Tasks that left waiting and running (done, failed, cancelled...) shown: the latest."""

Facts = tuple[int, str, int, float, float | None]
"""(id, status, priority, created_at, ended_at) of one task."""


def bounded(items: Iterable[T], facts: Callable[[T], Facts],
            waiting: int = RECENT_WAITING, finished: int = RECENT_FINISHED,
            ) -> tuple[list[T], dict[str, int]]:
    """The items to show, in id order, and how many waiting and finished ones were left
    out. One pass, then a partial sort of each kind: O(n log limit)."""
    running: list[tuple[int, T]] = []
    queued: list[tuple[tuple[int, float, int], T]] = []
    ended: list[tuple[tuple[float, int], T]] = []
    for item in items:
        task_id, status, priority, created_at, ended_at = facts(item)
        if status == "running":
            running.append((task_id, item))
        elif status == "waiting":
            queued.append(((-priority, created_at, task_id), item))
        else:
            ended.append(((created_at if ended_at is None else ended_at, task_id), item))
    first = _key0
    shown = running + [(e[0][2], e[1]) for e in heapq.nsmallest(waiting, queued, key=first)] \
        + [(e[0][1], e[1]) for e in heapq.nlargest(finished, ended, key=first)]
    shown.sort(key=first)
    omitted = {"waiting": max(0, len(queued) - waiting),
               "finished": max(0, len(ended) - finished)}
    return [item for _, item in shown], omitted


def _key0(entry: tuple) -> object:
    return entry[0]


def footer(omitted: dict[str, int]) -> str | None:
    """The line under a bounded table that says what it left out; None if nothing."""
    parts = [f"{n:,} more {kind}" for kind, n in (("waiting", omitted.get("waiting", 0)),
                                                  ("finished", omitted.get("finished", 0))) if n]
    if not parts:
        return None
    return f"... {' and '.join(parts)} tasks not shown: meow list --all shows every task"
