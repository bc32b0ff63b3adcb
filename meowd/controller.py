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
import collections
import hashlib
import logging
import shlex
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from meowd import attempt_files, views
from meowd.commands import Commands
from meowd.config import Settings
from meowd.core import estimates
from meowd.core.estimates import Estimate
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
from meowd.core.models import ACTIVE, Task, TaskStatus
from meowd.core.paths import Paths
from meowd.core.reasons import EndReason
from meowd.core.scheduler import Hold, Reservation
from meowd.core.settings import parse_fake_gpus
from meowd.core.units import format_mib
from meowd.creating import Creating
from meowd.devices import DeviceBackend
from meowd.executors.base import Executor, ExitCallback, Handle
from meowd.executors.base import Exit as Exit
from meowd.executors.cgroups import Cgroups
from meowd.executors.local import LocalExecutor, read_exit_file
from meowd.executors.slurm import SlurmExecutor
from meowd.ledger import (
    Claim,
    ForeignClaim,
    Ledger,
    NullLedger,
    attempt_key,
    ledger_scope,
    open_ledger,
)
from meowd.monitor import UsageMonitor
from meowd.sampling import Sampling
from meowd.secrets import LOG_FILTER, secret_values
from meowd.starting import Running, Starting
from meowd.store import Attempt, Store

log = logging.getLogger("meowd.controller")

ExecutorFactory = Callable[[ExitCallback, "Controller"], dict[str, Executor]]


def default_executors(on_exit: ExitCallback, c: Controller) -> dict[str, Executor]:
    """The local executor, and Slurm's where `sbatch` is on the PATH."""
    found: dict[str, Executor] = {"local": LocalExecutor(
        on_exit, cgroups=Cgroups.detect(_namespace(c.paths)), tracked=c.monitor.known,
        kill_grace=lambda: c.settings.kill_grace,
        kill_leftovers=lambda: c.settings.kill_leftovers, batch=c.store.transaction)}
    if shutil.which("sbatch"):
        s = c.settings
        found["slurm"] = SlurmExecutor(on_exit, partition=s.slurm_partition or None,
                                       account=s.slurm_account or None,
                                       extra=shlex.split(s.slurm_extra),
                                       poll_interval=s.slurm_poll_interval)
    return found


class Controller(Creating, Commands, Starting, Sampling):
    def __init__(self, paths: Paths, settings: Settings, store: Store,
                 backend: DeviceBackend | None, executors: ExecutorFactory = default_executors,
                 ledger: Ledger | None = None) -> None:
        self.paths = paths
        self.settings = settings
        self.store = store
        self.backend = backend
        self.index = TaskIndex()
        self.monitor = UsageMonitor(backend)
        self.running: dict[int, Running] = {}
        self.hold: Hold | None = None
        self._secrets: dict[str, set[str]] = {}
        """env hash -> its secret values (environments never change once stored)."""
        self.version = 0
        self._changes: collections.deque[tuple[int, frozenset[int] | None]] = \
            collections.deque(maxlen=4096)
        """(version, the task ids it changed, or None for everything): for deltas."""
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.row_json: dict[int, bytes] = {}
        """Ended tasks' `meow list --json` rows, encoded (views.json_list); `bump` drops
        a task's."""
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
        self._to_bind: dict[str, int] = {}
        self._binding = False
        """Ledger keys to bind to their task's process after this pass's starts."""
        self.ledger = ledger if ledger is not None else default_ledger(paths, settings, backend)
        """Every meowd's GPU memory claims on this machine: two queues never book one MiB."""
        self.foreign: list[ForeignClaim] = []
        """Other queues' live claims at the last poll."""
        self.ledger_notes: dict[int, str] = {}
        """Task id -> why the ledger refused its placement (another queue's claim)."""
        self.executors = executors(self._on_exit, self)
        self.reservations: dict[int, Reservation] = {}
        """Blocked tasks' GPUs and expected starts, from the last placement pass."""
        self._runtimes: dict[str, list[float]] = {}
        self._estimates: dict[int, Estimate | None] = {}
        self.index.estimate_of = self._estimate_s

    def estimate(self, task: Task) -> Estimate | None:
        """How long the task should run: its time limit, else similar tasks' history."""
        if task.id not in self._estimates:
            self._estimates[task.id] = (
                estimates.from_limit(task.time_limit) if task.time_limit else
                estimates.from_keys(lambda k: self._runtimes.get(k, ()),
                                    estimates.history_keys(task.command, task.name, task.group)))
        return self._estimates[task.id]

    def _estimate_s(self, task: Task) -> float | None:
        found = self.estimate(task)
        return found.seconds if found else None

    def _learn_runtime(self, task: Task, runtime: float) -> None:
        """A done task's runtime joins the history its successors are estimated from."""
        for key in estimates.history_keys(task.command, task.name, task.group):
            runs = self._runtimes.setdefault(key, [])
            runs.append(runtime)
            del runs[:-estimates.HISTORY_LENGTH]
            self.store.record_runtime(key, runtime)
        self._estimates.clear()  # later estimates see it

    def _claims(self, task: Task) -> list[Claim]:
        return [Claim(attempt_key(task.id, task.attempts), d, mib)
                for d, mib in zip(task.devices, task.reserved_mib, strict=True)]

    @property
    def tasks(self) -> dict[int, Task]:
        return self.index.tasks

    # -- startup ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._runtimes = self.store.runtimes()
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
            run = Running(attempt, executor)
            handle = Handle(attempt.pid, attempt.create_time, attempt.job_id)
            if executor.adopt(task.id, handle, attempt.exit_file):
                attempt.pid = attempt.pid or getattr(executor, "pid", lambda _: None)(task.id)
                self.running[task.id] = run
                if attempt.pid and task.executor == "local":
                    self.ledger.adopt(self._claims(task), attempt.pid)
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
        self.ledger.retain(attempt_key(t, r.attempt.n) for t, r in self.running.items())
        if len(self.index):
            log.info("restored %d tasks (%d waiting, %d running re-adopted) in %.1f ms",
                     len(self.index), len(self.index.waiting), adopted,
                     (time.monotonic() - started) * 1e3)
        self._wake.set()

    # -- change notification (meow top) ----------------------------------------------------
    def bump(self, *task_ids: int, everything: bool = False) -> None:
        """Something a subscriber shows changed (these tasks; with none, the devices only;
        with `everything`, what no one task holds, such as a hold that moved): wake every
        `changed()` waiter. The change log lets `changes_since` send only deltas."""
        self.version += 1
        self._changes.append((self.version, None if everything else frozenset(task_ids)))
        for task_id in task_ids:  # (an ended task's row depends on the task alone)
            self.row_json.pop(task_id, None)
        if not self._changed.done():
            self._changed.set_result(None)
        self._changed = asyncio.get_running_loop().create_future()

    def changes_since(self, version: int) -> dict[str, Any] | None:
        """What a subscriber at `version` lacks: the tasks changed since, the ids gone,
        and the devices; None when it needs the whole state (too old, or a change no
        single task holds)."""
        if version >= self.version:
            return None
        if not self._changes or self._changes[0][0] > version + 1:
            return None  # that far back is no longer in the log
        ids: set[int] = set()
        for v, changed in self._changes:
            if v <= version:
                continue
            if changed is None:
                return None
            ids |= changed
        live = [self.index[i] for i in sorted(ids) if i in self.index]
        return {"version": self.version, "since": version,
                "tasks": [{**views.public(self, t), **views.log_paths(self, t)} for t in live],
                "removed": sorted(i for i in ids if i not in self.index),
                "devices": views.devices(self), "cpu_slots": self.settings.cpu_slots,
                "degraded": self.store.degraded}

    async def changed(self) -> None:
        await asyncio.shield(self._changed)

    # -- state changes ---------------------------------------------------------------------
    def _set_status(self, task: Task, status: TaskStatus, reason: str | None = None) -> None:
        task.transition(status, reason)
        self.index.status_changed(task)
        self.store.update_task(task, str(status), reason)
        self.bump(task.id)
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
                self.bump(succ.id)

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
                if run.attempt.pid is None:
                    # Never bound to a process (its start failed): held by this daemon.
                    # A bound claim dies with its process (whose whole tree is gone by
                    # now); `expire` tidies its entry, sparing a ledger write per task.
                    self.ledger.release(attempt_key(task.id, run.attempt.n))
                a = run.attempt
                a.ended_at, a.exit_code, a.reason = now, code, outcome.text
                a.end_reason, a.usage = str(outcome.reason), replace(task.usage)
                self.store.insert_attempt(a)
            task.exit_code, task.ended_at = code, now
            task.end_reason = str(outcome.reason)
            if outcome.status is TaskStatus.DONE and run is not None:
                self._learn_runtime(task, now - run.attempt.started_at)
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
            if run.attempt.pid is None:
                self.ledger.release(attempt_key(task_id, run.attempt.n))
            self._remove(task)
        else:
            note = attempt_files.read_note(run.attempt.file("note"))
            if note and exit.exit_code == 0:
                task.warning = note
            ending = Ending(
                exit.exit_code, run.intent, exit.reason,
                gpu_oom=exit.exit_code not in (0, None) and task.min_devices > 0
                and self._gpu_oom(task, run.attempt),
                host_oom=exit.host_oom,
                note=task.warning if run.intent is StopIntent.ENFORCE else exit.detail or note,
            )
            rules = Rules(task.attempts, task.max_retries, self.settings.max_attempts,
                          task.resumable, task.retries_used)
            leftovers = None
            if exit.leftovers:
                n = exit.leftovers
                what = f"{n} leftover process{'es' if n > 1 else ''}"
                leftovers = (f"killed {what}" if self.settings.kill_leftovers
                             else f"left {what} running")
            self._finish(task, decide(ending, rules), exit.exit_code, leftovers)
        self.monitor.forget(task_id)
        log.debug("task %d %s ended: %s (exit %s)", task.id, task.fullname, task.status,
                  exit.exit_code)
        if self.store.degraded:
            self._lost_output.add(task_id)
        if self.settings.shutdown_on_complete and not self.index.waiting and not self.running \
                and self.on_idle is not None:
            log.info("nothing left to run and shutdown_on_complete is set: exiting")
            asyncio.get_running_loop().call_soon(self.on_idle)
        self._wake.set()
        if task.usage.gpu_mib:  # its GPU memory is handed on: read the GPUs again now
            self._poll_now.set()

    def _gpu_oom(self, task: Task, attempt: Attempt) -> bool:
        """CUDA's or a framework's message in stderr, or the peak reached the GPU's total."""
        if stderr_says_gpu_oom(attempt_files.tail(attempt.stderr)):
            return True
        totals = {d.index: d.total_mib for d in self.monitor.devices}
        return any(peak >= totals.get(i, 1 << 40) * 0.99
                   for i, peak in task.usage.gpu_peak_mib.items())

    def _remove(self, task: Task) -> None:
        if task.status is not TaskStatus.DONE:
            # What waits for it must not start as if it had succeeded.
            for succ in self.index.waiting_successors(task):
                succ.end_reason = EndReason.DEPENDENCY
                self._set_status(succ, TaskStatus.CANCELLED,
                                 f"cancelled: {task.fullname} was removed before it was done")
        changed = self.index.remove(task)
        self.store.delete_tasks([task.id])
        self._release_waiters(task.id)
        self.bump(task.id, *(t.id for t in changed))
        if changed:
            self._wake.set()

    def _release_waiters(self, task_id: int) -> None:
        """Answer every `meow wait`/`watch` on this task: it left waiting/running or is gone."""
        for future in self._waiters.pop(task_id, []):
            if not future.done():
                future.set_result(None)

    def task_home(self, task: Task) -> Path:
        return self.paths.tasks / str(task.id)

    def attempt_stem(self, task: Task, n: int) -> Path:
        """`<task home>/attempt-N`: every file of one attempt is this plus an extension."""
        return self.task_home(task) / f"attempt-{n}"

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
        try:  # ended tasks' entries go; running ones' claims stay bound to their processes
            self.ledger.publish(None)
            self.ledger.expire()
        except Exception:
            log.exception("GPU ledger: tidying at exit failed")


def default_ledger(paths: Paths, settings: Settings, backend: DeviceBackend | None) -> Ledger:
    """The machine-wide ledger for these GPUs (fake ones by their spec); none without GPUs."""
    if backend is None:
        return NullLedger()
    totals = parse_fake_gpus(settings.fake_gpus) if settings.fake_gpus else None
    return open_ledger(paths, ledger_scope(totals), fairness=settings.fairness)


def _namespace(paths: Paths) -> str:
    """One cgroup folder per state directory."""
    return "home-" + hashlib.sha256(str(paths.state.resolve()).encode()).hexdigest()[:12]


def _vanished(pid: int | None) -> str:
    return (f"process {pid} vanished while no meowd was its parent and left no exit code "
            "(killed by a signal?)")
