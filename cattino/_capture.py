"""Run a task script and collect what it exports: used by `meow create` and the runner.

The script runs as `__main__` with `sys.argv` set, as `python script.py ARGS` would run
it. Default task names come from a seeded generator, so the runner, which runs the
same script again to find a task's hooks, gets the same names.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

import cattino
from cattino import tasks


def run_script(path: str, argv: list[str], seed: int, source: str | None = None) -> list[Any]:
    """Run the script at `path` (or `source`, a snapshot of it, as if it were at `path`)
    and return the objects it exported, in order."""
    saved = (sys.argv[:], sys.path[:], cattino._capturing, cattino._exported[:])
    sys.argv = [path, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    cattino._capturing = True
    cattino._exported.clear()
    tasks._names.seed(seed)
    try:
        if source is None:
            runpy.run_path(path, run_name="__main__")
        else:
            code = compile(source, path, "exec")
            module_globals: dict[str, Any] = {"__name__": "__main__", "__file__": path,
                                              "__builtins__": __builtins__}
            main = sys.modules["__main__"]
            try:
                # Classes defined by the script then live in a __main__ the runner owns.
                sys.modules["__main__"] = type(sys)("__main__")
                sys.modules["__main__"].__dict__.update(module_globals)
                exec(code, sys.modules["__main__"].__dict__)
            finally:
                sys.modules["__main__"] = main
        return cattino._exported[:]
    finally:
        sys.argv, sys.path[:], cattino._capturing = saved[0], saved[1], saved[2]
        cattino._exported[:] = saved[3]


def leaves(objects: list[Any]) -> list[tasks.Task]:
    """Every leaf task of the exported objects, in export order, each once."""
    result: list[tasks.Task] = []
    seen: set[int] = set()
    for obj in objects:
        for leaf in obj.all_tasks:
            if id(leaf) not in seen:
                seen.add(id(leaf))
                result.append(leaf)
    return result


def groups_of(task: tasks.AbstractTask) -> list[tasks.TaskGroup]:
    """Enclosing groups, outermost first."""
    chain = []
    group = task.group
    while group is not None:
        chain.append(group)
        group = group.group
    return chain[::-1]


# -- errors in a task file ---------------------------------------------------------------
def _ours() -> tuple[str, ...]:
    """Directories whose frames are meow's (and runpy's), never the script author's."""
    import runpy as runpy_module

    import meowcli
    import meowd

    dirs = [os.path.dirname(os.path.abspath(m.__file__ or ""))
            for m in (cattino, meowcli, meowd)]
    return (*(d + os.sep for d in dirs), os.path.abspath(runpy_module.__file__ or "runpy"))


def user_frames(exc: BaseException) -> list[Any]:
    """The traceback's frames in the user's own files: meow's, runpy's and frozen
    importlib frames are left out wherever they are."""
    import traceback

    ours = _ours()
    return [f for f in traceback.extract_tb(exc.__traceback__)
            if not f.filename.startswith("<frozen")
            and not os.path.abspath(f.filename).startswith(ours)]


def describe_error(exc: BaseException, script: str) -> tuple[str, str]:
    """(one line: `file:line: Type: message` at the user's deepest frame, the user-only
    traceback for --traceback). Paths are shown relative to the current directory."""
    import traceback

    def where(filename: str, lineno: int | None) -> str:
        try:
            shown = os.path.relpath(filename)
        except ValueError:
            shown = filename
        if shown.startswith(".." + os.sep):
            shown = filename
        return f"{shown}:{lineno}" if lineno else shown

    message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    frames = user_frames(exc)
    if isinstance(exc, SyntaxError) and exc.filename:
        detail = exc.msg
        if exc.text and exc.text.strip():
            detail += f": {exc.text.strip()}"
        line = f"{where(exc.filename, exc.lineno)}: {type(exc).__name__}: {detail}"
    elif frames:
        line = f"{where(frames[-1].filename, frames[-1].lineno)}: {message.splitlines()[-1]}"
    else:
        line = f"{where(script, None)}: {message.splitlines()[-1]}"
    trace = "".join(["Traceback (your code only):\n", *traceback.format_list(frames),
                     *traceback.format_exception_only(type(exc), exc)])
    return line, trace
