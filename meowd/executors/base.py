"""The executor interface: how the controller starts, signals, re-adopts and learns the end
of an attempt, whichever system runs it (local processes, Slurm jobs).

The controller never knows which executor runs a task: it hands a `Launch` (plain data) to
`start`, stores the returned `Handle` with the attempt, and gets every ending as an `Exit`
through the `on_exit` callback the executor was built with (called on the event loop).
An executor must be able to re-adopt an attempt from its stored `Handle` after a daemon
restart, and to report an attempt that ended while no daemon watched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from meowd.core.reasons import EndReason


@dataclass(frozen=True)
class Launch:
    """Everything needed to start one attempt of a task."""

    task_id: int
    attempt: int
    fullname: str
    command: str
    cwd: str
    env: dict[str, str]
    stdout: str
    stderr: str
    exit_file: str
    """Where the attempt's wrapper writes the command's exit status."""
    devices: tuple[int, ...] = ()
    """Local GPU indices placed by meow (empty where the executor's own system places)."""
    min_devices: int = 0
    memory_mib: int | None = None
    """Per-device memory request, resolved to MiB; None when nothing is reserved."""
    time_limit: float | None = None
    """Seconds; the executor may enforce it itself (Slurm's --time). meowd enforces it too."""
    options: dict[str, str] = field(default_factory=dict)
    """Executor-specific options (e.g. slurm partition/account/extra)."""


@dataclass(frozen=True)
class Handle:
    """How to find a started attempt again; stored with the attempt in SQLite."""

    pid: int | None = None
    create_time: float | None = None
    """The process's start time: a reused pid never matches."""
    job_id: str | None = None
    """An external system's id (a Slurm job id)."""


@dataclass(frozen=True)
class Exit:
    exit_code: int | None
    """The command's status (128+N when killed by signal N); None when nobody knows."""
    reason: EndReason | None = None
    """Set when the executor knows better than the exit code (Slurm TIMEOUT, NODE_FAIL...)."""
    detail: str | None = None
    leftovers: int = 0
    """Processes that outlived the task's main process and were stopped (or, with
    `kill_leftovers = false`, left running) before this exit was reported."""
    host_oom: bool = False
    """The kernel's (or the cgroup's) OOM killer struck during the attempt."""


ExitCallback = Callable[[int, Exit], None]
"""on_exit(task_id, exit): called once per attempt, on the event loop."""


class StartError(Exception):
    """The attempt could not be started; the message says why (one line)."""


class Executor(Protocol):
    name: str

    def start(self, launch: Launch) -> Handle:
        """Start the attempt; raises StartError (or OSError) with nothing left behind."""

    def signal(self, task_id: int, sig: int) -> bool:
        """Signal the attempt's whole process tree; False when it is not running here."""

    def adopt(self, task_id: int, handle: Handle, exit_file: str) -> bool:
        """Watch an attempt started by an earlier daemon. False when it is gone for good
        (the controller then reads its exit file or marks it lost)."""

    def is_watching(self, task_id: int) -> bool: ...

    def describe(self, task_id: int) -> dict[str, str]:
        """Extra facts to show (job id, partition, node); empty for local processes."""

    async def run(self) -> None:
        """Background work (polling an external system); returns at once if there is none."""

    def detach_all(self) -> None:
        """Stop watching (daemon shutdown); the attempts keep running."""
