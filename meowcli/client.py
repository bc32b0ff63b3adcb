"""A blocking client for meowd: one method per request (over `Connection`)."""

from __future__ import annotations

from typing import Any

from meowcli.connection import Connection, NotRunning, start_daemon
from meowcli.render import compact_reply, task_maps
from meowd.core.protocol import (
    CancelRequest,
    CleanRequest,
    CreateRequest,
    DevicesRequest,
    ExitRequest,
    KillRequest,
    ListRequest,
    PingRequest,
    RemoveRequest,
    Request,
    ResumeRequest,
    RetryRequest,
    Selector,
    SetSettingRequest,
    SetTaskRequest,
    ShowRequest,
    TaskSpec,
    WaitRequest,
    request_to_wire,
)

__all__ = ["Client", "NotRunning", "connect", "start_daemon"]


class Client(Connection):
    def send(self, request: Request) -> None:
        self.send_wire(request_to_wire(request))

    def call(self, request: Request) -> Any:
        return self.call_wire(request_to_wire(request))

    # -- requests ------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        return self.call(PingRequest())

    def create(self, tasks: list[TaskSpec], cwd: str, env: dict[str, str]) -> list[dict]:
        return self.call(CreateRequest(tuple(tasks), cwd, env))

    def list(self) -> list[dict[str, Any]]:
        """Every task, one map each (as `meow list --json` prints them)."""
        return task_maps(self.listing(recent=False))

    def listing(self, recent: bool) -> dict[str, Any]:
        """The compact reply: columns and rows; with `recent`, `meow list`'s bounded view."""
        return compact_reply(self.call(ListRequest(columns=True, recent=recent)), recent)

    def show(self, target: str) -> dict[str, Any]:
        return self.call(ShowRequest(target))

    def wait(self, target: str) -> dict[str, Any]:
        return self.call(WaitRequest(target))

    def kill(self, target: str | None, regex: bool, force: bool = False) -> dict[str, Any]:
        return self.call(KillRequest(Selector(target, regex), force))

    def cancel(self, target: str | None, regex: bool) -> dict[str, Any]:
        return self.call(CancelRequest(Selector(target, regex)))

    def resume(self, target: str | None, regex: bool) -> dict[str, Any]:
        return self.call(ResumeRequest(Selector(target, regex)))

    def retry(self, target: str | None, regex: bool) -> dict[str, Any]:
        return self.call(RetryRequest(Selector(target, regex)))

    def remove(self, target: str | None, regex: bool) -> dict[str, Any]:
        return self.call(RemoveRequest(Selector(target, regex)))

    def devices(self) -> dict[str, Any]:
        return self.call(DevicesRequest())

    def exit(self, kill: bool = False) -> dict[str, Any]:
        return self.call(ExitRequest(kill))

    def set_task(self, target: str, attr: str, value: Any) -> dict[str, Any]:
        return self.call(SetTaskRequest(target, attr, value))  # checked by the daemon

    def set_setting(self, key: str, value: Any) -> dict[str, Any]:
        return self.call(SetSettingRequest(key, value))

    def clean(self, before: float | None, after: float | None, all: bool) -> dict[str, Any]:
        return self.call(CleanRequest(before, after, all))


def connect(autostart: bool = False, timeout: float | None = 60.0) -> Client:
    """A connected client; with `autostart`, meowd is started (and that said on stderr)
    when none runs, else NotRunning."""
    if autostart:
        from meowcli.autostart import open_or_start

        client = open_or_start(Client, timeout)
    else:
        client = Client(timeout=timeout).connect()
    assert isinstance(client, Client)
    return client
