"""Run tasks as local processes: spawn, watch for exit, signal the process group, re-adopt.

Each task runs as `/bin/sh -c WRAPPER` in its own session (so its pgid is its pid and a
signal to -pid reaches the whole group). The wrapper runs the user's command in an
inner shell and writes its exit status to a per-attempt file, so a daemon that was
not the task's parent (it restarted meanwhile) still learns the real exit code.
Exits are noticed through a pidfd registered with the event loop: no thread per task,
no polling.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger("meowd.executor")

# $1 command, $2 exit file, $3 working directory, $4 cgroup.procs to join ("" for none).
# The traps are handlers, not "ignore", so the command gets default dispositions at exec.
# The wrapper joins its cgroup before it starts anything, so nothing escapes it.
WRAPPER = (
    "trap : HUP INT TERM\n"
    '[ -z "$4" ] || { echo $$ > "$4"; } 2>/dev/null || :\n'
    'cd -- "$3" || exit 127\n'
    '/bin/sh -c "$1"\n'
    "rc=$?\n"
    'echo "$rc" > "$2"\n'
    'exit "$rc"\n'
)
_DEFAULT_SIGNALS = [signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM,
                    signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD]


@dataclass(frozen=True)
class Started:
    pid: int
    create_time: float


@dataclass(frozen=True)
class Exit:
    exit_code: int | None
    """The command's status (128+N when killed by signal N); None when nobody knows."""


@dataclass
class _Watch:
    pid: int
    pidfd: int
    exit_file: str
    is_child: bool


def process_create_time(pid: int, live_only: bool = False) -> float | None:
    """The process's start time; None if it is gone (or, with live_only, a zombie)."""
    try:
        proc = psutil.Process(pid)
        if live_only and proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def read_exit_file(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def find_wrapper(exit_file: str) -> int | None:
    """The pid of a wrapper started for this attempt, found by its unique argv."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if len(cmdline) >= 6 and cmdline[0] == "/bin/sh" and cmdline[5] == exit_file:
            return proc.pid
    return None


class LocalExecutor:
    def __init__(self, on_exit: Callable[[int, Exit], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_exit = on_exit
        self._watches: dict[int, _Watch] = {}

    def spawn(
        self, task_id: int, command: str, cwd: str, env: dict[str, str],
        stdout: str, stderr: str, exit_file: str, cgroup_procs: str = "",
    ) -> Started:
        """Start the task; raises OSError (e.g. unwritable log directory) without side effects."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        pid = os.posix_spawn(
            "/bin/sh",
            ["/bin/sh", "-c", WRAPPER, "meow-task", command, exit_file, cwd, cgroup_procs],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, stdout, flags, 0o600),
                (os.POSIX_SPAWN_OPEN, 2, stderr, flags, 0o600),
            ],
            setsid=True,
            setsigmask=[],
            setsigdef=_DEFAULT_SIGNALS,
        )
        self._watch(task_id, pid, exit_file, is_child=True)
        return Started(pid, process_create_time(pid) or 0.0)

    def adopt(self, task_id: int, pid: int, create_time: float | None, exit_file: str) -> bool:
        """Watch a task started by an earlier daemon. False when that process is gone
        (or the pid now belongs to another process)."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        actual = process_create_time(pid, live_only=True)
        if actual is None or (create_time is not None and abs(actual - create_time) > 0.05):
            os.close(pidfd)
            return False
        self._register(task_id, _Watch(pid, pidfd, exit_file, is_child=False))
        return True

    def _watch(self, task_id: int, pid: int, exit_file: str, is_child: bool) -> None:
        self._register(task_id, _Watch(pid, os.pidfd_open(pid), exit_file, is_child))

    def _register(self, task_id: int, watch: _Watch) -> None:
        self._watches[task_id] = watch
        self._loop.add_reader(watch.pidfd, self._exited, task_id)

    def _exited(self, task_id: int) -> None:
        watch = self._watches.pop(task_id, None)
        if watch is None:
            return
        self._loop.remove_reader(watch.pidfd)
        os.close(watch.pidfd)
        code: int | None = None
        if watch.is_child:
            try:
                _, status = os.waitpid(watch.pid, 0)
                code = os.waitstatus_to_exitcode(status)
                if code < 0:
                    code = 128 - code
            except ChildProcessError:
                code = None
        if code is None or not watch.is_child:
            recorded = read_exit_file(watch.exit_file)
            code = recorded if recorded is not None else code
        self._on_exit(task_id, Exit(code))

    def signal(self, task_id: int, sig: int) -> bool:
        """Signal the task's whole process group."""
        watch = self._watches.get(task_id)
        if watch is None:
            return False
        try:
            os.killpg(watch.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def is_watching(self, task_id: int) -> bool:
        return task_id in self._watches

    def detach_all(self) -> None:
        """Stop watching (daemon shutdown); the processes keep running."""
        for watch in self._watches.values():
            self._loop.remove_reader(watch.pidfd)
            os.close(watch.pidfd)
        self._watches.clear()
