"""The local executor: attempts as process trees on this machine.

Each attempt runs as `/bin/sh -c WRAPPER` in its own session (its pgid is its pid, so a
signal to -pid reaches the whole group) and, where cgroup v2 is writable, in its own
cgroup: spawned straight into it where glibc can (spawn.py), else joined by the wrapper
before it runs anything. The wrapper writes the command's
exit status to the attempt's exit file, so a daemon that was not the task's parent (it
restarted meanwhile) still learns the real exit code. Exits are noticed through a pidfd
registered with the event loop: no thread per task, no polling.

When the main process ends, whatever it left in its cgroup (or, without cgroups, in its
process group and tracked tree) is stopped, SIGTERM then SIGKILL after `kill_grace`, as
systemd's KillMode=control-group does; the exit is reported only once the tree is empty,
so the task's GPUs are never handed on while its leftovers still hold them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import signal
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from meowd.executors import cgroups, spawn
from meowd.executors.base import Exit as Exit
from meowd.executors.base import ExitCallback, Handle, Launch, StartError
from meowd.executors.cgroups import Cgroups

log = logging.getLogger("meowd.executor")

# $1 command, $2 exit file, $3 working directory, $4 cgroup.procs to join ("" for none:
# no cgroups, or spawned straight into its cgroup, see spawn.py),
# $5 the umask the task runs with (the user's: meowd itself runs with 077).
# The traps are handlers, not "ignore", so the command gets default dispositions at exec.
# The wrapper joins its cgroup before it starts anything, so nothing escapes it.
# The command runs in a subshell (a fork of the wrapper, traps reset, no positional
# parameters), not in `/bin/sh -c "$1"`: that saves an exec of the shell, 0.7 ms of every
# start and of every slot's turn in a drain (benchmarks/drain_floor.py). In a subshell
# `$$` and `$PPID` are the wrapper's and `$0` is "meow-task", so a command that names
# any of them (`kill $$`) gets its own shell as before.
WRAPPER = (
    "trap : HUP INT TERM\n"
    '[ -z "$4" ] || { echo $$ > "$4"; } 2>/dev/null || :\n'
    'umask "$5"\n'
    'cd -- "$3" || exit 127\n'
    'case $1 in\n'
    "*'$$'*|*'${$}'*|*PPID*|*'$0'*|*'${0'*) /bin/sh -c \"$1\" ;;\n"
    '*) ( trap - HUP INT TERM; eval "shift $#; $1" ) ;;\n'
    'esac\n'
    "rc=$?\n"
    'umask 077\n'  # the exit file is meow's state: private, like the rest
    'echo "$rc" > "$2"\n'
    'exit "$rc"\n'
)
_DEFAULT_SIGNALS = [signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM,
                    signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD]
_NO_DIRECT_SPAWN = {errno.EBADF, errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EACCES,
                    errno.EOPNOTSUPP, errno.EBUSY}
"""Errors of a spawn into a cgroup that mean it cannot work here (see `_spawn`)."""
_DRAIN_TICK = 0.05
_task_umask = 0o022


def set_task_umask(mask: int) -> None:
    """The umask of the shell that started meowd: tasks create files as the user expects,
    while meowd's own state stays private."""
    global _task_umask
    _task_umask = mask


@dataclass
class _Watch:
    pid: int
    pidfd: int
    exit_file: str
    is_child: bool
    cgroup: Path | None
    code: int | None = None
    leftovers: set[int] = field(default_factory=set)
    draining: asyncio.TimerHandle | None = None
    drain_until: float = 0.0
    killed: bool = False
    """SIGKILL was asked for: leftovers get no grace."""
    signalled: bool = False
    """meow stopped it: what is still dying then is no leftover of the task's own."""


_TICKS = os.sysconf("SC_CLK_TCK")
_BOOT_TIME = psutil.boot_time()


def process_create_time(pid: int, live_only: bool = False) -> float | None:
    """The process's start time (as psutil computes it: boot time + start ticks); None
    if it is gone (or, with live_only, a zombie). One read of /proc/PID/stat: this runs
    for every start and every tracked process signalled, so psutil's overhead showed."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    if live_only and fields[0] == b"Z":
        return None
    return _BOOT_TIME + int(fields[19]) / _TICKS


def read_exit_file(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def find_wrapper(exit_file: str) -> int | None:
    """The pid of a wrapper started for this attempt, found by its unique argv
    (a scan of the process table: only at startup, for attempts with no recorded pid).
    Every fork of the wrapper that has not exec'd (the subshell the command runs in, a
    `( ... ) &` of the command's) has the same argv: the wrapper is the one that leads
    its session (it was spawned with setsid). An orphaned fork whose wrapper has ended
    is no wrapper: the exit file says how the attempt ended."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if len(cmdline) >= 6 and cmdline[0] == "/bin/sh" and cmdline[5] == exit_file:
            try:
                if os.getsid(proc.pid) == proc.pid:
                    return proc.pid
            except OSError:
                continue
    return None


def cgroup_name(task_id: int, exit_file: str) -> str:
    """An attempt's cgroup: `task-<id>-<attempt>` (the attempt from `attempt-N.exit`)."""
    return f"task-{task_id}-{Path(exit_file).stem.removeprefix('attempt-')}"


def _exited(pidfd: int) -> bool:
    """Has the process behind this pidfd ended? (A pidfd polls readable once it has.)"""
    return bool(select.select([pidfd], [], [], 0)[0])


class LocalExecutor:
    name = "local"

    def __init__(
        self, on_exit: ExitCallback, *, cgroups: Cgroups | None = None,
        tracked: Callable[[int], dict[int, float]] = lambda task_id: {},
        kill_grace: Callable[[], float] = lambda: 10.0,
        kill_leftovers: Callable[[], bool] = lambda: True,
        batch: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_exit = on_exit
        self._cgroups = cgroups
        self._direct = spawn.DirectSpawn.load() if cgroups is not None else None
        """glibc's spawn straight into a cgroup (None: the wrapper joins its cgroup)."""
        self._tracked = tracked
        """task id -> {pid: start time} of its processes at the last usage sample."""
        self._kill_grace = kill_grace
        self._kill_leftovers = kill_leftovers
        self._watches: dict[int, _Watch] = {}
        self._batch = batch
        """Around the exits reported together (the store's transaction: one commit)."""
        self._ended: list[tuple[int, Exit]] = []

    # -- start and adopt -----------------------------------------------------------------
    def start(self, launch: Launch) -> Handle:
        """Start the attempt; raises StartError without leaving anything behind."""
        return self._watch_spawned(launch, *self._spawn(launch))

    async def start_async(self, launch: Launch) -> Handle:
        """`start` with its blocking part in a worker thread: posix_spawn returns only
        once the child has exec'd, and a cgroup's mkdir is slow, which held the loop for
        milliseconds per task (every other exit, request and start waited)."""
        spawned = await self._loop.run_in_executor(None, self._spawn, launch)
        return self._watch_spawned(launch, *spawned)

    def _spawn(self, launch: Launch) -> tuple[int, float, Path | None]:
        """The blocking part of a start (thread-safe: of the executor's state it only
        drops `_direct` when that fails): the attempt's directory and cgroup, the spawn.
        (pid, start time, cgroup)."""
        try:
            os.makedirs(os.path.dirname(launch.exit_file), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StartError(f"cannot create {os.path.dirname(launch.exit_file)}: "
                             f"{exc.strerror}") from None
        group = None
        if self._cgroups is not None:
            group = self._cgroups.create(cgroup_name(launch.task_id, launch.exit_file))
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        files = [(0, "/dev/null", os.O_RDONLY, 0), (1, launch.stdout, flags, 0o600),
                 (2, launch.stderr, flags, 0o600)]
        pid = None
        direct, refused = self._direct, None
        if group is not None and direct is not None:
            try:  # born in its cgroup: the wrapper has nothing to join
                pid = direct.spawn("/bin/sh", self._argv(launch, ""), launch.env, files,
                                   _DEFAULT_SIGNALS, str(group))
            except ValueError as exc:  # NUL or '=' slipped through
                cgroups.remove(group)
                raise StartError(str(exc)) from None
            except OSError as exc:  # this start joins its cgroup instead (below)
                refused = exc
        if pid is None:
            try:
                pid = os.posix_spawn(
                    "/bin/sh",
                    self._argv(launch, str(group / "cgroup.procs") if group else ""),
                    launch.env,
                    file_actions=[(os.POSIX_SPAWN_OPEN, *f) for f in files],
                    setsid=True,
                    setsigmask=[],
                    setsigdef=_DEFAULT_SIGNALS,
                )
            except (OSError, ValueError) as exc:  # ValueError: NUL or '=' slipped through
                if group is not None:
                    cgroups.remove(group)
                raise StartError(str(exc) or type(exc).__name__) from None
            if refused is not None and refused.errno in _NO_DIRECT_SPAWN:
                # The joining start worked where the direct one was refused for a reason
                # that will not pass (a seccomp filter refusing clone3, a cgroup that is no
                # leaf): join from now on. Passing trouble (EAGAIN, ENOMEM, a full disk)
                # costs that one start its speed, not every later one.
                log.warning("cannot spawn tasks straight into their cgroups (%s): they join "
                            "them instead, which costs an RCU wait per start", refused)
                self._direct = None
        return pid, process_create_time(pid) or 0.0, group

    @staticmethod
    def _argv(launch: Launch, join: str) -> list[str]:
        """The wrapper's argv (`join`: the cgroup.procs it moves itself to, or "")."""
        return ["/bin/sh", "-c", WRAPPER, "meow-task", launch.command, launch.exit_file,
                launch.cwd, join, f"{_task_umask:03o}"]

    def _watch_spawned(self, launch: Launch, pid: int, started: float,
                       group: Path | None) -> Handle:
        self._register(launch.task_id, _Watch(pid, os.pidfd_open(pid), launch.exit_file,
                                              True, group))
        return Handle(pid=pid, create_time=started)

    def adopt(self, task_id: int, handle: Handle, exit_file: str) -> bool:
        """Watch an attempt started by an earlier daemon. False when that process is gone
        (or the pid now belongs to another process)."""
        pid = handle.pid or find_wrapper(exit_file)
        if not pid:
            return False
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        actual = process_create_time(pid, live_only=True)
        expected = handle.create_time if handle.pid else None
        if actual is None or (expected is not None and abs(actual - expected) > 0.05):
            os.close(pidfd)
            return False
        group = None
        if self._cgroups is not None:
            group = self._cgroups.of_attempt(pid, cgroup_name(task_id, exit_file))
        self._register(task_id, _Watch(pid, pidfd, exit_file, False, group))
        return True

    def pid(self, task_id: int) -> int | None:
        watch = self._watches.get(task_id)
        return watch.pid if watch else None

    def cgroup(self, task_id: int) -> Path | None:
        watch = self._watches.get(task_id)
        return watch.cgroup if watch else None

    def _register(self, task_id: int, watch: _Watch) -> None:
        self._watches[task_id] = watch
        self._loop.add_reader(watch.pidfd, self._main_exited, task_id)

    # -- exits ---------------------------------------------------------------------------
    def _main_exited(self, task_id: int) -> None:
        watch = self._watches.get(task_id)
        if watch is None:
            return
        self._loop.remove_reader(watch.pidfd)
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
        watch.code = code
        left = self._leftovers(task_id, watch)
        if not left:
            self._report(task_id, watch, 0)
            return
        if not self._kill_leftovers():
            log.warning("task %d left %d processes running (kill_leftovers is off)",
                        task_id, len(left))
            self._report(task_id, watch, len(left), stopped=False)
            return
        watch.leftovers = left
        watch.drain_until = self._loop.time() + (0 if watch.killed else self._kill_grace())
        self._stop_leftovers(task_id, watch, signal.SIGKILL if watch.killed else signal.SIGTERM)
        watch.draining = self._loop.call_later(_DRAIN_TICK, self._drain, task_id)

    def _drain(self, task_id: int) -> None:
        watch = self._watches.get(task_id)
        if watch is None:
            return
        if not self._leftovers(task_id, watch):
            self._report(task_id, watch, len(watch.leftovers))
            return
        if self._loop.time() >= watch.drain_until and not watch.killed:
            watch.killed = True
            self._stop_leftovers(task_id, watch, signal.SIGKILL)
        elif watch.killed:
            self._stop_leftovers(task_id, watch, signal.SIGKILL)
        watch.draining = self._loop.call_later(_DRAIN_TICK, self._drain, task_id)

    def _leftovers(self, task_id: int, watch: _Watch) -> set[int]:
        """Live processes of the attempt once its main process is gone."""
        found: set[int] = set()
        if watch.cgroup is not None:
            found.update(cgroups.members(watch.cgroup))
        for pid, started in self._tracked(task_id).items():
            if pid != watch.pid and process_create_time(pid, live_only=True) == started:
                found.add(pid)
        try:
            os.killpg(watch.pid, 0)  # the session's processes still hold the group id
            found.add(-watch.pid)
        except (ProcessLookupError, PermissionError):
            pass
        return found

    def _stop_leftovers(self, task_id: int, watch: _Watch, sig: int) -> None:
        if watch.cgroup is not None:
            cgroups.signal_all(watch.cgroup, sig)
        if -watch.pid in watch.leftovers:  # the group outlived its leader (see _leftovers)
            try:
                os.killpg(watch.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        self._signal_tracked(task_id, watch, sig)

    def _report(self, task_id: int, watch: _Watch, leftovers: int, stopped: bool = True) -> None:
        self._watches.pop(task_id, None)
        os.close(watch.pidfd)
        host_oom = False
        if watch.cgroup is not None:
            host_oom = cgroups.oom_killed(watch.cgroup)
            if stopped:  # (an rmdir right after the last exit can take a millisecond)
                self._loop.run_in_executor(None, cgroups.remove, watch.cgroup)
        if leftovers:
            leftovers = len([p for p in watch.leftovers if p > 0]) or leftovers
        if watch.signalled:  # its whole tree was being stopped: nothing was left behind
            leftovers = 0
        # Exits seen in one turn of the loop (pidfds that polled readable together) are
        # reported together, right after it: one commit for all of them.
        self._ended.append((task_id, Exit(watch.code, leftovers=leftovers, host_oom=host_oom)))
        if len(self._ended) == 1:
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        ended, self._ended = self._ended, []
        with self._batch():
            for task_id, exit in ended:
                try:
                    self._on_exit(task_id, exit)
                except Exception:  # one bad report must not drop the others' ends
                    log.exception("task %d: reporting its exit failed", task_id)

    # -- signals -------------------------------------------------------------------------
    def signal(self, task_id: int, sig: int) -> bool:
        """Signal the attempt's whole tree: its process group (only while the group's
        leader lives, checked through its pidfd, so a reused pid is never hit), its
        cgroup, and every tracked process that left the group. No process-table scan."""
        watch = self._watches.get(task_id)
        if watch is None:
            return False
        watch.signalled = True
        if sig == signal.SIGKILL:
            watch.killed = True
        if watch.code is not None:  # the main process ended; its leftovers are draining
            self._stop_leftovers(task_id, watch, sig)
            return True
        # An unreaped child still holds its pid; an adopted leader that exited may not.
        if watch.is_child or not _exited(watch.pidfd):
            try:
                os.killpg(watch.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if watch.cgroup is not None:
            cgroups.signal_all(watch.cgroup, sig)
        self._signal_tracked(task_id, watch, sig)
        return True

    def _signal_tracked(self, task_id: int, watch: _Watch, sig: int) -> None:
        """Tracked processes that left the group, still the same processes (start time)."""
        for pid, started in self._tracked(task_id).items():
            try:
                if pid == watch.pid or os.getpgid(pid) == watch.pid:
                    continue  # killpg reached it
                if process_create_time(pid, live_only=True) == started:
                    os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                continue

    # -- the rest of the interface -------------------------------------------------------
    def is_watching(self, task_id: int) -> bool:
        return task_id in self._watches

    def describe(self, task_id: int) -> dict[str, str]:
        return {}

    def roots(self) -> dict[int, tuple[int, Path | None]]:
        """task id -> (main pid, cgroup) of every attempt watched: what usage samples."""
        return {task_id: (w.pid, w.cgroup) for task_id, w in self._watches.items()}

    async def run(self) -> None:
        return None

    def detach_all(self) -> None:
        """Stop watching (daemon shutdown); the processes keep running."""
        if self._ended:
            self._deliver()
        for watch in self._watches.values():
            if watch.draining is not None:
                watch.draining.cancel()
            if watch.code is None:
                self._loop.remove_reader(watch.pidfd)
            os.close(watch.pidfd)
        self._watches.clear()
