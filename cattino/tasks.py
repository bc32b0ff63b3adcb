"""Cattino's task classes, as meow implements them: thin objects that describe work.

Nothing here runs anything. `meow create task.py` runs the user's script, collects what
it `export()`s and turns these objects into plain task specs for the daemon. Hooks
(`on_start`/`on_end`) and callable tasks run later, in the user's own interpreter, in a
small runner process (`cattino._runner`), never inside the daemon.
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

__all__ = [
    "DeviceRequiredTask", "ProcTask", "ResumableTask", "Task", "TaskGraph", "TaskGroup",
    "TaskStatus",
]

_NAME_CHARS = string.ascii_lowercase + string.digits
_names = random.Random()
"""Default task names. The runner reseeds it, so a re-run of the script names alike."""


def _random_name() -> str:
    while True:
        name = "".join(_names.choice(_NAME_CHARS) for _ in range(5))
        if not name.isdigit():
            return name


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in {".", ".."} \
            or "\x00" in name:
        raise ValueError(f"invalid {what} {name!r}: it must be a valid file name")
    if name == "backend":
        raise ValueError(f"the {what} 'backend' is reserved")
    return name


class _Done:
    """What the base hooks return: awaitable (`await super().on_start()`) and harmless
    when a synchronous override calls `super().on_start()` without awaiting."""

    def __await__(self) -> Iterator[None]:
        return iter(())


_DONE = _Done()


class TaskStatus:
    """Status names as meow reports them (strings compare case-insensitively)."""

    Waiting = "waiting"
    Running = "running"
    Done = "done"
    Failed = "failed"
    Cancelled = "cancelled"
    Killed = "killed"
    Lost = "lost"


class AbstractTask:
    """Anything with a name inside an optional group, and lifecycle hooks."""

    def __init__(self, name: str | None) -> None:
        self._name = _check_name(name, "name") if name is not None else _random_name()
        self.group: TaskGroup | None = None

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = _check_name(value, "name")

    @property
    def fullname(self) -> str:
        return f"{self.group.fullname}/{self.name}" if self.group is not None else self.name

    def on_start(self) -> Any:
        """Called before the work starts (a task) or before its first task (a group)."""
        return _DONE

    def on_end(self) -> Any:
        """Called after the work ended, done or failed (for a group: its last task)."""
        return _DONE

    def overrides_hooks(self) -> bool:
        cls = type(self)
        return cls.on_start is not AbstractTask.on_start or cls.on_end is not AbstractTask.on_end

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.fullname}>"


class Task(AbstractTask):
    """A unit of work with a priority (higher runs first)."""

    def __init__(self, task_name: str | None = None, priority: int = 0) -> None:
        super().__init__(task_name)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, got {priority!r}")
        self.priority = priority
        self.create_time = time.time_ns()

    @property
    def task_name(self) -> str:
        return self.name

    @property
    def all_tasks(self) -> list[Task]:
        return [self]


class DeviceRequiredTask(Task):
    """A task that needs `min_devices` GPUs with `requires_memory_per_device` each:
    MiB as an int, or a ratio in (0, 1] of each GPU's total as a float."""

    def __init__(self, requires_memory_per_device: int | float = 0, min_devices: int = 1,
                 task_name: str | None = None, priority: int = 0) -> None:
        super().__init__(task_name, priority)
        memory = requires_memory_per_device
        if isinstance(memory, bool) or not isinstance(memory, int | float):
            raise TypeError(f"requires_memory_per_device must be MiB (int) or a ratio (float), "
                            f"got {memory!r}")
        if isinstance(memory, float) and not 0 < memory <= 1:
            raise ValueError(f"a memory ratio must be in (0, 1], got {memory}")
        if isinstance(memory, int) and memory < 0:
            raise ValueError(f"requires_memory_per_device must be >= 0, got {memory}")
        if isinstance(min_devices, bool) or not isinstance(min_devices, int) or min_devices < 0:
            raise ValueError(f"min_devices must be an int >= 0, got {min_devices!r}")
        self.requires_memory_per_device = memory
        self.min_devices = min_devices


class ProcTask(DeviceRequiredTask):
    """Run a command (a string, run by /bin/sh) or a zero-argument callable.

    `env` is added to the environment `meow create` ran in. Cattino's default priority
    is 1 (its CLI says 0); meow keeps 1 here for scripts and 0 on the CLI, as Cattino does.
    """

    def __init__(self, cmd_or_func: str | Callable[[], Any], env: dict[str, str] | None = None,
                 task_name: str | None = None, priority: int = 1,
                 requires_memory_per_device: int | float = 0, min_devices: int = 1, *,
                 time_limit: float | str | None = None, max_retries: int | None = None,
                 resumable: bool = False, executor: str | None = None) -> None:
        """meow's additions (keyword-only): `time_limit` in seconds or as `2h`/`1d2h`,
        `max_retries` for failed attempts, `resumable` (requeued on timeout), and
        `executor` ("local" or "slurm"; a TaskGroup's executor applies to its tasks)."""
        super().__init__(requires_memory_per_device, min_devices, task_name, priority)
        if isinstance(time_limit, str):
            from meowd.core.units import parse_duration

            time_limit = parse_duration(time_limit)
        if time_limit is not None and (isinstance(time_limit, bool)
                                       or not isinstance(time_limit, int | float)
                                       or time_limit <= 0):
            raise ValueError(f"time_limit must be seconds > 0 or a duration such as 2h, "
                             f"got {time_limit!r}")
        if max_retries is not None and (isinstance(max_retries, bool)
                                        or not isinstance(max_retries, int) or max_retries < 0):
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if executor not in (None, "local", "slurm"):
            raise ValueError(f"executor must be 'local' or 'slurm', got {executor!r}")
        self.time_limit = None if time_limit is None else float(time_limit)
        self.max_retries = max_retries
        self.resumable = resumable or self.resumable
        self.executor = executor
        if isinstance(cmd_or_func, str):
            if not cmd_or_func.strip():
                raise ValueError("empty command")
        elif not callable(cmd_or_func):
            raise TypeError(f"ProcTask needs a command string or a callable, "
                            f"got {cmd_or_func!r}")
        if env is not None and not (isinstance(env, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            raise TypeError("env must map strings to strings")
        self.cmd = cmd_or_func
        self.env = dict(env or {})

    resumable = False

    @property
    def is_callable(self) -> bool:
        return not isinstance(self.cmd, str)


class ResumableTask(ProcTask):
    """A ProcTask that is queued again when its time limit runs out (its run directory
    kept, up to its retries or 3): save checkpoints, read `cattino.remaining_time()`, and
    `raise cattino.GracefulTimeout()` to stop cleanly before the limit."""

    resumable = True


class TaskGraph:
    """A DAG of leaf tasks. An edge from a group expands to edges from all its leaves."""

    def __init__(self) -> None:
        self._nodes: list[AbstractTask] = []
        self._edges: list[tuple[AbstractTask, AbstractTask]] = []

    def add_task(self, task: AbstractTask) -> None:
        if not any(task is n for n in self._nodes):
            self._nodes.append(task)

    def add_tasks_from(self, tasks: Iterable[AbstractTask]) -> None:
        for task in tasks:
            self.add_task(task)

    add_node = add_task
    add_nodes_from = add_tasks_from

    def add_edge(self, u: AbstractTask, v: AbstractTask) -> None:
        self.add_task(u)
        self.add_task(v)
        self._edges.append((u, v))

    def add_edges_from(self, edges: Iterable[tuple[AbstractTask, AbstractTask]]) -> None:
        for u, v in edges:
            self.add_edge(u, v)

    @property
    def nodes(self) -> list[AbstractTask]:
        return list(self._nodes)

    @property
    def edges(self) -> list[tuple[AbstractTask, AbstractTask]]:
        return list(self._edges)


Strategy = Literal["parallel", "sequential"] | TaskGraph


class TaskGroup(AbstractTask):
    """Tasks (and groups) that run together: in parallel, in sequence, or as a DAG.

    Fullnames nest: `group/sub/task`. Duplicate fullnames and cycles are refused here,
    before anything reaches the daemon.
    """

    def __init__(self, tasks: AbstractTask | Iterable[AbstractTask] = (),
                 execute_strategy: Strategy = "parallel", group_name: str | None = None,
                 *, executor: str | None = None) -> None:
        members = [tasks] if isinstance(tasks, AbstractTask) else list(tasks)
        if isinstance(execute_strategy, TaskGraph):
            for node in execute_strategy.nodes:
                if not any(node is m for m in members):
                    members.append(node)
        elif execute_strategy not in ("parallel", "sequential"):
            raise ValueError(f"execute_strategy must be 'parallel', 'sequential' or a "
                             f"TaskGraph, got {execute_strategy!r}")
        if not members:
            raise ValueError("a TaskGroup needs at least one task")
        super().__init__(group_name if group_name is not None
                         else f"group_of_{members[0].name}")
        for member in members:
            if not isinstance(member, AbstractTask):
                raise TypeError(f"a TaskGroup holds tasks and groups, got {member!r}")
            if member.group is not None and member.group is not self:
                raise ValueError(f"{member.fullname} already belongs to a group")
            member.group = self
        self.tasks = members
        self.execute_strategy = execute_strategy
        seen: set[str] = set()
        for leaf in self.all_tasks:
            if leaf.fullname in seen:
                raise ValueError(f"duplicate task fullname {leaf.fullname!r} in group "
                                 f"{self.fullname!r}")
            seen.add(leaf.fullname)
        self.edges()  # refuses cycles now, not at submission
        if executor is not None:  # meow: the group's tasks run there unless they say
            if executor not in ("local", "slurm"):
                raise ValueError(f"executor must be 'local' or 'slurm', got {executor!r}")
            for leaf in self.all_tasks:
                if getattr(leaf, "executor", None) is None:
                    leaf.executor = executor  # type: ignore[attr-defined]

    @classmethod
    def from_name_task_pairs(cls, pairs: Iterable[tuple[str, AbstractTask]],
                             execute_strategy: Strategy = "parallel",
                             group_name: str | None = None) -> TaskGroup:
        """Build nested groups from paths: [("g1/g2", task), ("g1", other)]."""
        tree: dict[str, Any] = {}
        order: list[AbstractTask] = []
        for path, task in pairs:
            node = tree
            for part in [p for p in path.split("/") if p]:
                node = node.setdefault(part, {})
            node.setdefault("", []).append(task)
            order.append(task)

        def build(node: dict[str, Any], name: str | None) -> TaskGroup:
            members: list[AbstractTask] = list(node.get("", []))
            members += [build(child, key) for key, child in node.items() if key]
            return cls(members, "parallel", name)

        top = [*tree.get("", []), *(build(child, key) for key, child in tree.items() if key)]
        return cls(top, execute_strategy, group_name)

    @property
    def all_tasks(self) -> list[Task]:
        leaves: list[Task] = []
        for member in self.tasks:
            leaves.extend(member.all_tasks)  # type: ignore[attr-defined]
        return leaves

    def edges(self) -> list[tuple[Task, Task]]:
        """Leaf-to-leaf dependencies of this group and every nested one; acyclic."""
        result: list[tuple[Task, Task]] = []
        if self.execute_strategy == "sequential":
            pairs = list(zip(self.tasks, self.tasks[1:], strict=False))
        elif isinstance(self.execute_strategy, TaskGraph):
            pairs = self.execute_strategy.edges
        else:
            pairs = []
        for u, v in pairs:
            result += [(a, b) for a in u.all_tasks for b in v.all_tasks]  # type: ignore[attr-defined]
        for member in self.tasks:
            if isinstance(member, TaskGroup):
                result += member.edges()
        _refuse_cycles(self.all_tasks, result, self.fullname)
        return result


def _refuse_cycles(nodes: list[Task], edges: list[tuple[Task, Task]], where: str) -> None:
    successors: dict[int, list[Task]] = {id(n): [] for n in nodes}
    for u, v in edges:
        successors.setdefault(id(u), []).append(v)
    state: dict[int, int] = {}  # 1: on the current path, 2: finished

    def visit(node: Task, path: list[Task]) -> None:
        state[id(node)] = 1
        path = [*path, node]
        for nxt in successors.get(id(node), []):
            if state.get(id(nxt)) == 1:
                start = next(i for i, n in enumerate(path) if n is nxt)
                cycle = " -> ".join(n.name for n in [*path[start:], nxt])
                raise ValueError(f"cycle in group {where!r}: {cycle}")
            if id(nxt) not in state:
                visit(nxt, path)
        state[id(node)] = 2

    for node in nodes:
        if id(node) not in state:
            visit(node, [])
