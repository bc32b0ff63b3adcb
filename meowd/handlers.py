"""One handler per request type; each is a thin call into the controller."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from meowd import __version__, views
from meowd.controller import Controller
from meowd.core.errors import NotFound
from meowd.core.models import Task
from meowd.core.protocol import (
    PROTOCOL_VERSION,
    CancelRequest,
    CleanRequest,
    CreateRequest,
    DevicesRequest,
    ExitRequest,
    KillRequest,
    ListRequest,
    PingRequest,
    RemoveRequest,
    ReplyWithTail,
    Request,
    ResumeRequest,
    RetryRequest,
    SetSettingRequest,
    SetTaskRequest,
    ShowRequest,
    SubscribeRequest,
    UsageRequest,
    WaitRequest,
)

Handler = Callable[[Controller, Any], Awaitable[Any]]
_STARTED = time.time()


async def ping(c: Controller, r: PingRequest) -> dict[str, Any]:
    return {"version": __version__, "protocol": PROTOCOL_VERSION, "pid": os.getpid(),
            "started_at": _STARTED, "backend": c.backend.name if c.backend else None,
            "state": str(c.paths.state), "degraded": c.store.degraded}


async def create(c: Controller, r: CreateRequest) -> list[dict[str, Any]]:
    return c.create(r)


async def list_(c: Controller, r: ListRequest
                ) -> list[dict[str, Any]] | dict[str, Any] | ReplyWithTail:
    if not r.columns:
        return [c.public(t) for t in c.tasks.values()]
    tasks: Iterable[Task] = c.tasks.values()
    omitted = {"waiting": 0, "finished": 0}
    if r.recent:
        tasks, omitted = views.recent(c)
    if r.json:
        body = views.json_list(c, tasks)  # by id, as the CLI printed them
        return ReplyWithTail({"tail_bytes": len(body), "total": len(c.tasks),
                              "degraded": c.store.degraded}, body)
    return {"columns": views.COLUMNS, "rows": views.rows(c, tasks), "total": len(c.tasks),
            "omitted": omitted, "degraded": c.store.degraded}


async def show(c: Controller, r: ShowRequest) -> dict[str, Any]:
    return c.show(c.get(r.target))


async def wait(c: Controller, r: WaitRequest) -> dict[str, Any]:
    if r.target is not None and not r.targets and not r.all:
        task = c.get(r.target)
        await c.wait(task)
        return c.public(task)
    tasks = list(c.tasks.values()) if r.all else []
    for target in (*r.targets, *([r.target] if r.target else [])):
        found = c.find(target, many=True)
        if not found:
            raise NotFound(f"no task {target!r}")
        tasks += [t for t in found if t not in tasks]
    waits = [asyncio.ensure_future(c.wait(t)) for t in tasks]
    timed_out = False
    if waits:
        _, pending = await asyncio.wait(waits, timeout=r.timeout)
        timed_out = bool(pending)
        for future in pending:
            future.cancel()
    return {"tasks": [c.public(t) for t in tasks], "timed_out": timed_out}


async def usage(c: Controller, r: UsageRequest) -> dict[str, Any]:
    return views.usage(c, c.get(r.target))


async def retry(c: Controller, r: RetryRequest) -> dict[str, Any]:
    return c.retry(r.selector).to_wire()


async def kill(c: Controller, r: KillRequest) -> dict[str, Any]:
    return c.kill(r.selector, r.force).to_wire()


async def cancel(c: Controller, r: CancelRequest) -> dict[str, Any]:
    return c.cancel(r.selector).to_wire()


async def resume(c: Controller, r: ResumeRequest) -> dict[str, Any]:
    return c.resume(r.selector).to_wire()


async def remove(c: Controller, r: RemoveRequest) -> dict[str, Any]:
    return c.remove(r.selector).to_wire()


async def devices(c: Controller, r: DevicesRequest) -> dict[str, Any]:
    return c.devices()


async def exit_(c: Controller, r: ExitRequest) -> dict[str, Any]:
    # The daemon acts on it once the reply is written (see Server._answer).
    return {"running": len(c.running), "kill": r.kill}


async def set_task(c: Controller, r: SetTaskRequest) -> dict[str, Any]:
    task = c.get(r.target)
    c.set_task(task, r.attr, r.value)
    return c.public(task)


async def set_setting(c: Controller, r: SetSettingRequest) -> dict[str, Any]:
    return c.set_setting(r.key, r.value)


async def clean(c: Controller, r: CleanRequest) -> dict[str, Any]:
    return {"removed": c.clean(r.before, r.after, r.all)}


async def subscribe(c: Controller, r: SubscribeRequest) -> dict[str, Any]:
    return c.state()  # the server streams further states (see Server._push)


HANDLERS: dict[type[Request], Handler] = {
    PingRequest: ping, CreateRequest: create, ListRequest: list_, ShowRequest: show,
    WaitRequest: wait, KillRequest: kill, CancelRequest: cancel, ResumeRequest: resume,
    RemoveRequest: remove, DevicesRequest: devices, ExitRequest: exit_,
    SetTaskRequest: set_task, SetSettingRequest: set_setting, CleanRequest: clean,
    SubscribeRequest: subscribe, RetryRequest: retry, UsageRequest: usage,
}


async def dispatch(controller: Controller, request: Request) -> Any:
    return await HANDLERS[type(request)](controller, request)
