"""Creating tasks: checks that a request can ever run here, fullnames (groups, renames,
replacements), dependencies on earlier tasks, one transaction for the lot, and the client's
request id so that a create sent twice makes its tasks once. A part of the controller
(mixed into `Controller`)."""

from __future__ import annotations

import signal
import time
from dataclasses import replace
from typing import Any

from meowd.core.errors import NotFound, Refused
from meowd.core.lifecycle import StopIntent
from meowd.core.models import Task
from meowd.core.naming import assign_fullnames
from meowd.core.protocol import CreateRequest, TaskSpec
from meowd.core.scheduler import can_ever_fit
from meowd.core.units import format_mib
from meowd.devices import NO_GPU_HINT
from meowd.secrets import LOG_FILTER


class Creating:
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
                depends_on=tuple(self._predecessors(spec)), enforce_memory=spec.enforce_memory,
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
        self.bump(*(t.id for t in new))
        return answer

    def _predecessors(self, spec: TaskSpec) -> list[int]:
        found = []
        for dep in spec.after:
            if isinstance(dep, int):
                found.append(self._next_id + dep)
            else:
                matches = self.index.find(dep, many=True)  # a group: all its tasks
                if not matches:
                    raise NotFound(f"after: no task {dep!r}")
                found += [t.id for t in matches if t.id not in found]
        return found
