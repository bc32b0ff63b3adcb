"""Sampling: GPU memory and every running task's tree (through the usage monitor, off the
loop), usage records and over-use warnings, the memory accounting placement relies on,
and retrying what a full disk could not store. A part of the controller (mixed into
`Controller`)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from meowd import attempt_files
from meowd.core.lifecycle import StopIntent
from meowd.core.models import NO_USAGE, Task, TaskUsage
from meowd.core.scheduler import Usage, account
from meowd.core.usage import over_memory, record
from meowd.executors.local import LocalExecutor

log = logging.getLogger("meowd.controller")

class Sampling:
    async def poll_devices(self) -> None:
        """Sample GPUs and running trees; record usage; retry what the disk refused."""
        local = self.executors.get("local")
        roots = local.roots() if isinstance(local, LocalExecutor) else {}
        homes = {str(self.task_home(self.index[t])): t for t in roots if t in self.index}
        changed, trees = await self.monitor.sample(roots, homes)
        moved = self._record_usage(trees)
        ledger, procs = self.ledger, self.monitor.gpu_processes()
        self._polls = getattr(self, "_polls", 0) + 1
        expire = self._polls % 10 == 0

        def foreign() -> list[Any]:  # a few small files: off the loop all the same
            if expire:
                ledger.expire()
            return ledger.others(procs)

        others = await asyncio.to_thread(foreign)
        if others != self.foreign or self.ledger_notes:
            # a claim that refused a placement may be gone before any poll saw it
            self.foreign = others
            changed = True
        if self.store.backlog and self.store.flush():
            self._after_disk_recovered()
        if changed:
            self._wake.set()
        if changed or moved:
            self.bump(*moved)  # memory bars and usage move (runtimes tick client-side)

    def _after_disk_recovered(self) -> None:
        log.warning("the state directory has room again: every change is stored")
        for task_id in self._lost_output:
            task = self.index.tasks.get(task_id)
            if task is not None and task.attempts:
                stem = self.attempt_stem(task, task.attempts)
                for ext in ("stdout.log", "stderr.log"):
                    attempt_files.append_marker(
                        f"{stem}.{ext}", "the disk was full during this attempt: "
                        "output may be missing above")
        self._lost_output.clear()
        self._wake.set()
        self.bump(everything=True)

    def _record_usage(self, trees: dict[int, Any]) -> list[int]:
        """Live and peak usage per running task; warn (or stop) a task over its memory.
        Returns the tasks whose peak or warning changed."""
        dirty: dict[int, Task] = {}
        usage = self.monitor.usage
        for task_id, sample in trees.items():
            task = self.index.tasks.get(task_id)
            run = self.running.get(task_id)
            if task is None or run is None:
                continue
            gpu = {i: per[task_id] for i, per in usage.items() if task_id in per}
            if task.usage is NO_USAGE:  # shared by every task that never ran: never written
                task.usage = TaskUsage()
            if record(task.usage, sample.rss_mib, sample.cpu_seconds, gpu):
                dirty[task_id] = task
            over = over_memory(task)
            if over and task.warning != over and not (task.warning or "").startswith(over):
                task.warning = over
                self.store.event(task.id, "over_memory", over)
                dirty[task_id] = task
                log.warning("task %d %s: %s", task.id, task.fullname, over)
                if task.enforce_memory and run.intent is None:
                    task.warning = over + "; stopped (--enforce-memory)"
                    self._terminate(task, StopIntent.ENFORCE, signal.SIGTERM)
        if dirty:
            with self.store.transaction():
                for task in dirty.values():
                    self.store.update_task(task)
        return list(dirty)

    def accounting(self) -> list[Usage]:
        reservations: dict[int, dict[int, int]] = {}
        for task_id in self.running:
            task = self.index[task_id]
            for index, mib in zip(task.devices, task.reserved_mib, strict=False):
                reservations.setdefault(index, {})[task_id] = mib
        return [account(d.index, d.total_mib, d.used_mib, self.monitor.usage.get(d.index, {}),
                        reservations.get(d.index, {}))
                for d in self.monitor.devices]
