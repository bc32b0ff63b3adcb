"""Starting attempts: one placement pass (the pure scheduler for this machine's GPUs; tasks
of other executors go straight to them), the two-phase start (commit the attempt, then
start it, so a crash between never runs a task twice), and time limits. A part of the
controller (mixed into `Controller`)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meowd.core import estimates
from meowd.core.lifecycle import StopIntent
from meowd.core.models import Task, TaskStatus
from meowd.core.reasons import EndReason
from meowd.core.scheduler import DeviceView, Placement, Policy, place
from meowd.core.scheduler import Running as SchedRunning
from meowd.executors.base import Executor, Handle, Launch
from meowd.ledger import Claim, attempt_key
from meowd.store import Attempt

log = logging.getLogger("meowd.controller")


@dataclass
class Running:
    """Runtime-only facts about a running attempt (never persisted)."""

    attempt: Attempt
    executor: Executor
    intent: StopIntent | None = None
    escalation: asyncio.TimerHandle | None = None
    time_up: asyncio.TimerHandle | None = None
    starting: bool = False
    """An asynchronous start (sbatch) is in flight: a stop waits for its job id."""
    before: dict[str, Any] = field(default_factory=dict)
    """The task's fields before this attempt began (`Task.begin_attempt`)."""

    def cancel_timers(self) -> None:
        for timer in (self.escalation, self.time_up):
            if timer is not None:
                timer.cancel()

class Starting:
    def policy(self) -> Policy:
        s = self.settings
        return Policy(starvation_guard=s.starvation_guard, reserve_after=s.reserve_after,
                      fit=s.placement, head_of_line=s.head_of_line,  # type: ignore[arg-type]
                      backfill=s.backfill)  # type: ignore[arg-type]

    def schedule(self) -> int:
        """One placement pass; returns how many tasks were started."""
        return self.start_recorded(self.record_starts())

    def record_starts(self) -> list[tuple[Task, Attempt]]:
        """Phase 1 of a pass: place, and record each chosen task's attempt, committed
        before any of them starts. A crash after this and before the start is seen on
        restart (no pid, no wrapper process) and requeued, so nothing runs twice."""
        if self.store.degraded:  # a start that cannot be recorded could run twice
            self.hold = None
            return []
        chosen = [(self.index[p.task_id], list(p.devices), list(p.reserved_mib))
                  for p in self._place()]
        chosen += [(t, [], []) for t in sorted(self.index.remote.values(),
                                                key=lambda t: (-t.priority, t.created_at, t.id))]
        if not chosen:
            return []
        started: list[tuple[Task, Attempt]] = []
        begun: list[tuple[Task, dict[str, Any]]] = []
        now = time.time()
        try:
            with self.store.transaction():
                for task, devices, reserved in chosen:
                    begun.append((task, task.begin_attempt(devices, reserved, now)))
                    stem = self.attempt_stem(task, task.attempts)
                    attempt = Attempt(
                        task_id=task.id, n=task.attempts, pid=None, create_time=None,
                        devices=task.devices, started_at=now, stdout=f"{stem}.stdout.log",
                        stderr=f"{stem}.stderr.log", exit_file=f"{stem}.exit",
                        deadline=task.deadline, memory=task.requires_memory_per_device,
                    )
                    self.store.insert_attempt(attempt)
                    self._set_status(task, TaskStatus.RUNNING, None)
                    self.running[task.id] = Running(attempt, self.executors[task.executor],
                                                    before=begun[-1][1])
                    started.append((task, attempt))
        except Exception:
            # Nothing half done may stay: a task recorded as running that nobody starts
            # would hold its slot and GPUs for good.
            for task, before in reversed(begun):
                self._unstart(task, task.attempts, before, "its start failed; requeued")
            raise
        # A store error ends the unit early (its writes wait in the backlog): what began
        # after it was never recorded.
        for task, before in reversed(begun[len(started):]):
            self._unstart(task, task.attempts, before, "its start could not be recorded; "
                          "requeued")
        return started

    def start_recorded(self, started: list[tuple[Task, Attempt]]) -> int:
        """Phase 2, once phase 1 is committed: start, then record the handles. Any
        failure ends that task alone. If phase 1 could not be stored (a full disk), the
        tasks go back to waiting unstarted: started, they could run twice."""
        if not started:
            return 0
        if self.store.degraded:
            for task, attempt in started:
                self._unstart(task, attempt.n, self.running[task.id].before,
                              "its start could not be recorded; requeued")
            return 0
        failed: list[tuple[Task, str]] = []
        with self.store.transaction():
            for task, attempt in started:
                run = self.running[task.id]
                try:
                    launch = self._launch(task, attempt)
                    if hasattr(run.executor, "start_async"):  # spawn, sbatch: off the pass
                        run.starting = True
                        self._background(self._start_async(task, run, launch))
                        continue
                    handle = run.executor.start(launch)
                except Exception as exc:
                    failed.append((task, f"cannot start: {exc}"))
                    continue
                self._started(task, attempt, handle)
        try:
            self._bind_started()
        finally:  # (a ledger that fails must not leave these "running")
            for task, reason in failed:
                log.warning("task %d %s: %s", task.id, task.fullname, reason)
                self._finish_plain(task, TaskStatus.FAILED, EndReason.SPAWN, reason)
        return len(started) - len(failed)

    def _unstart(self, task: Task, n: int, before: dict[str, Any], reason: str) -> None:
        """Back to waiting, as if attempt n had never been begun (its record goes too)."""
        run = self.running.pop(task.id, None)
        if run is not None:
            run.cancel_timers()
        self.ledger.release(attempt_key(task.id, n))
        with self.store.transaction():
            self.store.delete_attempt(task.id, n)
            task.undo_attempt(before)
            if task.status is TaskStatus.RUNNING:
                self._set_status(task, TaskStatus.WAITING, reason)
            else:  # it failed before it was marked running
                self.store.update_task(task)
                self.bump(task.id)

    def _place(self) -> list[Any]:
        """Local placements from the pure scheduler; remembers the GPUs it holds."""
        if not self.index.queue:
            self.hold = None
            return []
        usage = self.accounting()
        outstanding: dict[int, int] = {}  # other queues' claims their tasks do not use yet
        for f in self.foreign:
            outstanding[f.device] = outstanding.get(f.device, 0) + f.outstanding_mib
        views_ = [DeviceView(u.index, u.total, max(0, u.free - outstanding.get(u.index, 0)),
                             len(u.task_ids), u.used_by_others)
                  for u in usage]
        cpu_busy = sum(1 for i in self.running
                       if self.index[i].min_devices == 0 and self.index[i].executor == "local")
        visible = self.settings.visible_devices
        now = time.time()
        plan = place(self.index.queue, views_, self.settings.cpu_slots - cpu_busy,
                     self.policy(), now=now,
                     visible=None if visible is None else frozenset(visible),
                     running=self._timeline(now))
        reservations = {r.task_id: r for r in plan.reservations}
        if reservations != self.reservations:
            self.bump(*reservations, *self.reservations)
            self.reservations = reservations
        if plan.hold != self.hold:
            if plan.hold is not None:
                held = self.index[plan.hold.task_id]
                # debug: in a sweep every task is held in turn while the GPUs are busy
                log.debug("holding GPUs %s for task %d %s", plan.hold.devices, held.id,
                          held.fullname)
            self.bump(everything=True)  # every waiting task's why may name it
        self.hold = plan.hold
        return self._claim(plan.placements, {u.index: u.free for u in usage})

    def _timeline(self, now: float) -> list[SchedRunning]:
        """Running local GPU tasks with what their ends free and when (estimates)."""
        used = self.monitor.usage
        timeline = []
        for task_id in self.running:
            task = self.index[task_id]
            if task.executor != "local" or not task.devices:
                continue
            mib = tuple(max(r, used.get(d, {}).get(task_id, 0))
                        for d, r in zip(task.devices, task.reserved_mib, strict=False))
            timeline.append(SchedRunning(tuple(task.devices), mib, estimates.expected_end(
                task.started_at or now, self.estimate(task), now)))
        return timeline

    def _claim(self, placements: list[Placement], free: dict[int, int]) -> list[Placement]:
        """Claim each placement's memory in the machine-wide ledger, atomically against
        every other queue's claims; the ones refused wait, saying whose claim they wait for."""
        claims = [[Claim(attempt_key(p.task_id, self.index[p.task_id].attempts + 1), d, mib)
                   for d, mib in zip(p.devices, p.reserved_mib, strict=True)]
                  for p in placements]
        if not any(c.mib for cs in claims for c in cs):
            return placements
        results = self.ledger.claim_each(
            claims, free, self.monitor.gpu_processes(),
            waiting_since=[self.index[p.task_id].created_at for p in placements])
        granted = []
        for placement, result in zip(placements, results, strict=True):
            if result.degraded:
                log.warning("GPU ledger: %s", result.degraded)
            if result:
                if self.ledger_notes.pop(placement.task_id, None):
                    self.bump(placement.task_id)
                granted.append(placement)
                continue
            note = result.note() or "its GPUs were claimed by another meow queue meanwhile"
            if self.ledger_notes.get(placement.task_id) != note:
                self.ledger_notes[placement.task_id] = note
                self.bump(placement.task_id)
        return granted

    def _started(self, task: Task, attempt: Attempt, handle: Handle) -> None:
        attempt.pid, attempt.create_time = handle.pid, handle.create_time
        attempt.job_id = handle.job_id
        if handle.pid and task.executor == "local" and any(task.reserved_mib):
            # The claim moves from this daemon to the task (for the whole pass at once, in
            # `start_recorded`): it lives exactly as long as the task's process.
            self._to_bind[attempt_key(task.id, attempt.n)] = handle.pid
        self.store.attempt_started(attempt)
        self._arm_deadline(task)

    async def _start_async(self, task: Task, run: Running, launch: Launch) -> None:
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
        if self._to_bind and not self._binding:
            # Starts that complete in one turn of the loop bind with one ledger write.
            self._binding = True
            asyncio.get_running_loop().call_soon(self._bind_started)
        if run.intent is not None:  # stopped while it was being started
            intent, run.intent = run.intent, None
            self._terminate(task, intent, signal.SIGTERM)
        self.bump(task.id)

    def _bind_started(self) -> None:
        """Move the claims of the attempts just started to their processes (one write)."""
        self._binding = False
        if self._to_bind:
            self.ledger.bind_all(self._to_bind)
            self._to_bind.clear()

    def _background(self, coro: Any) -> None:
        job = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def _launch(self, task: Task, attempt: Attempt) -> Launch:
        home = self.task_home(task)
        if task.executor != "local":  # the local executor makes it off the loop
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
