"""One cgroup v2 per task attempt, when the hierarchy is there and writable.

A cgroup holds every process a task starts, whatever they do (new sessions, double
forks, re-parenting), so `meow kill` can stop them all at once (cgroup.kill) and the
task's membership is exact. meowd creates `meow.tasks/` under its own cgroup and one
child per attempt. The task starts inside it (spawn.py, glibc >= 2.39) or its wrapper
moves itself in before it runs anything, so no process escapes between spawn and
placement. Without a writable cgroup v2, meow falls
back to the process group plus tracked descendants (see tree.py).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger("meowd.cgroups")


def _mount() -> Path | None:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split()[0] == "cgroup2":
                    return Path(left.split()[4])
    except (OSError, IndexError):
        pass
    return None


def _own_cgroup(pid: int | str = "self") -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


class Cgroups:
    def __init__(self, base: Path, mount: Path | None = None) -> None:
        self.base = base
        self.mount = mount

    @classmethod
    def detect(cls, namespace: str = "") -> Cgroups | None:
        """`meow.tasks/<namespace>/` under meowd's own cgroup, if cgroup v2 lets us create
        it. The namespace (one per state directory) keeps two daemons that share a cgroup
        (two users' homes, parallel test runs) from ever touching each other's tasks."""
        if os.environ.get("MEOW_NO_CGROUPS"):
            return None
        mount, own = _mount(), _own_cgroup()
        if mount is None or own is None:
            return None
        base = mount / own.lstrip("/") / "meow.tasks"
        if namespace:
            base = base / namespace
        try:
            base.mkdir(parents=True, exist_ok=True)
            probe = base / f"probe-{os.getpid()}"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
        except OSError as exc:
            log.info("cgroup v2 not writable (%s): process groups and tracked descendants "
                     "it is", exc)
            return None
        log.info("tasks get their own cgroups under %s", base)
        return cls(base, mount)

    def create(self, name: str) -> Path | None:
        path = self.base / name
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            log.warning("cannot create cgroup %s: %s", path, exc)
            return None
        return path


    def of_attempt(self, pid: int, name: str) -> Path | None:
        """The cgroup `name` (as `create` made it) that process `pid` runs in, read from
        /proc: after a restart, where an adopted attempt's tree lives. None when the
        process is not in a cgroup of this meow home with that name (say it had not
        joined it yet when the daemon died), so nothing else is ever signalled."""
        own = _own_cgroup(pid) if self.mount is not None else None
        if own is None or self.mount is None:
            return None
        path = self.mount / own.lstrip("/")
        ok = (path.name == name and path.parent.name == self.base.name
              and path.parent.parent.name == "meow.tasks")
        return path if ok else None


def _read(path: str) -> bytes | None:
    """A cgroup file, without pathlib's overhead: read at every task's end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def members(path: Path) -> list[int]:
    text = _read(f"{path}/cgroup.procs")
    try:
        return [int(pid) for pid in text.split()] if text else []
    except ValueError:
        return []


def signal_all(path: Path, sig: int) -> bool:
    """Signal every process in the cgroup (SIGKILL via cgroup.kill when the kernel has
    it). False when the cgroup is gone."""
    if not path.is_dir():
        return False
    if sig == signal.SIGKILL:
        try:
            (path / "cgroup.kill").write_text("1")
            return True
        except OSError:
            pass
    for pid in members(path):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            continue
    return True


def remove(path: Path) -> None:
    """Delete an attempt's cgroup once empty (a cgroup with live processes stays)."""
    try:
        path.rmdir()
    except OSError:
        pass


def oom_killed(path: Path) -> bool:
    """Did the kernel's OOM killer kill a process of this cgroup?"""
    for line in (_read(f"{path}/memory.events") or b"").splitlines():
        key, _, value = line.partition(b" ")
        if key == b"oom_kill":
            return value.strip().isdigit() and int(value) > 0
    return False
