"""Handles on queued tasks, from any later Python process (Inductiva-style):

    import cattino
    t = cattino.handle("sweep/lr_1")        # or an id: cattino.handle(42)
    t.status, t.exit_code                   # asked of the daemon each time
    t.wait(timeout=600)                     # the daemon answers when it ends (no polling)
    with t.sync_context():                  # Ctrl-C in the block kills the task
        t.wait()
    print(t.logs()); print(t.resource_usage())

And, inside a running task: `cattino.remaining_time()` (seconds before its time limit, None
when it has none); `raise cattino.GracefulTimeout()` stops it as timed out, not failed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

GRACEFUL_TIMEOUT_EXIT = 124
"""Mirrors meowd.core.lifecycle.GRACEFUL_TIMEOUT_EXIT (kept literal: task code imports
nothing of the daemon)."""

_ENDED = {"done", "failed", "killed", "lost", "timeout", "cancelled"}


class GracefulTimeout(SystemExit):
    """Raise it when the time limit nears (or on its SIGTERM) after saving a checkpoint:
    the task exits with code 124 and meow records it as timed out, not failed; a
    resumable task is then queued again with its run directory kept."""

    def __init__(self, message: str = "stopping before the time limit") -> None:
        super().__init__(GRACEFUL_TIMEOUT_EXIT)
        self.message = message


def remaining_time() -> float | None:
    """Seconds left before this task's time limit; None when unlimited (or not in a task)."""
    deadline = os.environ.get("MEOW_DEADLINE")
    if not deadline:
        return None
    try:
        return max(0.0, float(deadline) - time.time())
    except ValueError:
        return None


def _client() -> Any:
    from meowcli.client import connect  # the socket client, only when a handle asks

    return connect(autostart=False, timeout=None)


def _show(target: str) -> dict[str, Any]:
    with _client() as c:
        return c.show(target)


class TaskHandle:
    """One task of the queue, by id or fullname. Every property asks the daemon."""

    def __init__(self, target: int | str) -> None:
        info = _show(str(target))
        self.id: int = info["id"]
        self.fullname: str = info["fullname"]

    def __repr__(self) -> str:
        return f"TaskHandle({self.id}, {self.fullname!r})"

    def _show(self) -> dict[str, Any]:
        return _show(str(self.id))

    @property
    def info(self) -> dict[str, Any]:
        """Everything `meow show --json` says."""
        return self._show()

    @property
    def status(self) -> str:
        return self._show()["status"]

    @property
    def exit_code(self) -> int | None:
        return self._show()["exit_code"]

    def wait(self, timeout: float | None = None) -> str:
        """Block until the task ends (or `timeout` seconds pass); returns its status."""
        from meowd.core.protocol import WaitRequest

        with _client() as c:
            result = c.call(WaitRequest(targets=(str(self.id),), timeout=timeout))
        if result["timed_out"]:
            raise TimeoutError(f"{self.fullname} still {result['tasks'][0]['status']} "
                               f"after {timeout}s")
        return result["tasks"][0]["status"]

    def kill(self, force: bool = False) -> None:
        with _client() as c:
            c.kill(str(self.id), False, force)

    def logs(self, stream: str = "stdout") -> str:
        """The latest attempt's stdout (or stderr) so far."""
        attempts = self._show()["attempt_list"]
        if not attempts:
            return ""
        try:
            return Path(attempts[-1][stream]).read_text(errors="replace")
        except OSError:
            return ""

    def resource_usage(self) -> list[dict[str, Any]]:
        """Per attempt: runtime, peak RSS, CPU seconds, peak GPU memory per device."""
        from meowd.core.protocol import UsageRequest

        with _client() as c:
            return c.call(UsageRequest(str(self.id)))["attempts"]

    @contextmanager
    def sync_context(self) -> Iterator[TaskHandle]:
        """Wait inside the block; if it is interrupted (Ctrl-C, an exception) while the
        task still runs, kill the task."""
        try:
            yield self
        except BaseException:
            if self.status not in _ENDED:
                self.kill()
            raise


def handle(target: int | str) -> TaskHandle:
    """A handle on a queued task by id or fullname (raises if there is no such task)."""
    return TaskHandle(target)


def resource_usage(target: int | str) -> list[dict[str, Any]]:
    return handle(target).resource_usage()
