"""The task index: every task by id and fullname, who depends on whom, and the wait queue.

Pure: no I/O, no loop. The controller tells it what changed (`add`, `status_changed`,
`remove`); it keeps the placement queue to exactly the waiting tasks whose predecessors
are done, and says in `Task.dependency` why the others wait.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from meowd.core.errors import BadRequest, NotFound
from meowd.core.models import ACTIVE, Task, TaskStatus
from meowd.core.scheduler import Candidate, WaitQueue

FAILED_PREDECESSOR = frozenset(
    {TaskStatus.FAILED, TaskStatus.KILLED, TaskStatus.LOST, TaskStatus.TIMEOUT}
)


class TaskIndex:
    def __init__(self) -> None:
        self.tasks: dict[int, Task] = {}
        self.by_name: dict[str, int] = {}
        self.waiting: dict[int, Task] = {}
        """Every waiting task; `queue` holds those whose predecessors are done."""
        self.queue = WaitQueue()
        """Waiting local tasks ready to be placed on this machine's GPUs."""
        self.remote: dict[int, Task] = {}
        """Waiting tasks of other executors (Slurm) ready to be handed on: their own
        system places them."""
        self.successors: dict[int, set[int]] = {}
        self.estimate_of: Callable[[Task], float | None] = lambda task: None
        """Seconds a task is expected to run (its time limit, or its history)."""

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks.values())

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.tasks

    def __getitem__(self, task_id: int) -> Task:
        return self.tasks[task_id]

    def add(self, task: Task) -> None:
        self.tasks[task.id] = task
        self.by_name[task.fullname] = task.id
        for dep in task.depends_on:
            self.successors.setdefault(dep, set()).add(task.id)
        self.status_changed(task)

    def rename(self, task: Task, fullname: str) -> None:
        self.by_name.pop(task.fullname, None)
        task.fullname = fullname
        task.name = fullname.rpartition("/")[2]
        self.by_name[fullname] = task.id

    def forget_name(self, task: Task) -> None:
        """Free a fullname while the task lives on (replaced by a new task of that name)."""
        self.by_name.pop(task.fullname, None)

    def remove(self, task: Task) -> list[Task]:
        """Forget a task; returns the successors whose dependency state changed."""
        self.tasks.pop(task.id, None)
        if self.by_name.get(task.fullname) == task.id:
            del self.by_name[task.fullname]
        self.waiting.pop(task.id, None)
        self.queue.discard(task.id)
        self.remote.pop(task.id, None)
        for dep in task.depends_on:
            self.successors.get(dep, set()).discard(task.id)
        changed = []
        for succ_id in sorted(self.successors.pop(task.id, ())):
            succ = self.tasks.get(succ_id)
            if succ is not None and self.sync(succ):
                changed.append(succ)
        return changed

    def status_changed(self, task: Task) -> None:
        """Keep `waiting` and the queue in step with the task's status."""
        if task.status is TaskStatus.WAITING:
            self.waiting[task.id] = task
        else:
            self.waiting.pop(task.id, None)
        self.sync(task)

    def requeue_candidate(self, task: Task) -> None:
        """Its priority or request changed: its place in the queue moves."""
        self.queue.discard(task.id)
        self.sync(task)

    def blocker(self, task: Task) -> Task | None:
        """The first predecessor that is not done yet (removed ones count as done)."""
        for dep in task.depends_on:
            pred = self.tasks.get(dep)
            if pred is not None and pred.status is not TaskStatus.DONE:
                return pred
        return None

    def sync(self, task: Task) -> bool:
        """Queue a waiting task once nothing it depends on is pending, or say why it
        waits. True when `task.dependency` changed."""
        before = task.dependency
        if task.status is not TaskStatus.WAITING:
            self.queue.discard(task.id)
            self.remote.pop(task.id, None)
            task.dependency = None
            return before is not None
        blocker = self.blocker(task)
        if blocker is None:
            task.dependency = None
            if task.executor != "local":
                self.remote[task.id] = task
            elif task.id not in self.queue:
                self.queue.add(Candidate(task.id, task.priority, task.created_at,
                                         task.min_devices, task.requires_memory_per_device,
                                         self.estimate_of(task)))
        else:
            self.queue.discard(task.id)
            self.remote.pop(task.id, None)
            task.dependency = (f"waiting for {blocker.fullname}" if blocker.status in ACTIVE
                               else f"blocked: {blocker.fullname} {blocker.status}")
        return task.dependency != before

    def waiting_successors(self, task: Task) -> list[Task]:
        return [s for s in (self.tasks.get(i) for i in sorted(self.successors.get(task.id, ())))
                if s is not None and s.status is TaskStatus.WAITING]

    def awaited(self, task: Task) -> bool:
        """A waiting successor still needs this task's outcome."""
        return bool(self.waiting_successors(task))

    # -- selection ---------------------------------------------------------------------
    def select(self, target: str | None, regex: bool) -> list[Task]:
        if regex:
            if target is None:
                return list(self.tasks.values())
            try:
                pattern = re.compile(target)
            except re.error as exc:
                raise BadRequest(f"bad regular expression {target!r}: {exc}") from None
            return [t for t in self.tasks.values() if pattern.fullmatch(t.fullname)]
        return self.find(target or "", many=True)

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

    def depends_transitively(self, task_id: int, on: int) -> bool:
        """Does `task_id` (directly or not) wait for `on`? Refuses cycles in `--after`."""
        stack, seen = [task_id], set()
        while stack:
            current = stack.pop()
            if current == on:
                return True
            if current in seen or current not in self.tasks:
                continue
            seen.add(current)
            stack.extend(self.tasks[current].depends_on)
        return False
