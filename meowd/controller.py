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
import secrets
import signal
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meowd.config import Settings
from meowd.core.errors import BadRequest, Conflict, NotFound, Refused
from meowd.core.models import ACTIVE, Task, TaskStatus
from meowd.core.paths import Paths
from meowd.core.protocol import BulkResult, CreateRequest, Selector
from meowd.core.scheduler import Candidate, DeviceView, Usage, account, can_ever_fit, place
from meowd.core.units import format_mib
from meowd.devices import NO_GPU_HINT, DeviceBackend, DeviceInfo
from meowd.executors.local import Exit, LocalExecutor, find_wrapper, read_exit_file
from meowd.store import Attempt, Store

log = logging.getLogger("meowd.controller")
_NAME_CHARS = string.ascii_lowercase + string.digits


@dataclass
class _Running:
    """Runtime-only facts about a running task (never persisted)."""

    attempt: Attempt
    intent: str | None = None  # "kill" | "cancel" | "remove": what the user asked for
    escalation: asyncio.TimerHandle | None = None


@dataclass
class _Snapshot:
    devices: list[DeviceInfo] = field(default_factory=list)
    usage: dict[int, dict[int, int]] = field(default_factory=dict)
    """device index -> {task id: MiB actually used by that task's processes}."""


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
        self.running: dict[int, _Running] = {}
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

    def _index(self, task: Task) -> None:
        self.tasks[task.id] = task
        self.by_name[task.fullname] = task.id
        if task.status is TaskStatus.WAITING:
            self.waiting[task.id] = task

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
                self.running[task.id] = _Running(attempt)
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
        self.store.update_task(task, str(status), reason)
        if status not in ACTIVE:
            self._release_waiters(task.id)

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

    def _on_exit(self, task_id: int, exit: Exit) -> None:
        task = self.tasks.get(task_id)
        run = self.running.get(task_id)
        if task is None or run is None:
            return
        code = exit.exit_code
        if run.intent == "remove":
            self.running.pop(task_id)
            self._remove(task)
        elif run.intent == "kill":
            self._finish(task, TaskStatus.KILLED, code, "killed by the user")
        elif run.intent == "cancel":
            self._finish(task, TaskStatus.CANCELLED, code, "cancelled while running")
        elif code == 0:
            self._finish(task, TaskStatus.DONE, 0, None)
        elif code is None:
            self._finish(task, TaskStatus.LOST, None, _vanished(run.attempt.pid))
        else:
            self._finish(task, TaskStatus.FAILED, code, f"exit code {code}")
        log.info("task %d %s ended: %s (exit %s)", task.id, task.fullname, task.status, code)
        self._wake.set()
        self._poll_now.set()

    def _remove(self, task: Task) -> None:
        self.tasks.pop(task.id, None)
        self.by_name.pop(task.fullname, None)
        self.waiting.pop(task.id, None)
        self.store.delete_tasks([task.id])
        self._release_waiters(task.id)

    def _release_waiters(self, task_id: int) -> None:
        """Answer every `meow wait`/`watch` on this task: it left waiting/running or is gone."""
        for future in self._waiters.pop(task_id, []):
            if not future.done():
                future.set_result(None)

    # -- create --------------------------------------------------------------------------
    def _unique_name(self, taken: set[str]) -> str:
        while True:
            name = "".join(secrets.choice(_NAME_CHARS) for _ in range(5))
            if not name.isdigit() and name not in self.by_name and name not in taken:
                return name

    def create(self, request: CreateRequest) -> list[dict[str, Any]]:
        totals = [d.total_mib for d in self._snapshot.devices]
        taken: set[str] = set()
        for spec in request.tasks:
            if spec.name is not None:
                if spec.name in self.by_name:
                    existing = self.tasks[self.by_name[spec.name]]
                    raise Conflict(
                        f"a task named {spec.name!r} exists (id {existing.id}, "
                        f"{existing.status}); remove it or choose another name with -n"
                    )
                if spec.name in taken:
                    raise Conflict(f"the name {spec.name!r} is given twice in this request")
                taken.add(spec.name)
            if spec.min_devices > 0:
                if self.backend is None:
                    raise Refused(NO_GPU_HINT)
                if not can_ever_fit(spec.min_devices, spec.requires_memory_per_device, totals):
                    largest = format_mib(max(totals)) if totals else "0"
                    raise Refused(
                        f"task needs {spec.min_devices} GPU(s) with "
                        f"{format_mib(spec.requires_memory_per_device)} each, but this machine "
                        f"has {len(totals)} GPU(s) of at most {largest}"
                    )
        now = time.time()
        new: list[Task] = []
        with self.store.transaction():
            digest = self.store.put_env(request.env)
            for spec in request.tasks:
                name = spec.name or self._unique_name(taken)
                taken.add(name)
                task = Task(
                    id=self._next_id, name=name, fullname=name, command=spec.command,
                    cwd=request.cwd, env_hash=digest, priority=spec.priority,
                    min_devices=spec.min_devices,
                    requires_memory_per_device=spec.requires_memory_per_device, created_at=now,
                )
                self._next_id += 1
                new.append(task)
            self.store.insert_tasks(new)
        for task in new:
            self._index(task)
        self._wake.set()
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
        self.executor.signal(task.id, sig)
        if sig != signal.SIGKILL and run.escalation is None:
            run.escalation = asyncio.get_running_loop().call_later(
                self.settings.kill_grace, self.executor.signal, task.id, signal.SIGKILL
            )

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
        return {
            **task.to_wire(),
            "task_home": str(self.task_home(task)),
            "env_keys": sorted(self.store.get_env(task.env_hash)),
            "pid": run.attempt.pid if run else None,
            "attempt_list": [a.to_wire() for a in attempts],
            "events": [
                {"ts": ts, "kind": kind, "detail": detail}
                for ts, kind, detail in self.store.events(task.id)
            ],
        }

    def task_home(self, task: Task) -> Path:
        return self.paths.tasks / str(task.id)

    # -- devices -------------------------------------------------------------------------
    async def poll_devices(self) -> None:
        if self.backend is None:
            return
        devices = await asyncio.to_thread(self.backend.snapshot)
        sessions = {run.attempt.pid: task_id for task_id, run in self.running.items()}
        usage: dict[int, dict[int, int]] = {}
        for device in devices:
            per_task: dict[int, int] = {}
            for proc in device.processes:
                try:
                    owner = sessions.get(os.getsid(proc.pid))
                except OSError:
                    owner = None
                if owner is not None:
                    per_task[owner] = per_task.get(owner, 0) + proc.used_mib
            usage[device.index] = per_task
        changed = devices != self._snapshot.devices
        self._snapshot = _Snapshot(devices, usage)
        if changed:
            self._wake.set()

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
    def schedule(self) -> int:
        """One placement pass; returns how many tasks were started."""
        if not self.waiting:
            return 0
        views = [DeviceView(u.index, u.total, u.free, len(u.task_ids)) for u in self.accounting()]
        cpu_busy = sum(1 for i in self.running if self.tasks[i].min_devices == 0)
        candidates = [
            Candidate(t.id, t.priority, t.created_at, t.min_devices, t.requires_memory_per_device)
            for t in self.waiting.values()
        ]
        placements = place(candidates, views, self.settings.cpu_slots - cpu_busy)
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
                task.ended_at = task.exit_code = None
                home = self.task_home(task)
                attempt = Attempt(
                    task_id=task.id, n=task.attempts, pid=None, create_time=None,
                    devices=task.devices, started_at=task.started_at,
                    stdout=str(home / f"attempt-{task.attempts}.stdout.log"),
                    stderr=str(home / f"attempt-{task.attempts}.stderr.log"),
                    exit_file=str(home / f"attempt-{task.attempts}.exit"),
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
        }
        return self.executor.spawn(
            task.id, task.command, task.cwd, env, attempt.stdout, attempt.stderr, attempt.exit_file
        )

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
            try:
                await asyncio.wait_for(self._poll_now.wait(), self.settings.poll_interval)
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
