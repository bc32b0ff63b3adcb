"""The controller: the only writer of task state, and a coordinator of named parts.

A request or an event comes in; the pure parts decide (`core.index` keeps tasks and their
dependencies, `core.scheduler` places, `core.lifecycle` turns an ending into an outcome);
the store records the decision before anyone hears of it; an executor carries it out
(`executors.base.Executor`: the controller never knows which one runs a task); the usage
monitor samples GPUs and process trees off the loop.

Scheduling is event-driven: submit, exit, resume and device changes set `_wake`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shlex
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from meowd import attempt_files, views
from meowd.config import RESTART_SETTINGS, Settings, check_setting, save_setting
from meowd.core.errors import Conflict, NotFound, Refused
from meowd.core.index import FAILED_PREDECESSOR, TaskIndex
from meowd.core.lifecycle import (
    Ending,
    Outcome,
    Rules,
    StopIntent,
    decide,
    scaled_memory,
    stderr_says_gpu_oom,
)
from meowd.core.models import ACTIVE, RETRYABLE, TERMINAL, Task, TaskStatus
from meowd.core.naming import assign_fullnames
from meowd.core.paths import Paths
from meowd.core.protocol import BulkResult, CreateRequest, Selector, TaskSpec
from meowd.core.reasons import EndReason
from meowd.core.scheduler import DeviceView, Hold, Policy, Usage, account, can_ever_fit, place
from meowd.core.units import format_mib
from meowd.core.usage import over_memory, record
from meowd.devices import NO_GPU_HINT, DeviceBackend
from meowd.executors.base import Executor, ExitCallback, Handle, Launch
from meowd.executors.base import Exit as Exit
from meowd.executors.cgroups import Cgroups
from meowd.executors.local import LocalExecutor, read_exit_file
from meowd.executors.slurm import SlurmExecutor
from meowd.monitor import UsageMonitor
from meowd.secrets import LOG_FILTER, secret_values
from meowd.store import Attempt, Store

log = logging.getLogger("meowd.controller")

ExecutorFactory = Callable[[ExitCallback, "Controller"], dict[str, Executor]]


def default_executors(on_exit: ExitCallback, c: Controller) -> dict[str, Executor]:
    """The local executor, and Slurm's where `sbatch` is on the PATH."""
    found: dict[str, Executor] = {"local": LocalExecutor(
        on_exit, cgroups=Cgroups.detect(_namespace(c.paths)), tracked=c.monitor.known,
        kill_grace=lambda: c.settings.kill_grace,
        kill_leftovers=lambda: c.settings.kill_leftovers)}
    if shutil.which("sbatch"):
        s = c.settings
        found["slurm"] = SlurmExecutor(on_exit, partition=s.slurm_partition or None,
                                       account=s.slurm_account or None,
                                       extra=shlex.split(s.slurm_extra),
                                       poll_interval=s.slurm_poll_interval)
    return found


@dataclass
class _Running:
    """Runtime-only facts about a running attempt (never persisted)."""

    attempt: Attempt
    executor: Executor
    intent: StopIntent | None = None
    escalation: asyncio.TimerHandle | None = None
    time_up: asyncio.TimerHandle | None = None
    starting: bool = False
    """An asynchronous start (sbatch) is in flight: a stop waits for its job id."""

    def cancel_timers(self) -> None:
        for timer in (self.escalation, self.time_up):
            if timer is not None:
                timer.cancel()


class Controller:
    def __init__(self, paths: Paths, settings: Settings, store: Store,
                 backend: DeviceBackend | None, executors: ExecutorFactory = default_executors,
                 ) -> None:
        self.paths = paths
        self.settings = settings
        self.store = store
        self.backend = backend
        self.index = TaskIndex()
        self.monitor = UsageMonitor(backend)
        self.running: dict[int, _Running] = {}
        self.hold: Hold | None = None
        self._secrets: dict[str, set[str]] = {}
        """env hash -> its secret values (environments never change once stored)."""
        self.version = 0
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_idle: Callable[[], None] | None = None
        """Called when the last task ends and `shutdown_on_complete` is set."""
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._wake = asyncio.Event()
        self._poll_now = asyncio.Event()
        self._next_id = 1
        self._lost_output: set[int] = set()
        """Tasks whose attempt ran while the disk was full: their logs get a marker."""
        self._last_prune = 0.0
        self._jobs: set[asyncio.Task[None]] = set()
        self.executors = executors(self._on_exit, self)

    @property
    def tasks(self) -> dict[int, Task]:
        return self.index.tasks

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

    def _rebuild_secret_filter(self) -> None:
        """The log filter masks the secrets of tasks that exist, not of every task ever."""
        live = {t.env_hash for t in self.index}
        self._secrets = {h: s for h, s in self._secrets.items() if h in live}
        LOG_FILTER.secrets = set().union(*(self.secrets_of(t) for t in self.index))

    def public(self, task: Task) -> dict[str, Any]:
        return views.public(self, task)

    def state(self) -> dict[str, Any]:
        return views.state(self)

    def show(self, task: Task) -> dict[str, Any]:
        return views.show(self, task)

    def devices(self) -> dict[str, Any]:
        return views.devices(self)

    def describe(self, task: Task) -> dict[str, str]:
        run = self.running.get(task.id)
        return run.executor.describe(task.id) if run else {}

    def _restore(self) -> None:
        """Load every task; re-adopt running ones, record those that ended meanwhile."""
        started = time.monotonic()
        for task in self.store.load_tasks():
            self.index.add(task)
        self._rebuild_secret_filter()
        self._next_id = self.store.next_task_id()
        adopted = 0
        for task in [t for t in self.index if t.status is TaskStatus.RUNNING]:
            attempt = self.store.last_attempt(task.id)
            executor = self.executors.get(task.executor)
            if attempt is None or executor is None:
                why = "no attempt record" if attempt is None else f"no {task.executor} executor"
                self._finish_plain(task, TaskStatus.LOST, EndReason.LOST,
                                   f"{why}; cannot re-adopt")
                continue
            run = _Running(attempt, executor)
            handle = Handle(attempt.pid, attempt.create_time, attempt.job_id)
            if executor.adopt(task.id, handle, attempt.exit_file):
                attempt.pid = attempt.pid or getattr(executor, "pid", lambda _: None)(task.id)
                self.running[task.id] = run
                self._arm_deadline(task)
                adopted += 1
                continue
            code = read_exit_file(attempt.exit_file)
            if code is not None:
                self.running[task.id] = run
                self._on_exit(task.id, Exit(code))
            elif attempt.pid is None and attempt.job_id is None:
                # The daemon stopped between recording the attempt and starting it.
                with self.store.transaction():
                    task.attempts -= 1
                    task.reset_for_queue()
                    self._set_status(task, TaskStatus.WAITING, "start interrupted; requeued")
            else:
                self.running[task.id] = run
                self._on_exit(task.id, Exit(None, detail=_vanished(attempt.pid)))
        if len(self.index):
            log.info("restored %d tasks (%d waiting, %d running re-adopted) in %.1f ms",
                     len(self.index), len(self.index.waiting), adopted,
                     (time.monotonic() - started) * 1e3)
        self._wake.set()

    # -- change notification (meow top) ----------------------------------------------------
    def bump(self) -> None:
        """Something a subscriber shows changed: wake every `changed()` waiter."""
        self.version += 1
        if not self._changed.done():
            self._changed.set_result(None)
        self._changed = asyncio.get_running_loop().create_future()

    async def changed(self) -> None:
        await asyncio.shield(self._changed)

    # -- state changes ---------------------------------------------------------------------
    def _set_status(self, task: Task, status: TaskStatus, reason: str | None = None) -> None:
        task.transition(status, reason)
        self.index.status_changed(task)
        self.store.update_task(task, str(status), reason)
        self.bump()
        if status not in ACTIVE:
            self._release_waiters(task.id)
        if status is not TaskStatus.RUNNING:
            self._predecessor_ended(task)

    def _predecessor_ended(self, task: Task) -> None:
        """Re-check the successors of a task that left waiting/running."""
        cascade = task.status in FAILED_PREDECESSOR and self.settings.cascade_cancel_on_failure
        for succ in self.index.waiting_successors(task):
            if cascade:
                succ.end_reason = EndReason.DEPENDENCY
                self._set_status(succ, TaskStatus.CANCELLED,
                                 f"cancelled: {task.fullname} {task.status}")
            elif self.index.sync(succ):
                self.bump()

    def _finish_plain(self, task: Task, status: TaskStatus, reason: EndReason,
                      text: str | None, code: int | None = None) -> None:
        self._finish(task, Outcome(status, reason, text), code)

    def _finish(self, task: Task, outcome: Outcome, code: int | None,
                warning: str | None = None) -> None:
        """Record an attempt's end and the task's next status, in one transaction."""
        now = time.time()
        with self.store.transaction():
            run = self.running.pop(task.id, None)
            if run is not None:
                run.cancel_timers()
                a = run.attempt
                a.ended_at, a.exit_code, a.reason = now, code, outcome.text
                a.end_reason, a.usage = str(outcome.reason), replace(task.usage)
                self.store.insert_attempt(a)
            task.exit_code, task.ended_at = code, now
            task.end_reason = str(outcome.reason)
            if warning:
                task.warning = f"{task.warning}; {warning}" if task.warning else warning
            if outcome.retry:
                if outcome.reason is not EndReason.REQUEUE:
                    task.retries_used += 1
                if outcome.scale_memory:
                    self._scale_memory(task)
                task.reset_for_queue()
            self._set_status(task, outcome.status, outcome.text)

    def _scale_memory(self, task: Task) -> None:
        totals = self._usable_totals()
        if not totals:
            return
        before = task.requires_memory_per_device
        task.requires_memory_per_device = scaled_memory(before, self.settings.oom_scale,
                                                        max(totals))
        self.store.event(task.id, "oom_scaled",
                         f"{format_mib(before)} -> {format_mib(task.requires_memory_per_device)}")

    def _on_exit(self, task_id: int, exit: Exit) -> None:
        """An executor reports that an attempt ended (its whole tree is gone)."""
        task = self.index.tasks.get(task_id)
        run = self.running.get(task_id)
        if task is None or run is None:
            return
        if run.intent is StopIntent.REMOVE:
            self.running.pop(task_id).cancel_timers()
            self._remove(task)
        else:
            note = attempt_files.read_note(run.attempt.file("note"))
            if note and exit.exit_code == 0:
                task.warning = note
            ending = Ending(
                exit.exit_code, run.intent, exit.reason,
                gpu_oom=exit.exit_code not in (0, None) and self._gpu_oom(task, run.attempt),
                host_oom=exit.host_oom,
                note=task.warning if run.intent is StopIntent.ENFORCE else exit.detail or note,
            )
            rules = Rules(task.attempts, task.max_retries, self.settings.max_attempts,
                          task.resumable, task.retries_used)
            leftovers = None
            if exit.leftovers:
                leftovers = (f"killed {exit.leftovers} leftover processes"
                             if self.settings.kill_leftovers
                             else f"left {exit.leftovers} processes running")
            self._finish(task, decide(ending, rules), exit.exit_code, leftovers)
        self.monitor.forget(task_id)
        log.info("task %d %s ended: %s (exit %s)", task.id, task.fullname, task.status,
                 exit.exit_code)
        if self.store.degraded:
            self._lost_output.add(task_id)
        if self.settings.shutdown_on_complete and not self.index.waiting and not self.running \
                and self.on_idle is not None:
            log.info("nothing left to run and shutdown_on_complete is set: exiting")
            asyncio.get_running_loop().call_soon(self.on_idle)
        self._wake.set()
        self._poll_now.set()

    def _gpu_oom(self, task: Task, attempt: Attempt) -> bool:
        """CUDA's or a framework's message in stderr, or the peak reached the GPU's total."""
        if stderr_says_gpu_oom(attempt_files.tail(attempt.stderr)):
            return True
        totals = {d.index: d.total_mib for d in self.monitor.devices}
        return any(peak >= totals.get(i, 1 << 40) * 0.99
                   for i, peak in task.usage.gpu_peak_mib.items())

    def _remove(self, task: Task) -> None:
        changed = self.index.remove(task)
        self.store.delete_tasks([task.id])
        self._release_waiters(task.id)
        self.bump()
        if changed:
            self._wake.set()

    def _release_waiters(self, task_id: int) -> None:
        """Answer every `meow wait`/`watch` on this task: it left waiting/running or is gone."""
        for future in self._waiters.pop(task_id, []):
            if not future.done():
                future.set_result(None)

    # -- create ----------------------------------------------------------------------------
    def _usable_totals(self) -> list[int]:
        visible = self.settings.visible_devices
        return [d.total_mib for d in self.monitor.devices
                if visible is None or d.index in visible]

    def _check_fits(self, spec: Any) -> None:
        if spec.min_devices == 0 or getattr(spec, "executor", "local") != "local":
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

    def create(self, request: CreateRequest) -> list[dict[str, Any]]:
        if request.request_id:
            answer = self.store.answer_of(request.request_id)
            if answer is not None:  # the client's retry after a lost connection
                return answer
        specs = [spec if spec.executor else replace(spec, executor=self.settings.executor)
                 for spec in request.tasks]
        checked: set[tuple[Any, ...]] = set()
        for spec in specs:  # a 10,000-task sweep usually has one shape
            memory = spec.requires_memory_per_device
            shape = (spec.min_devices, memory, isinstance(memory, float), spec.executor)
            if shape not in checked:
                if spec.executor not in self.executors:
                    raise Refused(f"no {spec.executor} executor here: sbatch is not on meowd's "
                                  "PATH (run meowd on a Slurm login node)")
                self._check_fits(spec)
                checked.add(shape)

        def describe(fullname: str) -> str:
            task = self.index[self.index.by_name[fullname]]
            return f"id {task.id}, {task.status}"

        names, replaced_names = assign_fullnames(
            request.tasks, self.index.by_name, self.settings.override_exist_tasks, describe)
        replaced = [self.index[self.index.by_name[n]] for n in replaced_names]
        now = time.time()
        default_limit = self.settings.default_time_limit or None
        new: list[Task] = []
        for spec, fullname in zip(specs, names, strict=True):
            new.append(Task(
                id=self._next_id + len(new), name=fullname.rpartition("/")[2],
                fullname=fullname, command=spec.command, cwd=request.cwd, env_hash="",
                priority=spec.priority, min_devices=spec.min_devices,
                requires_memory_per_device=spec.requires_memory_per_device, created_at=now,
                depends_on=self._predecessors(spec), enforce_memory=spec.enforce_memory,
                time_limit=spec.time_limit or default_limit, max_retries=spec.max_retries,
                resumable=spec.resumable, executor=spec.executor or "local",
            ))
        answer = [{"id": t.id, "name": t.name, "fullname": t.fullname} for t in new]
        with self.store.transaction(critical=True):
            for old in replaced:  # first: their fullnames are UNIQUE in the table
                if old.id in self.running:
                    self.index.forget_name(old)
                    old.fullname = f"{old.fullname}~{old.id}"
                    self.store.update_task(old, "replaced")
                else:
                    self._remove(old)
            digest = self.store.put_env(request.env)
            for task, spec in zip(new, request.tasks, strict=True):
                task.env_hash = (self.store.put_env({**request.env, **spec.env}) if spec.env
                                 else digest)
            self.store.insert_tasks(new)
            if request.request_id:
                self.store.remember_answer(request.request_id, answer)
        for old in replaced:  # once the change is stored
            if old.id in self.running:
                self._terminate(old, StopIntent.REMOVE, signal.SIGKILL)
        self._next_id += len(new)
        for task in new:
            self.index.add(task)
            LOG_FILTER.secrets |= self.secrets_of(task)
        self._wake.set()
        self.bump()
        return answer

    def _predecessors(self, spec: TaskSpec) -> list[int]:
        found = []
        for dep in spec.after:
            if isinstance(dep, int):
                found.append(self._next_id + dep)
            else:
                matches = self.index.find(dep)
                if not matches:
                    raise NotFound(f"after: no task {dep!r}")
                found.append(matches[0].id)
        return found

    # -- bulk commands ---------------------------------------------------------------------
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
            if task.status in RETRYABLE:
                return f"not cancelled ({task.status}); run it again with: meow retry " \
                       f"{task.fullname}"
            if task.status is not TaskStatus.CANCELLED:
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

    # -- set, clean, wait ------------------------------------------------------------------
    def set_task(self, task: Task, attr: str, value: Any) -> dict[str, Any]:
        """Change a task at run time (`meow set NAME.ATTR VALUE`), already type-checked."""
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

    def task_home(self, task: Task) -> Path:
        return self.paths.tasks / str(task.id)

    def attempt_stem(self, task: Task, n: int) -> Path:
        """`<task home>/attempt-N`: every file of one attempt is this plus an extension."""
        return self.task_home(task) / f"attempt-{n}"

    # -- devices and usage -----------------------------------------------------------------
    async def poll_devices(self) -> None:
        """Sample GPUs and running trees; record usage; retry what the disk refused."""
        local = self.executors.get("local")
        roots = local.roots() if isinstance(local, LocalExecutor) else {}
        homes = {str(self.task_home(self.index[t])): t for t in roots if t in self.index}
        changed, trees = await self.monitor.sample(roots, homes)
        peaks_moved = self._record_usage(trees)
        if self.store.backlog and self.store.flush():
            self._after_disk_recovered()
        if changed:
            self._wake.set()
        if changed or peaks_moved:
            self.bump()  # memory bars and usage move on screen (runtimes tick client-side)

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
        self.bump()

    def _record_usage(self, trees: dict[int, Any]) -> bool:
        """Live and peak usage per running task; warn (or stop) a task over its memory.
        True when a peak or a warning changed."""
        dirty: dict[int, Task] = {}
        usage = self.monitor.usage
        for task_id, sample in trees.items():
            task = self.index.tasks.get(task_id)
            run = self.running.get(task_id)
            if task is None or run is None:
                continue
            gpu = {i: per[task_id] for i, per in usage.items() if task_id in per}
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
        return bool(dirty)

    def accounting(self) -> list[Usage]:
        reservations: dict[int, dict[int, int]] = {}
        for task_id in self.running:
            task = self.index[task_id]
            for index, mib in zip(task.devices, task.reserved_mib, strict=False):
                reservations.setdefault(index, {})[task_id] = mib
        return [account(d.index, d.total_mib, d.used_mib, self.monitor.usage.get(d.index, {}),
                        reservations.get(d.index, {}))
                for d in self.monitor.devices]

    # -- scheduling ------------------------------------------------------------------------
    def policy(self) -> Policy:
        s = self.settings
        return Policy(starvation_guard=s.starvation_guard, reserve_after=s.reserve_after,
                      fit=s.placement, head_of_line=s.head_of_line)  # type: ignore[arg-type]

    def schedule(self) -> int:
        """One placement pass; returns how many tasks were started."""
        if self.store.degraded:  # a start that cannot be recorded could run twice
            self.hold = None
            return 0
        chosen = [(self.index[p.task_id], list(p.devices), list(p.reserved_mib))
                  for p in self._place()]
        chosen += [(t, [], []) for t in sorted(self.index.remote.values(),
                                                key=lambda t: (-t.priority, t.created_at, t.id))]
        if not chosen:
            return 0
        started: list[tuple[Task, Attempt]] = []
        # Phase 1: commit the intent. A crash after this and before the start is seen on
        # restart (no pid, no wrapper process) and requeued, so nothing runs twice.
        now = time.time()
        with self.store.transaction():
            for task, devices, reserved in chosen:
                task.begin_attempt(devices, reserved, now)
                stem = self.attempt_stem(task, task.attempts)
                attempt = Attempt(
                    task_id=task.id, n=task.attempts, pid=None, create_time=None,
                    devices=task.devices, started_at=now, stdout=f"{stem}.stdout.log",
                    stderr=f"{stem}.stderr.log", exit_file=f"{stem}.exit",
                    deadline=task.deadline, memory=task.requires_memory_per_device,
                )
                self.store.insert_attempt(attempt)
                self._set_status(task, TaskStatus.RUNNING, None)
                self.running[task.id] = _Running(attempt, self.executors[task.executor])
                started.append((task, attempt))
        # Phase 2: start, then record the handles. Any failure ends that task alone.
        failed: list[tuple[Task, str]] = []
        with self.store.transaction():
            for task, attempt in started:
                run = self.running[task.id]
                try:
                    launch = self._launch(task, attempt)
                    if hasattr(run.executor, "start_async"):  # sbatch: off the pass
                        run.starting = True
                        self._background(self._start_async(task, run, launch))
                        continue
                    handle = run.executor.start(launch)
                except Exception as exc:
                    failed.append((task, f"cannot start: {exc}"))
                    continue
                self._started(task, attempt, handle)
        for task, reason in failed:
            log.warning("task %d %s: %s", task.id, task.fullname, reason)
            self._finish_plain(task, TaskStatus.FAILED, EndReason.SPAWN, reason)
        return len(started) - len(failed)

    def _place(self) -> list[Any]:
        """Local placements from the pure scheduler; remembers the GPUs it holds."""
        if not self.index.queue:
            self.hold = None
            return []
        views_ = [DeviceView(u.index, u.total, u.free, len(u.task_ids), u.used_by_others)
                  for u in self.accounting()]
        cpu_busy = sum(1 for i in self.running
                       if self.index[i].min_devices == 0 and self.index[i].executor == "local")
        visible = self.settings.visible_devices
        plan = place(self.index.queue, views_, self.settings.cpu_slots - cpu_busy,
                     self.policy(), now=time.time(),
                     visible=None if visible is None else frozenset(visible))
        if plan.hold != self.hold:
            if plan.hold is not None:
                held = self.index[plan.hold.task_id]
                log.info("holding GPUs %s for task %d %s", plan.hold.devices, held.id,
                         held.fullname)
            self.bump()
        self.hold = plan.hold
        return plan.placements

    def _started(self, task: Task, attempt: Attempt, handle: Handle) -> None:
        attempt.pid, attempt.create_time = handle.pid, handle.create_time
        attempt.job_id = handle.job_id
        self.store.insert_attempt(attempt)
        self._arm_deadline(task)

    async def _start_async(self, task: Task, run: _Running, launch: Launch) -> None:
        try:
            handle = await run.executor.start_async(launch)  # type: ignore[attr-defined]
        except Exception as exc:
            run.starting = False
            if self.running.get(task.id) is run:
                self._finish_plain(task, TaskStatus.FAILED, EndReason.SPAWN,
                                   f"cannot start: {exc}")
            return
        run.starting = False
        if self.running.get(task.id) is not run:
            return
        with self.store.transaction():
            self._started(task, run.attempt, handle)
        if run.intent is not None:  # stopped while it was being submitted
            run.executor.signal(task.id, signal.SIGTERM)
        self.bump()

    def _background(self, coro: Any) -> None:
        job = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def _launch(self, task: Task, attempt: Attempt) -> Launch:
        home = self.task_home(task)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        visible = ",".join(map(str, task.devices))
        env = {
            **self.store.get_env(task.env_hash),
            "MEOW_TASK_HOME": str(home), "CATTINO_TASK_HOME": str(home),
            "MEOW_TASK_ID": str(task.id), "MEOW_TASK_NAME": task.fullname,
            "MEOW_ATTEMPT": str(attempt.n), "MEOW_NOTE_FILE": attempt.file("note"),
        }
        if task.executor == "local":
            env.update({"CUDA_VISIBLE_DEVICES": visible,
                        "NVIDIA_VISIBLE_DEVICES": visible if visible else "void",
                        "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
            if not Path(task.cwd).is_dir():
                raise OSError(f"working directory {task.cwd} does not exist")
        if task.deadline:
            env["MEOW_DEADLINE"] = f"{task.deadline:.3f}"
        memory = task.requires_memory_per_device
        if isinstance(memory, float):  # a ratio of GPUs meow cannot see is no amount
            mib = None if task.executor != "local" or not task.reserved_mib \
                else max(task.reserved_mib)
        else:
            mib = int(memory) or None
        return Launch(task.id, attempt.n, task.fullname, task.command, task.cwd, env,
                      attempt.stdout, attempt.stderr, attempt.exit_file, tuple(task.devices),
                      task.min_devices, mib, task.time_limit)

    def _arm_deadline(self, task: Task) -> None:
        run = self.running.get(task.id)
        if run is None or not task.deadline:
            return
        delay = max(0.0, task.deadline - time.time())
        run.time_up = asyncio.get_running_loop().call_later(delay, self._time_up, task.id)

    def _time_up(self, task_id: int) -> None:
        run = self.running.get(task_id)
        if run is not None and run.intent is None:
            task = self.index[task_id]
            log.info("task %d %s reached its time limit", task_id, task.fullname)
            self._terminate(task, StopIntent.TIMEOUT, signal.SIGTERM)

    # -- loops and shutdown ----------------------------------------------------------------
    async def run(self) -> None:
        """The scheduling loop, the device poller and executors' own work, until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._schedule_loop())
            group.create_task(self._poll_loop())
            for executor in self.executors.values():
                group.create_task(executor.run())

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
                self._retain()
            except Exception:
                log.exception("device poll failed")

    async def stop(self, kill_tasks: bool) -> None:
        if kill_tasks and self.running:
            for task_id in list(self.running):
                self._terminate(self.index[task_id], StopIntent.KILL, signal.SIGTERM)
            deadline = time.monotonic() + self.settings.kill_grace + 5
            while self.running and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        for executor in self.executors.values():
            executor.detach_all()
        for run in self.running.values():
            run.cancel_timers()


def _namespace(paths: Paths) -> str:
    """One cgroup folder per state directory."""
    return "home-" + hashlib.sha256(str(paths.state.resolve()).encode()).hexdigest()[:12]


def _vanished(pid: int | None) -> str:
    return (f"process {pid} vanished while no meowd was its parent and left no exit code "
            "(killed by a signal?)")
