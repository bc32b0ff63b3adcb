"""Usage monitoring: GPU memory from the device backend and every running attempt's
process tree, sampled together off the event loop by the one owner of the tracker.

Sampling scans the whole process table, so it never runs on the loop: a `meow kill`
answers at once and signals what the last sample knew (plus cgroups and process groups,
which need no scan); the next sample finds whatever forked since.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from meowd.core.usage import attribute
from meowd.devices import DeviceBackend, DeviceInfo
from meowd.executors import cgroups
from meowd.executors.tree import TreeSample, TreeTracker


class UsageMonitor:
    def __init__(self, backend: DeviceBackend | None) -> None:
        self.backend = backend
        self._tree = TreeTracker()
        self._lock = asyncio.Lock()
        self.devices: list[DeviceInfo] = []
        self.usage: dict[int, dict[int, int]] = {}
        """device index -> {task id: MiB actually used by that task's processes}."""

    def gpu_processes(self) -> dict[int, list[tuple[int, int]]]:
        """GPU index -> (pid, MiB) of each process on it, at the last sample."""
        return {d.index: [(p.pid, p.used_mib) for p in d.processes] for d in self.devices}

    def known(self, task_id: int) -> dict[int, float]:
        """The task's processes at the last sample: pid -> start time."""
        return self._tree.known(task_id)

    def forget(self, task_id: int) -> None:
        self._tree.forget(task_id)

    async def sample(self, roots: dict[int, tuple[int, Path | None]],
                     homes: dict[str, int]) -> tuple[bool, dict[int, TreeSample]]:
        """Read the GPUs and the trees of `roots` (task id -> main pid, cgroup); attribute
        GPU memory to tasks through their trees. Returns (devices changed, trees)."""
        backend = self.backend

        def read() -> tuple[list[DeviceInfo], dict[int, TreeSample]]:
            members = {task_id: cgroups.members(group) for task_id, (_, group) in roots.items()
                       if group is not None}
            # Trees first: a GPU process started between the two reads is then in them.
            trees = self._tree.sample({t: pid for t, (pid, _) in roots.items()}, homes,
                                      members=members)
            return (backend.snapshot() if backend else []), trees

        async with self._lock:  # one sampler at a time: the tracker has one owner
            devices, trees = await asyncio.to_thread(read)
        self.usage = attribute(((d.index, ((p.pid, p.used_mib) for p in d.processes))
                                for d in devices), self._tree.owner_of)
        changed = devices != self.devices
        self.devices = devices
        return changed, trees
