"""Each running task's process tree: who belongs to it, and what the tree uses.

A task is its wrapper process and every descendant. Descendants are *tracked*: a pid
seen once in a task's tree stays the task's (checked by start time, so a reused pid is
never mistaken) even after it re-parents itself away, e.g. a worker that calls setsid()
and double-forks. A process that escaped before any sample saw it is still found: each
new process outside every tree is checked once for the MEOW_TASK_HOME it inherited.
That set serves three purposes: GPU memory attribution (NVML reports bare pids),
resource usage (RSS, CPU time) and clean kills.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psutil

_MIB = 1024 * 1024


@dataclass
class TreeSample:
    pids: dict[int, float] = field(default_factory=dict)
    """pid -> start time of every live process of the task."""
    rss_mib: int = 0
    cpu_seconds: float = 0.0
    """User + system time of the live tree plus what its reaped children used."""


class TreeTracker:
    """Remembers every task's processes between samples. Not thread-safe; one owner."""

    def __init__(self) -> None:
        self._known: dict[int, dict[int, float]] = {}
        self._owner: dict[int, int] = {}
        self._homes: dict[tuple[int, float], str | None] = {}
        """(pid, start time) -> the MEOW_TASK_HOME in its environment, read once."""

    def forget(self, task_id: int) -> None:
        self._known.pop(task_id, None)

    def known(self, task_id: int) -> dict[int, float]:
        return dict(self._known.get(task_id, {}))

    def sample(self, roots: dict[int, int], homes: dict[str, int] | None = None,
               prune: bool = True, members: dict[int, list[int]] | None = None,
               ) -> dict[int, TreeSample]:
        """roots: task id -> wrapper pid. One pass over the process table for all tasks.
        With `prune`, tasks not in `roots` are forgotten (they ended).

        Runs in a worker thread: it replaces dicts rather than mutating them, so the
        loop thread can read `known()`/`owner_of()` meanwhile."""
        children: dict[int, list[int]] = {}
        started: dict[int, float] = {}
        for proc in psutil.process_iter(["ppid", "create_time"]):
            info = proc.info
            if info.get("create_time") is None:
                continue
            started[proc.pid] = info["create_time"]
            children.setdefault(info.get("ppid") or 0, []).append(proc.pid)
        escaped = self._escaped(started, homes or {}, roots)
        samples: dict[int, TreeSample] = {}
        known_now = {} if prune else dict(self._known)
        for task_id, root in roots.items():
            known = self._known.get(task_id, {})
            stack = [root, *escaped.get(task_id, ()), *(members or {}).get(task_id, ())]
            stack += [pid for pid, t in known.items() if started.get(pid) == t]
            tree: dict[int, float] = {}
            while stack:
                pid = stack.pop()
                if pid in tree or pid not in started:
                    continue
                tree[pid] = started[pid]
                stack.extend(children.get(pid, ()))
            known_now[task_id] = tree
            samples[task_id] = _measure(tree)
        self._known = known_now
        self._owner = {pid: task_id for task_id, pids in known_now.items() for pid in pids}
        return samples

    def _escaped(self, started: dict[int, float], homes: dict[str, int],
                 roots: dict[int, int]) -> dict[int, list[int]]:
        """Processes carrying a running task's MEOW_TASK_HOME that no tree holds."""
        in_trees = {pid for pids in self._known.values() for pid in pids}
        found: dict[int, list[int]] = {}
        seen: dict[tuple[int, float], str | None] = {}
        for pid, t in started.items():
            key = (pid, t)
            home = self._homes.get(key, "?")
            if home == "?":
                home = None
                if homes and pid not in in_trees and pid not in roots.values():
                    try:
                        home = psutil.Process(pid).environ().get("MEOW_TASK_HOME")
                    except (psutil.Error, OSError):
                        home = None
            seen[key] = home
            if home is not None and home in homes:
                found.setdefault(homes[home], []).append(pid)
        self._homes = seen
        return found

    def owner_of(self, pid: int) -> int | None:
        """The task whose tree held this pid at the last sample."""
        return self._owner.get(pid)


def _measure(tree: dict[int, float]) -> TreeSample:
    sample = TreeSample(pids=tree)
    rss = 0
    for pid in tree:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                rss += proc.memory_info().rss
                times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        sample.cpu_seconds += times.user + times.system + times.children_user \
            + times.children_system
    sample.rss_mib = rss // _MIB
    return sample
