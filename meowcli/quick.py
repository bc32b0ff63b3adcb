"""The frequent commands without typer: `list`, `show NAME`, `kill/cancel/resume/retry/
remove NAME|-A`, `wait NAME...|-A` and `test [NAME]`, with the options of
`options.QUICK_OPTIONS` (`--json`, `-A`, `kill -f`, `wait --timeout`).

typer (and what it imports) costs several times Python's own start, so these forms are
parsed here from the same option rows typer reads, and run by the functions below, which
the typer commands call too. Any other form (another option, `--help`, `-Af`, a NAME that
starts with `-`, `--`, a value typer would refuse) returns None and typer parses it.
tests/cli/test_quick.py checks that both give the same output and exit status on a table
of command lines. `MEOW_SLOW_CLI=1` turns this path off.
"""

from __future__ import annotations

import os
import sys
import time

from meowcli.errors import FAILED, report
from meowcli.options import QUICK_OPTIONS
from meowd.core.errors import BadRequest, MeowError
from meowd.core.framing import PROTOCOL_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs this path start-up time
    from collections.abc import Callable
    from typing import Any

    from meowcli.connection import Connection

BULK = ("kill", "cancel", "resume", "retry", "remove")


def _parse(argv: list[str]) -> tuple[str, list[str], dict[str, Any]] | None:
    """(command, names, option values by dest) for the forms this path runs, else None."""
    if not argv or os.environ.get("MEOW_SLOW_CLI") or argv[0] not in QUICK_OPTIONS:
        return None
    command, rest = argv[0], argv[1:]
    by_flag = {flag: o for o in QUICK_OPTIONS[command] for flag in o.flags}
    values: dict[str, Any] = {}
    names: list[str] = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        if not arg.startswith("-") or arg == "-":
            names.append(arg)
        else:
            flag, eq, text = arg.partition("=") if arg.startswith("--") else (arg, "", "")
            option = by_flag.get(flag)
            if option is None or (eq and option.kind == "flag"):
                return None  # --help, --, -Af, another command's option: typer says
            if option.kind == "flag":
                values[option.dest] = True
            else:
                if not eq:
                    if i + 1 >= len(rest):
                        return None
                    i += 1
                    text = rest[i]
                try:
                    values[option.dest] = float(text) if option.kind == "float" else text
                except ValueError:
                    return None  # typer's message
        i += 1
    forms = {"list": not names, "show": len(names) == 1, "test": len(names) <= 1,
             "wait": True, "watch": len(names) <= 1}
    forms.update({op: len(names) <= 1 for op in BULK})
    return (command, names, values) if forms[command] else None


def _open(autostart: bool = True, timeout: float | None = 60.0) -> Connection:
    """A connection to meowd; with `autostart`, meowd is started (and that said on
    stderr) when none runs, else NotRunning."""
    from meowcli.connection import Connection, NotRunning

    try:
        return Connection(timeout=timeout).connect()
    except NotRunning:
        if not autostart:
            raise
    from meowcli.autostart import open_or_start  # only when meowd must be started

    return open_or_start(timeout=timeout)


def _message(op: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "op": op, "args": args}


def _call(op: str, args: dict[str, Any], autostart: bool = True,
          timeout: float | None = 60.0, then: tuple[str, ...] = (),
          tail_to: Any = None) -> Any:
    """The result of `op`; with `then`, a list: the results of `op` and of each op in
    `then` (no arguments), asked on one connection. `tail_to`: where raw bytes that
    follow the reply go (Connection.call_wire)."""
    with _open(autostart, timeout) as connection:
        result = connection.call_wire(_message(op, args), tail_to)
        if not then:
            return result
        return [result, *(connection.call_wire(_message(more, {})) for more in then)]


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
    """Run a form this path parses and return its exit status, or None to let typer."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    command, names, values = parsed
    as_json = bool(values.get("json"))
    try:
        if command in BULK:
            return bulk(command, names[0] if names else None, bool(values.get("all")),
                        as_json, bool(values.get("force")))
        if command == "wait":
            return wait(names, bool(values.get("all")), values.get("timeout"), as_json)
        if command == "test":
            return test(names[0] if names else None)
        if command == "watch":
            return watch(names[0] if names else None, values.get("stream", "stdout"))
        return _run(command, names, as_json, bool(values.get("all")))
    except (MeowError, KeyboardInterrupt) as exc:
        return report(exc)


def _json(value: Any) -> str:
    import json  # ~4 ms with the `re` it loads: only when asked for

    return json.dumps(value) + "\n"


def _run(command: str, names: list[str], as_json: bool, everything: bool = False) -> int:
    out = sys.stdout.write
    from meowcli import render

    if command == "list":
        import gc

        # Up to 100,000 rows of containers that live until exit: the cyclic collector
        # would walk them again and again while they are built (a third of the time).
        gc.disable()
        if as_json:
            # The daemon writes the JSON; it comes after the reply, straight to stdout.
            from meowcli.connection import OutputClosed

            sys.stdout.flush()
            try:
                result = _call("list", {"columns": True, "recent": False, "json": True},
                               tail_to=sys.stdout.buffer)
                if "tail_bytes" in result:
                    sys.stdout.buffer.write(b"\n")
                else:  # a daemon from before: columns and rows, encoded here
                    render.write_json_reply(render.compact_reply(result, False),
                                            sys.stdout.buffer)
                sys.stdout.buffer.flush()
            except (OutputClosed, BrokenPipeError):  # `| head` has what it wanted
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        recent = not everything
        reply = render.compact_reply(_call("list", {"columns": True, "recent": recent}),
                                     recent)
        tasks = render.task_maps(reply)
        if reply["degraded"]:
            print(f"meow: warning: meowd is degraded: {reply['degraded']}; no task starts "
                  "until they are stored", file=sys.stderr)
        from meowd.core.listing import footer

        line = footer(reply["omitted"])
        out(render.render_tasks(tasks, time.time()) + ("" if line is None else f"\n{line}")
            + "\n")
        return 0
    task = _call("show", {"target": names[0]})
    out(_json(task) if as_json else render.render_show(task, time.time()) + "\n")
    return 0


def test(name: str | None) -> int:
    """`meow test [NAME]`: 0 if meowd runs (and NAME is running), else 1. Never starts
    meowd."""
    from meowcli.connection import NotRunning

    out = sys.stdout.write
    try:
        if name is not None:
            task = _call("show", {"target": name}, autostart=False, timeout=5)
        else:
            info = _call("ping", {}, autostart=False, timeout=5)
    except NotRunning as exc:
        out(exc.message + "\n")
        return FAILED
    if name is not None:
        if task["status"] == "running":
            out(f"{task['fullname']} is running with PID {task['pid']}\n")
            return 0
        out(f"{task['fullname']} is not running ({task['status']})\n")
        return FAILED
    out(f"meowd {info['version']} is running (pid {info['pid']}, devices: "
        f"{info['backend'] or 'none'})\n")
    if info.get("degraded"):
        print(f"meow: warning: degraded: {info['degraded']}; no task starts until they "
              "are stored", file=sys.stderr)
    return 0


def bulk(op: str, name: str | None, everything: bool, as_json: bool,
         force: bool = False) -> int:
    """`meow kill/cancel/resume/retry/remove NAME|-A`: report per task; 1 when nothing
    succeeded."""
    if name is None and not everything:
        raise BadRequest(f"give a task NAME, or -A for every task (meow {op} --help)")
    args: dict[str, Any] = {"target": name, "regex": everything}
    if op == "kill":
        args["force"] = force
    result = _call(op, args)
    if as_json:
        sys.stdout.write(_json(result))
    else:
        from meowcli import render

        report_, failures = render.render_bulk(op, result)
        if report_:
            sys.stdout.write(report_ + "\n")
        if failures:
            print(failures, file=sys.stderr)
    return 0 if result["success"] else FAILED


def wait(names: list[str], everything: bool, timeout: float | None, as_json: bool) -> int:
    """`meow wait NAME...|-A [--timeout S]`: 0 if every task is done, else the first
    unsuccessful one's exit code (1 without one), 124 on time-out. The daemon answers
    when the last one ends: nothing here polls."""
    if not names and not everything:
        raise BadRequest("wait for what? give task names, or -A for every task "
                         "(meow wait --help)")
    if timeout is not None and not 0 <= timeout < float("inf"):  # NaN fails this too
        raise BadRequest(f"--timeout must be 0 or more seconds, not {timeout:g}")
    result = wait_for_tasks(names, everything, timeout)
    if as_json:
        sys.stdout.write(_json(result))
    else:
        for t in result["tasks"]:
            code = "" if t["exit_code"] is None else f" (exit {t['exit_code']})"
            sys.stdout.write(f"{t['fullname']}: {t['status']}{code}\n")
    if result["timed_out"]:
        return 124
    for t in result["tasks"]:
        if t["status"] != "done":
            return t["exit_code"] if t["exit_code"] not in (None, 0) else FAILED
    return 0


# -- watch -------------------------------------------------------------------------------------
def watch(name: str | None, stream: str = "stdout") -> int:
    """`meow watch [NAME] [-s stdout|stderr]`: follow a task's output until it ends and
    return what `meow watch` exits with (the daemon's log, without NAME: until Ctrl-C)."""
    from meowcli.connection import ConnectionLost

    if stream not in ("stdout", "stderr"):
        raise BadRequest(f"--stream must be stdout or stderr, not {stream!r}")
    client = _open()
    if name is None:
        _follow(str(client.paths.daemon_log), _sleep)
        return 0
    task = client.call_wire(_message("show", {"target": name}))
    while task["status"] == "waiting":  # a start is not pushed: ask again
        time.sleep(0.2)
        task = client.call_wire(_message("show", {"target": name}))
    if not task["attempt_list"]:
        client.close()
        print(f"meow: {task['fullname']} is {task['status']} and never ran", file=sys.stderr)
        return FAILED
    path = task["attempt_list"][-1][stream]

    def waiting() -> Connection:
        """A connection that waits for the task's end. After the first, never one that
        starts meowd: `meow exit` stays exited."""
        waiter = _open(autostart=False)
        waiter.send_wire(_message("wait", {"target": name}))
        return waiter

    try:  # on the connection that asked: meowd cannot slip away in between unseen
        client.send_wire(_message("wait", {"target": name}))
        waiter = client
    except OSError:  # it went away since
        reconnect()
        waiter = waiting()
    final: dict[str, Any] = {}

    def ended(timeout: float) -> bool:
        nonlocal waiter
        import select

        if not select.select([waiter], [], [], timeout)[0]:
            return False
        try:
            final.update(waiter.receive())  # type: ignore[arg-type]
            return True
        except ConnectionLost:  # meowd restarted: the task runs on; so does the watch
            reconnect()  # never starts a daemon: `meow exit` stays exited
            waiter = waiting()
            return False

    _follow(path, ended)
    print(f"[meow] {final['fullname']} {final['status']}"
          + (f" (exit {final['exit_code']})" if final["exit_code"] is not None else ""),
          file=sys.stderr)
    return task_exit_status(final)


def _follow(path: str, done: Callable[[float], bool]) -> None:
    """Print a file as it grows until `done(timeout)`, which waits up to `timeout` s for
    the end (so an end that comes is seen at once, not after a sleep); the first read
    collapses progress bars."""
    from meowcli.render import collapse_progress

    while not os.path.exists(path):
        if done(0.05):
            return
    with open(path, "rb") as f:
        data = f.read()
        sys.stdout.write(collapse_progress(data.decode(errors="replace")))
        sys.stdout.flush()
        finished = False
        while True:
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            elif finished:
                return
            else:
                finished = done(0.1)


def _sleep(seconds: float) -> bool:
    """`done` for a follow that never ends (the daemon's log)."""
    time.sleep(seconds)
    return False


def task_exit_status(task: dict[str, Any]) -> int:
    """What `meow watch` exits with: the task's own exit code (1 when it ended without
    one, or with one outside 0-255)."""
    code = task.get("exit_code")
    if task["status"] == "done":
        return 0
    if isinstance(code, int) and 0 < code <= 255:
        return code
    return FAILED
