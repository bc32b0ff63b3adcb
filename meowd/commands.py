"""The user's commands on existing tasks: kill, cancel, resume, retry, remove, set, clean,
wait. A part of the controller (mixed into `Controller`): each command decides with the
pure index and lifecycle, records through the store, and acts through the executors."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from meowd.config import (
    RESTART_SETTINGS,
    check_setting,
    check_setting_on_machine,
    save_setting,
)
from meowd.core.errors import Conflict, Refused
from meowd.core.lifecycle import StopIntent
from meowd.core.models import ACTIVE, RETRYABLE, TERMINAL, Task, TaskStatus
from meowd.core.protocol import BulkResult, Selector, TaskSpec

log = logging.getLogger("meowd.controller")

class Commands:
    def find(self, target: str, many: bool = False) -> list[Task]:
        return self.index.find(target, many)

    def get(self, target: str) -> Task:
        return self.index.get(target)

    def _bulk(self, selector: Selector, act: Callable[[Task], bool | str]) -> BulkResult:
        result = BulkResult()
        tasks = self.index.select(selector.target, selector.regex)
        if not tasks and selector.target is not None:
            result.failure.append((selector.target, "no such task"))
        for task in tasks:
            try:
                outcome = act(task)
            except OSError as exc:
                result.failure.append((task.fullname, str(exc)))
                continue
            if outcome is True:
                result.success.append(task.fullname)
            else:
                result.no_op.append(f"{task.fullname}: {outcome}")
        self._wake.set()
        return result

    def _terminate(self, task: Task, intent: StopIntent, sig: int) -> bool:
        """Ask the executor to stop a running attempt; False when it had already ended
        (its own exit, not this intent, then decides its outcome)."""
        run = self.running[task.id]
        if run.starting:  # signalled once its job id is known (see _start_async)
            run.intent = run.intent or intent
            return True
        if not run.executor.signal(task.id, sig):
            return False
        if run.intent is None or intent is StopIntent.REMOVE:
            run.intent = intent
        if sig != signal.SIGKILL and run.escalation is None:
            run.escalation = asyncio.get_running_loop().call_later(
                self.settings.kill_grace, run.executor.signal, task.id, signal.SIGKILL)
        self._poll_now.set()  # the next sample finds what forked meanwhile
        return True

    def kill(self, selector: Selector, force: bool) -> BulkResult:
        def act(task: Task) -> bool | str:
            if task.id not in self.running:
                return f"not running ({task.status})"
            if not self._terminate(task, StopIntent.KILL,
                                   signal.SIGKILL if force else signal.SIGTERM):
                return "already ending by itself"
            return True
        return self._bulk(selector, act)

    def cancel(self, selector: Selector) -> BulkResult:
        def act(task: Task) -> bool | str:
            if task.status is TaskStatus.WAITING:
                self._set_status(task, TaskStatus.CANCELLED, "cancelled by the user")
                return True
            if task.id in self.running:
                return (self._terminate(task, StopIntent.CANCEL, signal.SIGTERM)
                        or "already ending by itself")
            return f"not waiting or running ({task.status})"
        return self._bulk(selector, act)

    def resume(self, selector: Selector) -> BulkResult:
        def act(task: Task) -> bool | str:
            if task.status is not TaskStatus.CANCELLED:  # the CLI points to `meow retry`
                return f"not cancelled ({task.status})"
            return self._requeue(task, "resumed")
        return self._bulk(selector, act)

    def retry(self, selector: Selector) -> BulkResult:
        """Run a failed, killed, timed-out or lost task again, as a new attempt."""
        def act(task: Task) -> bool | str:
            if task.status not in RETRYABLE:
                return f"not failed, killed, timed out or lost ({task.status})"
            return self._requeue(task, f"retry requested after {task.status}")
        return self._bulk(selector, act)

    def _requeue(self, task: Task, reason: str) -> bool:
        with self.store.transaction(critical=True):
            task.reset_for_queue()
            self._set_status(task, TaskStatus.WAITING, reason)
        return True

    def remove(self, selector: Selector) -> BulkResult:
        def act(task: Task) -> bool | str:
            if task.id in self.running:
                if not self._terminate(task, StopIntent.REMOVE, signal.SIGKILL):
                    self.running[task.id].intent = StopIntent.REMOVE  # gone once it ends
            else:
                self._remove(task)
            return True
        result = self._bulk(selector, act)
        self._rebuild_secret_filter()
        return result

    def set_task(self, task: Task, attr: str, value: Any) -> dict[str, Any]:
        """Change a task at run time (`meow set NAME.ATTR VALUE`), already type-checked."""
        if task.status not in ACTIVE and task.status is not TaskStatus.CANCELLED \
                and attr != "name":
            raise Conflict(f"{task.fullname} has ended ({task.status}); its {attr} matters no "
                           f"more (meow retry {task.fullname} runs it again)")
        if attr in ("requires_memory_per_device", "min_devices") and \
                task.status is TaskStatus.RUNNING:
            raise Conflict(f"{task.fullname} is running on GPUs {task.devices}; its {attr} "
                           "can change while it waits (cancel it, set, resume)")
        if attr == "name":
            fullname = f"{task.group}/{value}" if task.group else value
            if fullname != task.fullname and fullname in self.index.by_name:
                raise Conflict(f"a task named {fullname!r} exists")
            self.index.rename(task, fullname)
        else:
            if attr != "priority":
                spec = TaskSpec(task.command, min_devices=task.min_devices,
                                requires_memory_per_device=task.requires_memory_per_device)
                self._check_fits(replace(spec, **{attr: value}))
            setattr(task, attr, value)
        with self.store.transaction(critical=True):
            self.store.update_task(task, "set", f"{attr}={value!r}")
        self.index.requeue_candidate(task)
        self._wake.set()
        self.bump(task.id)
        return task.to_wire()

    def set_setting(self, key: str, value: Any) -> dict[str, Any]:
        value = check_setting(key, value)
        if key == "executor" and value not in self.executors:
            raise Refused(f"no {value} executor here: sbatch is not on meowd's PATH (run "
                          "meowd on a Slurm login node)")
        gpus = [d.index for d in self.monitor.devices] if self.backend else []
        warning = check_setting_on_machine(key, value, gpus)
        setattr(self.settings, key, value)
        path = save_setting(self.paths, key, value)
        self._wake.set()
        return {"key": key, "value": value, "config": str(path),
                "restart_needed": key in RESTART_SETTINGS, "warning": warning}

    def clean(self, before: float | None, after: float | None, everything: bool) -> list[str]:
        """Forget finished tasks that ended in the window, with their logs, events and
        environments; and the task-file snapshots no task runs any more."""
        chosen = [
            t for t in self.index
            if t.status in TERMINAL and t.id not in self.running
            and not self.index.awaited(t) and (everything or (
                t.ended_at is not None
                and (before is None or t.ended_at < before)
                and (after is None or t.ended_at > after)))
        ]
        with self.store.transaction(critical=True):
            for task in chosen:
                self._remove(task)
        for task in chosen:
            shutil.rmtree(self.task_home(task), ignore_errors=True)
        self.store.prune(before=time.time() - 86400 if not everything else time.time())
        self._prune_runs()
        self._rebuild_secret_filter()
        return [t.fullname for t in chosen]

    def _prune_runs(self) -> None:
        runs = self.paths.state / "runs"
        if not runs.is_dir():
            return
        commands = "\n".join(t.command for t in self.index)
        for run_dir in runs.iterdir():
            if str(run_dir) not in commands:
                shutil.rmtree(run_dir, ignore_errors=True)

    def _retain(self) -> None:
        """The `retention_days` setting: forget old finished tasks once an hour."""
        days = self.settings.retention_days
        if not days or time.monotonic() - self._last_prune < 3600:
            return
        self._last_prune = time.monotonic()
        removed = self.clean(time.time() - days * 86400, None, False)
        if removed:
            log.info("retention: forgot %d tasks that ended over %g days ago", len(removed), days)

    async def wait(self, task: Task) -> None:
        if task.status in ACTIVE:
            future = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(task.id, []).append(future)
            await future
