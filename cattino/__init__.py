"""Cattino's task-authoring API, served by meow: scripts written for Cattino run unchanged.

    from cattino.tasks import ProcTask, TaskGroup, TaskGraph
    import cattino
    cattino.export(ProcTask("python train.py", task_name="train"))

then `meow create task.py`. `export()` only records the object; `meow create` runs the
script in its own process and ships plain data to the daemon.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from cattino import tasks
from cattino.handles import GracefulTimeout, TaskHandle, handle, remaining_time, resource_usage
from cattino.magics import register_resolver

__all__ = ["GracefulTimeout", "TaskHandle", "exit_and_retry", "export", "exported", "handle",
           "register_resolver", "remaining_time", "resource_usage", "tasks"]
__version__ = "0.1.0"

RETRY_EXIT_CODE = 100

_exported: list[Any] = []
_capturing = False
_hinted = False


def export(task: Any) -> None:
    """Hand a Task or TaskGroup to `meow create`."""
    global _hinted
    if not isinstance(task, tasks.AbstractTask):
        raise TypeError(f"cattino.export() takes a Task or TaskGroup, got {task!r}")
    _exported.append(task)
    frame = sys._getframe(1)  # Cattino's registry in the caller's globals, kept for scripts
    frame.f_globals.setdefault("__catin_tasks", []).append(task)
    if not _capturing and not _hinted:
        _hinted = True
        print(f"cattino: exported {task.fullname}; queue it with `meow create "
              f"{sys.argv[0] or 'SCRIPT.py'}`", file=sys.stderr)


def exported() -> list[Any]:
    return list(_exported)


def exit_and_retry() -> NoReturn:
    """End this task so that meow queues it again (exit code 100)."""
    sys.exit(RETRY_EXIT_CODE)
