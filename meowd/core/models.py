"""The task model: statuses, the transitions allowed between them, and the task record."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from meowd.core.errors import BadRequest
from meowd.core.units import MemoryRequest


class TaskStatus(StrEnum):
    """Lowercase strings on the wire and in the database."""

    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"  # exited 0
    FAILED = "failed"  # exited non-zero, or could not be started
    CANCELLED = "cancelled"  # by the user, before or while running; `resume` requeues it
    KILLED = "killed"  # stopped by `meow kill`
    LOST = "lost"  # the daemon lost track of it (vanished while no daemon watched)
    TIMEOUT = "timeout"  # its time limit ran out


TERMINAL = frozenset(
    {TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.KILLED, TaskStatus.LOST,
     TaskStatus.TIMEOUT}
)
"""Statuses a task never leaves by itself (cancelled is not terminal: it can be resumed;
the unsuccessful ones can be run again with `meow retry`)."""

RETRYABLE = frozenset({TaskStatus.FAILED, TaskStatus.KILLED, TaskStatus.LOST,
                       TaskStatus.TIMEOUT})
"""Statuses `meow retry` requeues as a new attempt."""

ACTIVE = frozenset({TaskStatus.WAITING, TaskStatus.RUNNING})

TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # waiting -> running: placed and spawned; -> failed: spawn failed; -> cancelled: by user
    TaskStatus.WAITING: frozenset({TaskStatus.RUNNING, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskStatus.RUNNING: frozenset(
        {
            TaskStatus.DONE,
            TaskStatus.FAILED,
            TaskStatus.KILLED,
            TaskStatus.CANCELLED,
            TaskStatus.LOST,
            TaskStatus.TIMEOUT,
            TaskStatus.WAITING,  # requeued: exit code 100, a retry, a resumable timeout
        }
    ),
    TaskStatus.CANCELLED: frozenset({TaskStatus.WAITING}),
    TaskStatus.DONE: frozenset(),
    # `meow retry`
    TaskStatus.FAILED: frozenset({TaskStatus.WAITING}),
    TaskStatus.KILLED: frozenset({TaskStatus.WAITING}),
    TaskStatus.LOST: frozenset({TaskStatus.WAITING}),
    TaskStatus.TIMEOUT: frozenset({TaskStatus.WAITING}),
}


class IllegalTransition(RuntimeError):
    """A bug in the daemon, never a user error: the controller asked for an impossible move."""


def check_transition(current: TaskStatus, new: TaskStatus) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current} -> {new} is not allowed")


RETRY_EXIT_CODE = 100
"""Cattino's `exit_and_retry()`: a task exiting with this code is requeued."""

_NAME = re.compile(r"^[A-Za-z0-9_.+@=,-][A-Za-z0-9_.+@=,:-]{0,127}$")


def validate_name(name: object) -> str:
    """Task names become directory names and CLI arguments, so keep them tame."""
    if not isinstance(name, str) or not _NAME.match(name) or name in {".", ".."}:
        raise BadRequest(
            f"invalid task name {name!r}: use 1-128 letters, digits and _.+-@=,: "
            "(no spaces or slashes)"
        )
    if name.isdigit():
        raise BadRequest(f"invalid task name {name!r}: a name of digits only reads as a task id")
    if name == "backend":
        raise BadRequest("the task name 'backend' is reserved")
    return name


@dataclass(slots=True)
class TaskUsage:
    """What a task's process tree uses, sampled by the daemon (MiB, seconds)."""

    gpu_mib: dict[int, int] = field(default_factory=dict)
    """GPU index -> memory its processes hold now."""
    gpu_peak_mib: dict[int, int] = field(default_factory=dict)
    rss_mib: int = 0
    rss_peak_mib: int = 0
    cpu_seconds: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        """GPU indices become string keys: msgpack and JSON readers both accept those."""
        return {
            "gpu_mib": {str(k): v for k, v in self.gpu_mib.items()},
            "gpu_peak_mib": {str(k): v for k, v in self.gpu_peak_mib.items()},
            "rss_mib": self.rss_mib, "rss_peak_mib": self.rss_peak_mib,
            "cpu_seconds": round(self.cpu_seconds, 3),
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> TaskUsage:
        return cls(
            gpu_mib={int(k): v for k, v in data.get("gpu_mib", {}).items()},
            gpu_peak_mib={int(k): v for k, v in data.get("gpu_peak_mib", {}).items()},
            rss_mib=data.get("rss_mib", 0), rss_peak_mib=data.get("rss_peak_mib", 0),
            cpu_seconds=data.get("cpu_seconds", 0.0),
        )


NO_USAGE = TaskUsage()
"""The usage of every task that never ran: one object, shared, so never written to.
A task gets its own at each attempt (`begin_attempt`; sampling makes sure too)."""


def _no_usage() -> TaskUsage:
    return NO_USAGE


_ATTEMPT_FIELDS = ("devices", "reserved_mib", "attempts", "started_at", "ended_at",
                   "exit_code", "warning", "end_reason", "deadline", "usage")
"""What `Task.begin_attempt` sets."""


@dataclass(slots=True)
class Task:
    """One queued command and what became of it. Plain data: no I/O, no process handles."""

    id: int
    name: str
    fullname: str
    command: str
    cwd: str
    env_hash: str
    priority: int = 0
    min_devices: int = 1
    requires_memory_per_device: MemoryRequest = 0
    status: TaskStatus = TaskStatus.WAITING
    # Tuples, replaced and never edited: the empty one is shared (a list each would be
    # 16 MiB for 100,000 waiting tasks).
    devices: tuple[int, ...] = ()
    reserved_mib: tuple[int, ...] = ()
    """Per placed device, the MiB reserved for this task (ratios already resolved)."""
    exit_code: int | None = None
    reason: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    attempts: int = 0
    depends_on: tuple[int, ...] = ()
    """Ids of the tasks that must be done before this one may start."""
    enforce_memory: bool = False
    """Kill the task when it uses more GPU memory than it asked for."""
    warning: str | None = None
    """Something the user should know about a task that still runs (e.g. over its memory)."""
    usage: TaskUsage = field(default_factory=_no_usage)
    time_limit: float | None = None
    """Seconds an attempt may run; then SIGTERM, `kill_grace`, SIGKILL."""
    max_retries: int = 0
    """A failed attempt runs again at most this many times."""
    resumable: bool = False
    """Requeued (run directory kept) when its time limit runs out."""
    retries_used: int = 0
    end_reason: str | None = None
    """The typed reason of the last ending (meowd.core.reasons.EndReason)."""
    executor: str = "local"
    deadline: float | None = None
    """Epoch seconds when the running attempt's time limit runs out."""
    dependency: str | None = None
    """Why it waits for a predecessor ("waiting for g/a", "blocked: g/a failed"); derived
    by the index from its predecessors, never stored."""

    def transition(self, new: TaskStatus, reason: str | None = None) -> None:
        check_transition(self.status, new)
        self.status = new
        self.reason = reason

    def to_wire(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: asdict deep-copies every list and dict, and
        # `meow list` of 20,000 tasks spent most of its time there.
        return {
            "id": self.id, "name": self.name, "fullname": self.fullname,
            "command": self.command, "cwd": self.cwd, "env_hash": self.env_hash,
            "priority": self.priority, "min_devices": self.min_devices,
            "requires_memory_per_device": self.requires_memory_per_device,
            "status": str(self.status), "devices": list(self.devices),
            "reserved_mib": list(self.reserved_mib), "exit_code": self.exit_code,
            "reason": self.reason, "created_at": self.created_at,
            "started_at": self.started_at, "ended_at": self.ended_at,
            "attempts": self.attempts, "depends_on": list(self.depends_on),
            "enforce_memory": self.enforce_memory, "warning": self.warning,
            "usage": self.usage.to_wire(), "time_limit": self.time_limit,
            "max_retries": self.max_retries, "resumable": self.resumable,
            "retries_used": self.retries_used, "end_reason": self.end_reason,
            "executor": self.executor, "deadline": self.deadline,
            "dependency": self.dependency,
        }

    def begin_attempt(self, devices: Sequence[int], reserved_mib: Sequence[int],
                      now: float) -> dict[str, Any]:
        """The fields a new attempt starts from; returns what they were (`undo_attempt`)."""
        before = {name: getattr(self, name) for name in _ATTEMPT_FIELDS}
        self.devices, self.reserved_mib = tuple(devices), tuple(reserved_mib)
        self.attempts += 1
        self.started_at = now
        self.ended_at = self.exit_code = self.warning = self.end_reason = None
        self.deadline = now + self.time_limit if self.time_limit else None
        self.usage = TaskUsage()
        return before

    def undo_attempt(self, before: dict[str, Any]) -> None:
        """Back to before `begin_attempt` (an attempt that never started)."""
        for name, value in before.items():
            setattr(self, name, value)

    def reset_for_queue(self) -> None:
        """What a task that goes back to waiting (requeue, retry, resume) gives up."""
        self.devices, self.reserved_mib = (), ()
        self.exit_code = None
        self.deadline = None

    @property
    def group(self) -> str | None:
        """`a/b` for the task `a/b/c`; None outside groups."""
        head, _, _ = self.fullname.rpartition("/")
        return head or None
