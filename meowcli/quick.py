"""The frequent commands without typer: `list`, `show NAME`, `kill/cancel/resume/retry/
remove NAME`, `wait NAME...` and `test`, in their plain forms (at most `--json`).

typer (and what it imports) costs several times Python's own start, so these forms send a
plain request and print with the same `render` functions the typer commands use. Any other
form (an option, `--help`, a NAME that starts with `-`) returns None and typer parses it:
the two agree by construction on everything else, and tests/cli/test_quick.py checks that
both give the same output and exit status on a table of command lines. `MEOW_SLOW_CLI=1`
turns this path off.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from meowcli.errors import FAILED, report
from meowd.core.errors import MeowError
from meowd.core.framing import PROTOCOL_VERSION

BULK = ("kill", "cancel", "resume", "retry", "remove")


def _parse(argv: list[str]) -> tuple[str, list[str], bool, bool] | None:
    """(command, names, --json, --all) for the plain forms, else None."""
    if not argv or os.environ.get("MEOW_SLOW_CLI"):
        return None
    command, rest = argv[0], argv[1:]
    as_json, everything = "--json" in rest, "--all" in rest
    names = [a for a in rest if a not in ("--json", "--all")]
    if any(a.startswith("-") for a in names) or rest.count("--json") > 1 \
            or rest.count("--all") > 1 or (everything and command != "list"):
        return None
    forms = {"list": not names, "show": len(names) == 1, "test": not names and not as_json,
             "wait": bool(names)}
    forms.update({op: len(names) == 1 for op in BULK})
    return (command, names, as_json, everything) if forms.get(command) else None


def _call(op: str, args: dict[str, Any], autostart: bool = True,
          timeout: float | None = 60.0) -> Any:
    from meowcli.autostart import open_or_start
    from meowcli.connection import Connection

    message = {"v": PROTOCOL_VERSION, "op": op, "args": args}
    if autostart:
        with open_or_start(timeout=timeout) as connection:
            return connection.call_wire(message)
    with Connection(timeout=timeout).connect() as connection:
        return connection.call_wire(message)


def wait_for_tasks(names: list[str], everything: bool, timeout: float | None,
                   ) -> dict[str, Any]:
    """The daemon's answer once the tasks end. A daemon that is back within
    `RECONNECT_GRACE` seconds (kill -9 and a restart by systemd, an upgrade) is asked
    again, never started from here (`meow exit` must stay exited)."""
    from meowcli.connection import ConnectionLost

    deadline = None if timeout is None else time.monotonic() + timeout
    autostart = True
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return _call("wait", {"target": None, "targets": names, "all": everything,
                                  "timeout": left}, autostart=autostart, timeout=None)
        except ConnectionLost:
            autostart = False
            reconnect()


RECONNECT_GRACE = 5.0
"""Seconds `meow wait`/`watch` wait for a daemon that went away to be back."""


def reconnect() -> None:
    """Until a daemon answers again (at most RECONNECT_GRACE s), or a clear error."""
    from meowcli.connection import Connection, NotRunning

    print("meow: meowd went away; waiting for it to be back", file=sys.stderr)
    give_up = time.monotonic() + RECONNECT_GRACE
    while time.monotonic() < give_up:
        try:
            Connection(timeout=2).connect().close()
            return
        except (NotRunning, OSError, MeowError):
            time.sleep(0.2)
    raise MeowError(f"meowd went away and was not back within {RECONNECT_GRACE:g} s; the "
                    "tasks run on: wait again once meowd runs")


def main(argv: list[str]) -> int | None:
    """Run a plain form and return its exit status, or None to let typer do it."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    command, names, as_json, everything = parsed
    try:
        return _run(command, names, as_json, everything)
    except (MeowError, KeyboardInterrupt) as exc:
        return report(exc)


def _json(value: Any) -> str:
    import json  # ~8 ms: only when asked for

    return json.dumps(value) + "\n"


def _run(command: str, names: list[str], as_json: bool, everything: bool = False) -> int:
    out = sys.stdout.write
    if command != "test":
        from meowcli import render
    if command == "list":
        import gc

        # Up to 100,000 rows of containers that live until exit: the cyclic collector
        # would walk them again and again while they are built (a third of the time).
        gc.disable()
        recent = not (as_json or everything)
        reply = render.compact_reply(_call("list", {"columns": True, "recent": recent}),
                                     recent)
        if as_json:
            sys.stdout.flush()
            render.write_json_reply(reply, sys.stdout.buffer)
            return 0
        tasks = render.task_maps(reply)
        if reply["degraded"]:
            print(f"meow: warning: meowd is degraded: {reply['degraded']}; no task starts "
                  "until they are stored", file=sys.stderr)
        from meowd.core.listing import footer

        line = footer(reply["omitted"])
        out(render.render_tasks(tasks, time.time()) + ("" if line is None else f"\n{line}")
            + "\n")
        return 0
    if command == "show":
        task = _call("show", {"target": names[0]})
        out(_json(task) if as_json else render.render_show(task, time.time()) + "\n")
        return 0
    if command == "test":
        from meowcli.connection import NotRunning

        try:
            info = _call("ping", {}, autostart=False, timeout=5)
        except NotRunning as exc:
            out(exc.message + "\n")
            return FAILED
        out(f"meowd {info['version']} is running (pid {info['pid']}, devices: "
            f"{info['backend'] or 'none'})\n")
        if info.get("degraded"):
            print(f"meow: warning: degraded: {info['degraded']}; no task starts until they "
                  "are stored", file=sys.stderr)
        return 0
    if command == "wait":
        result = wait_for_tasks(names, False, None)
        if as_json:
            out(_json(result))
        else:
            for t in result["tasks"]:
                code = "" if t["exit_code"] is None else f" (exit {t['exit_code']})"
                out(f"{t['fullname']}: {t['status']}{code}\n")
        for t in result["tasks"]:
            if t["status"] != "done":
                return t["exit_code"] if t["exit_code"] not in (None, 0) else FAILED
        return 0
    args: dict[str, Any] = {"target": names[0], "regex": False}
    if command == "kill":
        args["force"] = False
    result = _call(command, args)
    if as_json:
        out(_json(result))
    else:
        report_, failures = render.render_bulk(command, result)
        if report_:
            out(report_ + "\n")
        if failures:
            print(failures, file=sys.stderr)
    return 0 if result["success"] else FAILED
