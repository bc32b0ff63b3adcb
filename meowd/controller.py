"""The controller: the only writer of task state. It applies requests, asks the pure
scheduler for placements, hands them to the executor and records what happens.

Every change is committed to the store before the request that caused it is answered.
Scheduling is event-driven: submit, exit, resume and device polls set `_wake`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from meowd.config import RESTART_SETTINGS, Settings, check_setting, save_setting
from meowd.core.errors import BadRequest, Conflict, NotFound, Refused
from meowd.core.models import ACTIVE, RETRY_EXIT_CODE, TERMINAL, Task, TaskStatus, TaskUsage
from meowd.core.naming import assign_fullnames
from meowd.core.paths import Paths
from meowd.core.protocol import BulkResult, CreateRequest, Selector, TaskSpec
from meowd.core.scheduler import (
    Candidate,
    DeviceView,
    Hold,
    Policy,
    Usage,
    WaitQueue,
    account,
    can_ever_fit,
    place,
)
from meowd.core.units import format_mib
from meowd.core.usage import attribute, over_memory, record
from meowd.devices import NO_GPU_HINT, DeviceBackend, DeviceInfo
from meowd.executors import cgroups
from meowd.executors.cgroups import Cgroups
from meowd.executors.local import (
    Exit,
    LocalExecutor,
    find_wrapper,
    process_create_time,
    read_exit_file,
)
from meowd.executors.tree import TreeSample, TreeTracker
from meowd.secrets import LOG_FILTER, redact, secret_values
from meowd.store import Attempt, Store

log = logging.getLogger("meowd.controller")


@dataclass
class _Running:
    """Runtime-only facts about a running task (never persisted)."""

    attempt: Attempt
    cgroup: Path | None = None
    intent: str | None = None  # "kill" | "cancel" | "remove" | "enforce": why we stop it
    escalation: asyncio.TimerHandle | None = None


@dataclass
class _Snapshot:
    devices: list[DeviceInfo] = field(default_factory=list)
    usage: dict[int, dict[int, int]] = field(default_factory=dict)
    """device index -> {task id: MiB actually used by that task's processes}."""


_DEPENDENCY_REASONS = ("waiting for", "blocked:")
"""How `_sync_queue` words a reason that comes from a predecessor (it clears its own)."""


def _attempt_stem(home: Path, n: int) -> Path:
    """`<task home>/attempt-N`: every file of one attempt is this plus an extension."""
    return home / f"attempt-{n}"


def _vanished(pid: int | None) -> str:
    return (f"process {pid} vanished while no meowd was its parent and left no exit code "
            "(killed by a signal?)")


class Controller:
    def __init__(
        self, paths: Paths, settings: Settings, store: Store, backend: DeviceBackend | None
    ) -> None:
        self.paths = paths
        self.settings = settings
        self.store = store
        self.backend = backend
        self.tasks: dict[int, Task] = {}
        self.by_name: dict[str, int] = {}
        self.waiting: dict[int, Task] = {}
        """Every waiting task; `queue` holds those of them whose predecessors are done."""
        self.queue = WaitQueue()
        self.successors: dict[int, set[int]] = {}
        self.hold: Hold | None = None
        self.running: dict[int, _Running] = {}
        self.tree = TreeTracker()
        self._secrets: dict[str, set[str]] = {}
        """env hash -> its secret values (environments never change once stored)."""
        self.cgroups = Cgroups.detect()
        self.version = 0
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_idle: Callable[[], None] | None = None
        """Called when the last task ends and `shutdown_on_complete` is set."""
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._snapshot = _Snapshot()
        self._wake = asyncio.Event()
        self._poll_now = asyncio.Event()
        self._next_id = 1
        self.executor = LocalExecutor(self._on_exit)

    # -- startup ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.poll_devices()
        self._restore()

    def secrets_of(self, task: Task) -> set[str]:
        found = self._secrets.get(task.env_hash)
        if found is None:
            found = self._secrets[task.env_hash] = secret_values(
                self.store.get_env(task.env_hash))
        return found

    def public(self, task: Task) -> dict[str, Any]:
        """A task as clients see it: secret values masked wherever they appear."""
        data = task.to_wire()
        data["why"] = self.why_waiting(task)
        data["held_for"] = self.hold is not None and self.hold.task_id == task.id
        hidden = self.secrets_of(task)
        if hidden:
            for key in ("command", "reason", "warning"):
                data[key] = redact(data[key], hidden)
        return data

    def _index(self, task: Task) -> None:
        LOG_FILTER.secrets |= self.secrets_of(task)
        self.tasks[task.id] = task
        self.by_name[task.fullname] = task.id
        for dep in task.depends_on:
            self.successors.setdefault(dep, set()).add(task.id)
        if task.status is TaskStatus.WAITING:
            self.waiting[task.id] = task
            self._sync_queue(task)

    # -- change notification (meow top) --------------------------------------------------
    def bump(self) -> None:
        """Something a subscriber shows changed: wake every `changed()` waiter."""
        self.version += 1
        if not self._changed.done():
            self._changed.set_result(None)
        self._changed = asyncio.get_running_loop().create_future()

    async def changed(self) -> None:
        await asyncio.shield(self._changed)

    def state(self) -> dict[str, Any]:
        """Everything `meow top` shows, in one message."""
        return {
            "version": self.version,
            "tasks": [{**self.public(t), **self._log_paths(t)} for t in self.tasks.values()],
            "devices": self.devices(),
            "cpu_slots": self.settings.cpu_slots,
        }

    def _log_paths(self, task: Task) -> dict[str, str | None]:
        """The latest attempt's logs (the naming `schedule` uses), for `meow top`."""
        if not task.attempts:
            return {"stdout": None, "stderr": None}
        base = _attempt_stem(self.task_home(task), task.attempts)
        return {"stdout": f"{base}.stdout.log", "stderr": f"{base}.stderr.log"}

    def why_waiting(self, task: Task) -> str | None:
        """Why a waiting task has not started, in words (None if it is about to)."""
        if task.status is not TaskStatus.WAITING:
            return None
        if task.reason and task.reason.startswith(_DEPENDENCY_REASONS):
            return task.reason
        if self.hold is not None and self.hold.task_id == task.id:
            gpus = ",".join(map(str, self.hold.devices))
            return f"GPUs {gpus} held for it until they have room"
        if task.min_devices == 0:
            return f"all {self.settings.cpu_slots} CPU slots busy"
        why = (f"no {task.min_devices} GPU(s) with "
               f"{format_mib(task.requires_memory_per_device)} free")
        if self.hold is not None and self.hold.task_id in self.tasks:
            held = self.tasks[self.hold.task_id]
            why += f"; GPUs {','.join(map(str, self.hold.devices))} held for {held.fullname}"
        return why

    # -- dependencies --------------------------------------------------------------------
    def _blocker(self, task: Task) -> Task | None:
        """The first predecessor that is not done yet (removed ones count as done)."""
        for dep in task.depends_on:
            pred = self.tasks.get(dep)
            if pred is not None and pred.status is not TaskStatus.DONE:
                return pred
        return None

    def _sync_queue(self, task: Task) -> None:
        """Put a waiting task in the placement queue once nothing it depends on is pending."""
        if task.status is not TaskStatus.WAITING:
            self.queue.discard(task.id)
            return
        blocker = self._blocker(task)
        if blocker is None:
            if task.reason and task.reason.startswith(_DEPENDENCY_REASONS):
                task.reason = None
            self.queue.add(Candidate(task.id, task.priority, task.created_at, task.min_devices,
                                     task.requires_memory_per_device))
            return
        self.queue.discard(task.id)
        if blocker.status in ACTIVE:
            task.reason = f"waiting for {blocker.fullname}"
        else:
            task.reason = f"blocked: {blocker.fullname} {blocker.status}"

    def _predecessor_ended(self, task: Task) -> None:
        """Re-check the successors of a task that left waiting/running."""
        for succ_id in sorted(self.successors.get(task.id, ())):
            succ = self.tasks.get(succ_id)
            if succ is None or succ.status is not TaskStatus.WAITING:
                continue
            if (task.status in {TaskStatus.FAILED, TaskStatus.KILLED, TaskStatus.LOST}
                    and self.settings.cascade_cancel_on_failure):
                self._set_status(succ, TaskStatus.CANCELLED,
                                 f"cancelled: {task.fullname} {task.status}")
                continue
            before = succ.reason
            self._sync_queue(succ)
            if succ.reason != before:
                self.store.update_task(succ)

    def _restore(self) -> None:
        """Load every task; re-adopt running ones, record those that ended meanwhile."""
        started = time.monotonic()
        for task in self.store.load_tasks():
            self._index(task)
        self._next_id = self.store.next_task_id()
        adopted = 0
        for task in [t for t in self.tasks.values() if t.status is TaskStatus.RUNNING]:
            attempt = self.store.last_attempt(task.id)
            if attempt is None:
                self._finish(task, TaskStatus.LOST, None, "no attempt record; cannot re-adopt")
                continue
            pid = attempt.pid or find_wrapper(attempt.exit_file)
            if pid and self.executor.adopt(task.id, pid, attempt.create_time, attempt.exit_file):
                attempt.pid = pid
                self.running[task.id] = _Running(attempt, self._attempt_cgroup(attempt))
                adopted += 1
                continue
            code = read_exit_file(attempt.exit_file)
            if code is not None:
                self.running[task.id] = _Running(attempt)
                self._on_exit(task.id, Exit(code))
            elif attempt.pid is None:
                # The daemon stopped between recording the attempt and spawning it.
                with self.store.transaction():
                    task.attempts -= 1
                    self._set_status(task, TaskStatus.WAITING, "start interrupted; requeued")
            else:
                self._finish(task, TaskStatus.LOST, None, _vanished(attempt.pid))
        if self.tasks:
            log.info(
                "restored %d tasks (%d waiting, %d running re-adopted) in %.1f ms",
                len(self.tasks), len(self.waiting), adopted, (time.monotonic() - started) * 1e3,
            )
        self._wake.set()

    # -- state changes -------------------------------------------------------------------
    def _set_status(self, task: Task, status: TaskStatus, reason: str | None = None) -> None:
        task.transition(status, reason)
        if status is TaskStatus.WAITING:
            self.waiting[task.id] = task
        else:
            self.waiting.pop(task.id, None)
        self._sync_queue(task)
        self.store.update_task(task, str(status), reason)
        self.bump()
        if status not in ACTIVE:
            self._release_waiters(task.id)
        if status is not TaskStatus.RUNNING:
            self._predecessor_ended(task)

    def _finish(self, task: Task, status: TaskStatus, code: int | None, reason: str | None) -> None:
        with self.store.transaction():
            run = self.running.pop(task.id, None)
            if run is not None:
                if run.escalation:
                    run.escalation.cancel()
                run.attempt.ended_at = time.time()
                run.attempt.exit_code = code
                run.attempt.reason = reason
                self.store.insert_attempt(run.attempt)
            task.exit_code = code
            task.ended_at = time.time()
            if status is TaskStatus.WAITING:
                task.devices, task.reserved_mib = [], []
            self._set_status(task, status, reason)

    def _read_note(self, attempt: Attempt) -> str | None:
        """A task (its hook runner, say) may leave one line for the user: why it failed."""
        try:
            with open(attempt.file("note"), errors="replace") as f:
                text = f.read(2000)
        except OSError:
            return None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return "; ".join(lines)[:500] or None

    def _on_exit(self, task_id: int, exit: Exit) -> None:
        task = self.tasks.get(task_id)
        run = self.running.get(task_id)
        if task is None or run is None:
            return
        code = exit.exit_code
        note = self._read_note(run.attempt)
        if note and code == 0:
            task.warning = note
        if run.intent == "remove":
            self.running.pop(task_id)
            self._remove(task)
        elif run.intent == "kill":
            self._finish(task, TaskStatus.KILLED, code, "killed by the user")
        elif run.intent == "cancel":
            self._finish(task, TaskStatus.CANCELLED, code, "cancelled while running")
        elif run.intent == "enforce":
            self._finish(task, TaskStatus.FAILED, code, task.warning or "over its GPU memory")
        elif code == RETRY_EXIT_CODE and task.attempts < self.settings.max_attempts:
            self._finish(task, TaskStatus.WAITING, code,
                         f"requeued: exit code {RETRY_EXIT_CODE} (attempt {task.attempts} of "
                         f"at most {self.settings.max_attempts})")
        elif code == RETRY_EXIT_CODE:
            self._finish(task, TaskStatus.FAILED, code,
                         f"exit code {RETRY_EXIT_CODE} again after {task.attempts} attempts "
                         "(max_attempts); not requeued")
        elif code == 0:
            self._finish(task, TaskStatus.DONE, 0, None)
        elif code is None:
            self._finish(task, TaskStatus.LOST, None, _vanished(run.attempt.pid))
        else:
            self._finish(task, TaskStatus.FAILED, code,
                         f"{note} (exit code {code})" if note else f"exit code {code}")
        if run.intent is not None:
            self._kill_leftovers(task_id, run.cgroup)
        if run.cgroup is not None:
            cgroups.remove(run.cgroup)
        self.tree.forget(task_id)
        log.info("task %d %s ended: %s (exit %s)", task.id, task.fullname, task.status, code)
        if self.settings.shutdown_on_complete and not self.waiting and not self.running \
                and self.on_idle is not None:
            log.info("nothing left to run and shutdown_on_complete is set: exiting")
            asyncio.get_running_loop().call_soon(self.on_idle)
        self._wake.set()
        self._poll_now.set()

    def _remove(self, task: Task) -> None:
        self.tasks.pop(task.id, None)
        self.by_name.pop(task.fullname, None)
        self.waiting.pop(task.id, None)
        self.queue.discard(task.id)
        self.store.delete_tasks([task.id])
        self._release_waiters(task.id)
        self.bump()
        for succ_id in self.successors.pop(task.id, ()):
            succ = self.tasks.get(succ_id)
            if succ is not None:
                self._sync_queue(succ)
        for dep in task.depends_on:
            self.successors.get(dep, set()).discard(task.id)

    def _release_waiters(self, task_id: int) -> None:
        """Answer every `meow wait`/`watch` on this task: it left waiting/running or is gone."""
        for future in self._waiters.pop(task_id, []):
            if not future.done():
                future.set_result(None)

    # -- create --------------------------------------------------------------------------
    def _usable_totals(self) -> list[int]:
        visible = self.settings.visible_devices
        return [d.total_mib for d in self._snapshot.devices
                if visible is None or d.index in visible]

    def _check_fits(self, spec: Any) -> None:
        if spec.min_devices == 0:
            return
        if self.backend is None:
            raise Refused(NO_GPU_HINT)
        totals = self._usable_totals()
        if not can_ever_fit(spec.min_devices, spec.requires_memory_per_device, totals):
            largest = format_mib(max(totals)) if totals else "0"
            raise Refused(
                f"task needs {spec.min_devices} GPU(s) with "
                f"{format_mib(spec.requires_memory_per_device)} each, but meow may use "
                f"{len(totals)} GPU(s) of at most {largest} here"
            )

    def _fullnames(self, request: CreateRequest) -> tuple[list[str], list[Task]]:
        """Each new task's fullname under `override_exist_tasks`, and the tasks it replaces."""
        def describe(fullname: str) -> str:
            task = self.tasks[self.by_name[fullname]]
            return f"id {task.id}, {task.status}"

        names, replaced = assign_fullnames(request.tasks, self.by_name,
                                           self.settings.override_exist_tasks, describe)
        return names, [self.tasks[self.by_name[name]] for name in replaced]

    def create(self, request: CreateRequest) -> list[dict[str, Any]]:
        checked: set[tuple[int, Any, bool]] = set()
        for spec in request.tasks:  # a 10,000-task sweep usually has one shape
            memory = spec.requires_memory_per_device
            shape = (spec.min_devices, memory, isinstance(memory, float))  # 1 MiB != 100%
            if shape not in checked:
                self._check_fits(spec)
                checked.add(shape)
        names, replaced = self._fullnames(request)
        now = time.time()
        new: list[Task] = []
        for spec, fullname in zip(request.tasks, names, strict=True):
            depends_on = []
            for dep in spec.after:
                if isinstance(dep, int):
                    depends_on.append(self._next_id + dep)
                elif dep in self.by_name:
                    depends_on.append(self.by_name[dep])
                else:
                    raise NotFound(f"after: no task {dep!r}")
            new.append(Task(
                id=self._next_id + len(new), name=fullname.rpartition("/")[2],
                fullname=fullname, command=spec.command, cwd=request.cwd, env_hash="",
                priority=spec.priority, min_devices=spec.min_devices,
                requires_memory_per_device=spec.requires_memory_per_device, created_at=now,
                depends_on=depends_on, enforce_memory=spec.enforce_memory,
            ))
        with self.store.transaction():
            for old in replaced:
                if old.id in self.running:
                    self._terminate(old, "remove", signal.SIGKILL)
                    self.by_name.pop(old.fullname, None)
                    old.fullname = f"{old.fullname}~{old.id}"  # frees the UNIQUE fullname
                    self.store.update_task(old, "replaced")
                else:
                    self._remove(old)
            digest = self.store.put_env(request.env)
            for task, spec in zip(new, request.tasks, strict=True):
                task.env_hash = (self.store.put_env({**request.env, **spec.env}) if spec.env
                                 else digest)
            self.store.insert_tasks(new)
        self._next_id += len(new)
        for task in new:
            self._index(task)
        self._wake.set()
        self.bump()
        return [{"id": t.id, "name": t.name, "fullname": t.fullname} for t in new]

    # -- selection and bulk commands -----------------------------------------------------
    def select(self, selector: Selector) -> list[Task]:
        if selector.regex:
            if selector.target is None:
                return list(self.tasks.values())
            try:
                pattern = re.compile(selector.target)
            except re.error as exc:
                raise BadRequest(f"bad regular expression {selector.target!r}: {exc}") from None
            return [t for t in self.tasks.values() if pattern.fullmatch(t.fullname)]
        return self.find(selector.target or "", many=True)

    def find(self, target: str, many: bool = False) -> list[Task]:
        """Exact fullname, else every task of a group prefix (`g` -> `g/...`), else id."""
        if target in self.by_name:
            return [self.tasks[self.by_name[target]]]
        prefix = target.rstrip("/") + "/"
        group = [t for t in self.tasks.values() if t.fullname.startswith(prefix)] if many else []
        if group:
            return group
        if target.isdigit() and int(target) in self.tasks:
            return [self.tasks[int(target)]]
        return []

    def get(self, target: str) -> Task:
        found = self.find(target)
        if not found:
            raise NotFound(f"no task {target!r}")
        return found[0]

    def _bulk(self, selector: Selector, act: Any) -> BulkResult:
        result = BulkResult()
        tasks = self.select(selector)
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

    def _terminate(self, task: Task, intent: str, sig: int) -> None:
        run = self.running[task.id]
        run.intent = intent
        self._signal_tree(task.id, sig)
        if sig != signal.SIGKILL and run.escalation is None:
            run.escalation = asyncio.get_running_loop().call_later(
                self.settings.kill_grace, self._signal_tree, task.id, signal.SIGKILL
            )

    def _signal_tree(self, task_id: int, sig: int) -> None:
        """The task's process group, and every tracked descendant that left the group
        (a new session, a double fork): `meow kill` leaves nothing behind."""
        self.executor.signal(task_id, sig)
        run = self.running.get(task_id)
        if run is None or run.attempt.pid is None:
            return
        if run.cgroup is not None:
            cgroups.signal_all(run.cgroup, sig)
        group = run.attempt.pid
        home = str(self.task_home(self.tasks[task_id]))
        self.tree.sample({task_id: group}, {home: task_id}, prune=False)  # forked just now
        self._signal_tracked(task_id, sig, outside=group)

    def _kill_leftovers(self, task_id: int, group: Path | None) -> None:
        """After a stopped task's wrapper exited: SIGKILL descendants that outlived it."""
        if group is not None:
            cgroups.signal_all(group, signal.SIGKILL)
        self._signal_tracked(task_id, signal.SIGKILL)

    def _signal_tracked(self, task_id: int, sig: int, outside: int | None = None) -> None:
        """Signal the task's tracked processes that are still the same processes (start
        time checked); with `outside`, only those that left that process group."""
        for pid, started in self.tree.known(task_id).items():
            try:
                if outside is not None and os.getpgid(pid) == outside:
                    continue  # killpg reached it already
                if process_create_time(pid, live_only=True) == started:
                    os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                continue

    def kill(self, selector: Selector, force: bool) -> BulkResult:
        def act(task: Task) -> bool | str:
            if task.id not in self.running:
                return f"not running ({task.status})"
            self._terminate(task, "kill", signal.SIGKILL if force else signal.SIGTERM)
            return True
        return self._bulk(selector, act)

    def cancel(self, selector: Selector) -> BulkResult:
        def act(task: Task) -> bool | str:
            if task.status is TaskStatus.WAITING:
                self._set_status(task, TaskStatus.CANCELLED, "cancelled by the user")
                return True
            if task.id in self.running:
                self._terminate(task, "cancel", signal.SIGTERM)
                return True
            return f"not waiting or running ({task.status})"
        return self._bulk(selector, act)

    def resume(self, selector: Selector) -> BulkResult:
        def act(task: Task) -> bool | str:
            if task.status is not TaskStatus.CANCELLED:
                return f"not cancelled ({task.status})"
            task.devices, task.reserved_mib, task.exit_code = [], [], None
            self._set_status(task, TaskStatus.WAITING, "resumed")
            return True
        return self._bulk(selector, act)

    def remove(self, selector: Selector) -> BulkResult:
        def act(task: Task) -> bool | str:
            if task.id in self.running:
                self._terminate(task, "remove", signal.SIGKILL)
            else:
                self._remove(task)
            return True
        return self._bulk(selector, act)

    # -- set and clean -------------------------------------------------------------------
    def set_task(self, task: Task, attr: str, value: Any) -> dict[str, Any]:
        """Change a task at run time (`meow set NAME.ATTR VALUE`), already type-checked."""
        if attr in ("requires_memory_per_device", "min_devices") and \
                task.status is TaskStatus.RUNNING:
            raise Conflict(f"{task.fullname} is running on GPUs {task.devices}; its {attr} "
                           "can change while it waits (cancel it, set, resume)")
        if attr == "name":
            group = task.group
            fullname = f"{group}/{value}" if group else value
            if fullname != task.fullname and fullname in self.by_name:
                raise Conflict(f"a task named {fullname!r} exists")
            self.by_name.pop(task.fullname, None)
            task.name, task.fullname = value, fullname
            self.by_name[fullname] = task.id
        else:
            if attr != "priority":
                spec = TaskSpec(task.command, min_devices=task.min_devices,
                                requires_memory_per_device=task.requires_memory_per_device)
                spec = replace(spec, **{attr: value})
                self._check_fits(spec)
            setattr(task, attr, value)
        with self.store.transaction():
            self.store.update_task(task, "set", f"{attr}={value!r}")
        self._sync_queue(task)
        self._wake.set()
        self.bump()
        return task.to_wire()

    def set_setting(self, key: str, value: Any) -> dict[str, Any]:
        value = check_setting(key, value)
        setattr(self.settings, key, value)
        path = save_setting(self.paths, key, value)
        self._wake.set()
        return {"key": key, "value": value, "config": str(path),
                "restart_needed": key in RESTART_SETTINGS}

    def clean(self, before: float | None, after: float | None, everything: bool) -> list[str]:
        """Forget finished tasks that ended in the window and delete their logs."""
        def awaited(task: Task) -> bool:  # a waiting successor still needs its outcome
            return any(self.tasks[s].status is TaskStatus.WAITING
                       for s in self.successors.get(task.id, ()) if s in self.tasks)

        chosen = [
            t for t in self.tasks.values()
            if t.status in TERMINAL and t.id not in self.running and not awaited(t) and (
                everything or (
                t.ended_at is not None
                and (before is None or t.ended_at < before)
                and (after is None or t.ended_at > after)))
        ]
        with self.store.transaction():
            for task in chosen:
                self._remove(task)
        for task in chosen:
            shutil.rmtree(self.task_home(task), ignore_errors=True)
        return [t.fullname for t in chosen]

    async def wait(self, task: Task) -> None:
        if task.status in ACTIVE:
            future = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(task.id, []).append(future)
            await future

    def show(self, task: Task) -> dict[str, Any]:
        attempts = self.store.attempts(task.id)
        run = self.running.get(task.id)
        if run is not None and attempts:
            attempts[-1] = run.attempt
        hidden = self.secrets_of(task)
        return {
            **self.public(task),
            "task_home": str(self.task_home(task)),
            "env_keys": sorted(self.store.get_env(task.env_hash)),
            "pid": run.attempt.pid if run else None,
            "depends_on_names": [self.tasks[d].fullname for d in task.depends_on
                                 if d in self.tasks],
            "hold_devices": list(self.hold.devices) if self.hold and
            self.hold.task_id == task.id else [],
            "attempt_list": [{**a.to_wire(), "reason": redact(a.reason, hidden)}
                             for a in attempts],
            "events": [
                {"ts": ts, "kind": kind, "detail": redact(detail, hidden)}
                for ts, kind, detail in self.store.events(task.id)
            ],
        }

    def task_home(self, task: Task) -> Path:
        return self.paths.tasks / str(task.id)

    # -- devices -------------------------------------------------------------------------
    async def poll_devices(self) -> None:
        """Read the GPUs and every running task's process tree; attribute GPU memory to
        tasks through their trees (children, grandchildren, re-parented workers)."""
        roots = {task_id: run.attempt.pid for task_id, run in self.running.items()
                 if run.attempt.pid is not None}
        homes = {str(self.task_home(self.tasks[task_id])): task_id for task_id in roots}
        members = {task_id: cgroups.members(run.cgroup) for task_id, run in self.running.items()
                   if run.cgroup is not None}
        backend = self.backend

        def read() -> tuple[list[DeviceInfo], dict[int, TreeSample]]:
            # Trees first: a GPU process started between the two reads is then in them.
            trees = self.tree.sample(roots, homes, members=members)
            return (backend.snapshot() if backend else []), trees

        devices, trees = await asyncio.to_thread(read)
        usage = attribute(((d.index, ((p.pid, p.used_mib) for p in d.processes))
                           for d in devices), self.tree.owner_of)
        changed = devices != self._snapshot.devices
        self._snapshot = _Snapshot(devices, usage)
        peaks_moved = self._record_usage(trees, usage)
        if changed:
            self._wake.set()
        if changed or peaks_moved:
            self.bump()  # memory bars and usage move on screen (runtimes tick client-side)

    def _record_usage(self, trees: dict[int, TreeSample],
                      usage: dict[int, dict[int, int]]) -> bool:
        """Live and peak usage per running task; warn (or stop) a task over its memory.
        True when a peak or a warning changed."""
        dirty: dict[int, Task] = {}
        for task_id, sample in trees.items():
            task = self.tasks.get(task_id)
            if task is None or task_id not in self.running:
                continue
            gpu = {i: per[task_id] for i, per in usage.items() if task_id in per}
            if record(task.usage, sample.rss_mib, sample.cpu_seconds, gpu):
                dirty[task_id] = task
            over = over_memory(task)
            if over and task.warning != over:
                task.warning = over
                self.store.event(task.id, "over_memory", over)
                dirty[task_id] = task
                log.warning("task %d %s: %s", task.id, task.fullname, over)
                if task.enforce_memory and self.running[task_id].intent is None:
                    task.warning = over + "; stopped (--enforce-memory)"
                    self._terminate(task, "enforce", signal.SIGTERM)
        if dirty:
            with self.store.transaction():
                for task in dirty.values():
                    self.store.update_task(task)
        return bool(dirty)

    def accounting(self) -> list[Usage]:
        result = []
        for device in self._snapshot.devices:
            reservations = {
                task_id: self.tasks[task_id].reserved_mib[i]
                for task_id in self.running
                for i, index in enumerate(self.tasks[task_id].devices)
                if index == device.index
            }
            result.append(account(device.index, device.total_mib, device.used_mib,
                                  self._snapshot.usage.get(device.index, {}), reservations))
        return result

    def devices(self) -> dict[str, Any]:
        names = {d.index: d for d in self._snapshot.devices}
        return {
            "backend": self.backend.name if self.backend else None,
            "hint": None if self.backend else NO_GPU_HINT,
            "devices": [
                {
                    "index": u.index, "name": names[u.index].name, "total_mib": u.total,
                    "used_by_meow_mib": u.used_by_meow, "used_by_others_mib": u.used_by_others,
                    "reserved_mib": u.reserved, "free_mib": u.free,
                    "utilization": names[u.index].utilization,
                    "tasks": [self.tasks[i].fullname for i in u.task_ids if i in self.tasks],
                }
                for u in self.accounting()
            ],
        }

    # -- scheduling ----------------------------------------------------------------------
    def policy(self) -> Policy:
        s = self.settings
        return Policy(starvation_guard=s.starvation_guard, reserve_after=s.reserve_after,
                      fit=s.placement, head_of_line=s.head_of_line)  # type: ignore[arg-type]

    def schedule(self) -> int:
        """One placement pass; returns how many tasks were started."""
        if not self.queue:
            self.hold = None
            return 0
        views = [DeviceView(u.index, u.total, u.free, len(u.task_ids), u.used_by_others)
                 for u in self.accounting()]
        cpu_busy = sum(1 for i in self.running if self.tasks[i].min_devices == 0)
        visible = self.settings.visible_devices
        plan = place(self.queue, views, self.settings.cpu_slots - cpu_busy, self.policy(),
                     now=time.time(), visible=None if visible is None else frozenset(visible))
        if plan.hold != self.hold:
            if plan.hold is not None:
                held = self.tasks[plan.hold.task_id]
                log.info("holding GPUs %s for task %d %s", plan.hold.devices, held.id,
                         held.fullname)
            self.bump()
        self.hold = plan.hold
        placements = plan.placements
        if not placements:
            return 0
        started: list[tuple[Task, Attempt]] = []
        # Phase 1: commit the intent. A crash after this and before the spawn is seen on
        # restart (no pid, no wrapper process) and requeued, so nothing runs twice.
        with self.store.transaction():
            for placement in placements:
                task = self.tasks[placement.task_id]
                task.devices = list(placement.devices)
                task.reserved_mib = list(placement.reserved_mib)
                task.attempts += 1
                task.started_at = time.time()
                task.ended_at = task.exit_code = task.warning = None
                task.usage = TaskUsage()  # per attempt
                stem = _attempt_stem(self.task_home(task), task.attempts)
                attempt = Attempt(
                    task_id=task.id, n=task.attempts, pid=None, create_time=None,
                    devices=task.devices, started_at=task.started_at,
                    stdout=f"{stem}.stdout.log", stderr=f"{stem}.stderr.log",
                    exit_file=f"{stem}.exit",
                )
                self.store.insert_attempt(attempt)
                self._set_status(task, TaskStatus.RUNNING, None)
                self.running[task.id] = _Running(attempt)
                started.append((task, attempt))
        # Phase 2: spawn, then record the pids.
        failed: list[tuple[Task, str]] = []
        with self.store.transaction():
            for task, attempt in started:
                try:
                    proc = self._spawn(task, attempt)
                except OSError as exc:
                    failed.append((task, f"cannot start: {exc}"))
                    continue
                attempt.pid, attempt.create_time = proc.pid, proc.create_time
                self.store.insert_attempt(attempt)
        for task, reason in failed:
            log.warning("task %d %s: %s", task.id, task.fullname, reason)
            self._finish(task, TaskStatus.FAILED, None, reason)
        return len(started) - len(failed)

    def _spawn(self, task: Task, attempt: Attempt):  # -> Started
        home = self.task_home(task)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not os.path.isdir(task.cwd):
            raise OSError(f"working directory {task.cwd} does not exist")
        visible = ",".join(map(str, task.devices))
        env = {
            **self.store.get_env(task.env_hash),
            "CUDA_VISIBLE_DEVICES": visible,
            "NVIDIA_VISIBLE_DEVICES": visible if visible else "void",
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "MEOW_TASK_HOME": str(home),
            "CATTINO_TASK_HOME": str(home),
            "MEOW_TASK_ID": str(task.id),
            "MEOW_TASK_NAME": task.fullname,
            "MEOW_ATTEMPT": str(attempt.n),
            "MEOW_NOTE_FILE": attempt.file("note"),
        }
        procs = ""
        if self.cgroups is not None:
            group = self.cgroups.create(f"task-{task.id}-{attempt.n}")
            if group is not None:
                Path(attempt.file("cgroup")).write_text(str(group))
                self.running[task.id].cgroup = group
                procs = str(group / "cgroup.procs")
        return self.executor.spawn(
            task.id, task.command, task.cwd, env, attempt.stdout, attempt.stderr,
            attempt.exit_file, procs,
        )

    def _attempt_cgroup(self, attempt: Attempt) -> Path | None:
        """The cgroup an attempt runs in, recorded at spawn (read back after a restart)."""
        try:
            path = Path(Path(attempt.file("cgroup")).read_text().strip())
        except OSError:
            return None
        return path if path.is_dir() else None

    async def run(self) -> None:
        """The scheduling loop and the device poller, until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._schedule_loop())
            group.create_task(self._poll_loop())

    async def _schedule_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self.schedule()
            except Exception:
                log.exception("scheduling pass failed; will retry on the next event")

    async def _poll_loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11, wait_for drops a cancellation that
            # arrives as the event fires (a task's exit sets both), and the daemon hung.
            try:
                async with asyncio.timeout(self.settings.poll_interval):
                    await self._poll_now.wait()
            except TimeoutError:
                pass
            self._poll_now.clear()
            try:
                await self.poll_devices()
            except Exception:
                log.exception("device poll failed")

    # -- shutdown ------------------------------------------------------------------------
    async def stop(self, kill_tasks: bool) -> None:
        if kill_tasks and self.running:
            for task_id in list(self.running):
                self._terminate(self.tasks[task_id], "kill", signal.SIGTERM)
            deadline = time.monotonic() + self.settings.kill_grace + 5
            while self.running and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self.executor.detach_all()
        for run in self.running.values():
            if run.escalation:
                run.escalation.cancel()
