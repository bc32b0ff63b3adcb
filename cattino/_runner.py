"""Run one task with its lifecycle hooks, in the user's interpreter (never in meowd).

    python -m cattino._runner RUN_DIR LEAF

meowd starts this as the task's command when the task (or a group around it) overrides
`on_start`/`on_end`, or when the task is a Python callable. It runs the snapshot of the
task script taken by `meow create` (so later edits to the script do not change queued
tasks), finds leaf number LEAF among the exports, and then:

1. each enclosing group's `on_start`, outermost first, once per group: the first task
   of the group to start runs it, under a lock, the others wait for it;
2. the task's `on_start`; 3. the command or the callable; 4. the task's `on_end`;
5. each enclosing group's `on_end`, innermost first, run by the group's last task to end.

A hook that raises or outlives `hook_timeout` is reported: its traceback goes to the
task's stderr log and a one-line note to $MEOW_NOTE_FILE, which meowd shows on the task.
A failed `on_start` fails the task without running it; a failed `on_end` leaves the
exit code alone and shows as a warning. Exit code 100 (`exit_and_retry`) requeues the
task without end hooks: it has not ended yet.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import inspect
import json
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cattino import RETRY_EXIT_CODE
from cattino._capture import groups_of, leaves, run_script
from cattino.tasks import AbstractTask, ProcTask, TaskGroup

HOOK_FAILED = 97
"""Exit code of a task whose on_start (or a group's) failed: the command never ran."""


def note(message: str) -> None:
    """One line for meowd to show on the task (reason or warning)."""
    print(f"[meow] {message}", file=sys.stderr, flush=True)
    path = os.environ.get("MEOW_NOTE_FILE")
    if path:
        with open(path, "a") as f:
            f.write(message.replace("\n", " ")[:300] + "\n")


def call_hook(func: Callable[[], Any], label: str, timeout: float) -> bool:
    """Run a sync or async hook in a thread with a time limit. True if it succeeded."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            result = func()
            if inspect.isawaitable(result):
                async def wait() -> Any:
                    return await result

                asyncio.run(wait())
            outcome["ok"] = True
        except BaseException as exc:  # a hook's SystemExit is a failure too
            outcome["error"] = exc
            outcome["trace"] = traceback.format_exc()

    thread = threading.Thread(target=target, name=label, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        note(f"{label} timed out after {timeout:g}s (hook_timeout)")
        return False
    if "error" in outcome:
        sys.stderr.write(f"[meow] {label} raised:\n{outcome['trace']}")
        exc = outcome["error"]
        note(f"{label} raised {type(exc).__name__}: {exc}")
        return False
    return True


def _overrides(obj: AbstractTask, hook: str) -> bool:
    base = getattr(AbstractTask, hook)
    return getattr(type(obj), hook) is not base


class _GroupState:
    """Per-group markers under the run directory, guarded by a lock file."""

    def __init__(self, run_dir: Path, group: TaskGroup) -> None:
        key = hashlib.sha256(group.fullname.encode()).hexdigest()[:16]
        self.base = run_dir / "groups" / key
        self.base.mkdir(parents=True, exist_ok=True)
        self.group = group

    def locked(self) -> _Lock:
        return _Lock(self.base / "lock")

    @property
    def started(self) -> Path:
        return self.base / "started"

    @property
    def ended(self) -> Path:
        return self.base / "ended"


class _Lock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def run(run_dir: Path, leaf_index: int) -> int:
    meta = json.loads((run_dir / "meta.json").read_text())
    timeout = float(meta.get("hook_timeout", 300))
    source = (run_dir / "script.py").read_text()
    objects = run_script(meta["script"], meta["argv"], meta["seed"], source=source)
    found = leaves(objects)
    if len(found) != meta["leaves"]:
        note(f"{meta['script']} exported {len(found)} tasks when run again, not "
             f"{meta['leaves']}: a script with hooks must export the same tasks every run")
        return HOOK_FAILED
    task = found[leaf_index]
    groups = groups_of(task)
    keys = [_GroupState(run_dir, g) for g in groups]  # keyed before any rename below
    real = os.environ.get("MEOW_TASK_NAME", "")
    if real and real.rpartition("/")[2] != task.name:
        task._name = real.rpartition("/")[2]  # renamed by override_exist_tasks=rename

    for group, state in zip(groups, keys, strict=True):  # outermost first
        if not _overrides(group, "on_start"):
            continue
        with state.locked():
            if not state.started.exists():
                ok = call_hook(group.on_start, f"group {group.fullname} on_start", timeout)
                state.started.write_text("ok" if ok else "failed")
            if state.started.read_text() != "ok":
                note(f"not started: group {group.fullname} on_start failed")
                return HOOK_FAILED

    if _overrides(task, "on_start") and not call_hook(task.on_start, "on_start", timeout):
        return HOOK_FAILED

    code = _work(task)
    if code == RETRY_EXIT_CODE:
        return code

    if _overrides(task, "on_end"):
        call_hook(task.on_end, "on_end", timeout)

    position = {id(leaf): str(n) for n, leaf in enumerate(found)}
    for group, state in reversed(list(zip(groups, keys, strict=True))):  # innermost first
        members = {position[id(leaf)] for leaf in group.all_tasks}
        with state.locked():
            with open(state.ended, "a") as f:
                f.write(f"{leaf_index}\n")
            ended = set(state.ended.read_text().split())
            if ended >= members and _overrides(group, "on_end") \
                    and not (state.base / "on_end").exists():
                (state.base / "on_end").write_text("")
                call_hook(group.on_end, f"group {group.fullname} on_end", timeout)
    return code


def _work(task: Any) -> int:
    if isinstance(task, ProcTask) and task.is_callable:
        try:
            task.cmd()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            return 1
        return 0
    command = getattr(task, "cmd", None)
    if not isinstance(command, str):
        note(f"{type(task).__name__} has no command to run")
        return 1
    sys.stdout.flush()
    return subprocess.call(["/bin/sh", "-c", command])


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        print("usage: python -m cattino._runner RUN_DIR LEAF", file=sys.stderr)
        sys.exit(2)
    code = run(Path(argv[0]), int(argv[1]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # do not wait for a hung hook's thread


if __name__ == "__main__":
    main(sys.argv[1:])
