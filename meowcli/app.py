"""The `meow` commands (typer). Thin: parse, call the client, render."""

from __future__ import annotations

import functools
import json
import os
import select
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from meowcli import render
from meowcli.client import NotRunning, connect
from meowcli.create import CreateArgs
from meowcli.create import create as do_create
from meowd import __version__
from meowd.core.errors import MeowError
from meowd.core.protocol import WaitRequest
from meowd.core.units import parse_memory_request

app = typer.Typer(
    name="meow",
    help="meow: a GPU-aware local task queue. Queue commands; meowd runs each on free GPUs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
NameArg = Annotated[str | None, typer.Argument(
    help="Task fullname, group, or id; with -A a regex matched against whole fullnames.")]
AllOpt = Annotated[bool, typer.Option(
    "-A", "--all", help="NAME is a regular expression; without NAME, every task.")]


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every failure ends as one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MeowError as exc:
            typer.echo(f"meow: error: {exc.message}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"meow {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


def _memory(value: str) -> int | float:
    try:
        return parse_memory_request(value)
    except MeowError as exc:
        raise typer.BadParameter(exc.message) from None


@app.command()
@handle_errors
def create(
    input: Annotated[str, typer.Argument(
        help="The command to run, quoted (\"python train.py\"), or a task file (task.py) "
             "that builds tasks with the Cattino API and calls cattino.export().")],
    args: Annotated[list[str] | None, typer.Argument(
        help="Arguments after `--`, appended (shell-quoted) to the command.")] = None,
    task_name: Annotated[str | None, typer.Option(
        "-n", "--task-name", help="Task name (default: 5 random characters). With several "
        "tasks: NAME_1, NAME_2...")] = None,
    priority: Annotated[int | None, typer.Option(
        "-p", "--priority", help="Higher runs first; ties go to the older task. [default: 0, "
        "or the task file's]")] = None,
    requires_memory_per_device: Annotated[str | None, typer.Option(
        "-M", "--requires-memory-per-device",
        help="GPU memory per device: MiB (20000, 20GiB) or a ratio in (0,1] of each GPU's "
             "total. 0: any GPU, nothing reserved. [default: 0, or the task file's]")] = None,
    min_devices: Annotated[int | None, typer.Option(
        "-c", "--min-devices", help="GPUs the task needs; 0 runs it without a GPU. "
        "[default: 1, or the task file's]")] = None,
    multirun: Annotated[bool, typer.Option(
        "-m", "--multirun", help="Expand [a,b] and key=[a,b] arguments after -- into one task "
        "(or one run of the task file) per combination.")] = False,
    as_group: Annotated[str | None, typer.Option(
        "-g", "--as-group", help="Put every created task in this group (fullnames "
        "GROUP/name).")] = None,
    cwd: Annotated[str | None, typer.Option(
        "--cwd", help="Working directory (default: the current one).")] = None,
    enforce_memory: Annotated[bool, typer.Option(
        "--enforce-memory", help="Stop the task (failed) if it uses more GPU memory than -M. "
        "Without it, meow only warns.")] = False,
    secret: Annotated[list[str] | None, typer.Option(
        "--secret", help="NAME or NAME=VALUE: an environment value the task gets but meow "
        "never shows or logs (masked as ***). Repeatable.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue a command, or the tasks a Cattino task file exports. The daemon starts in
    the background if it is not running.

    Each task runs in the current directory with this shell's environment, with
    CUDA_VISIBLE_DEVICES set to the GPUs it is placed on. Magic strings ${task_name},
    ${fullname}, ${fullpath}, ${run_dir} and ${env:VAR} are filled in here.

    Examples: meow create "python train.py" -M 20GiB -- --lr 0.2;
    meow create "python train.py" -m -- --lr=[0.1,0.2] --bs [32,64]  (4 tasks);
    meow create pipeline.py -- --epochs 3  (runs pipeline.py, queues what it exports)
    """
    code = do_create(CreateArgs(
        input=input, args=list(args or []), task_name=task_name, priority=priority,
        requires_memory_per_device=None if requires_memory_per_device is None
        else _memory(requires_memory_per_device),
        min_devices=min_devices, cwd=cwd, json=as_json, enforce_memory=enforce_memory,
        multirun=multirun, as_group=as_group, secrets=list(secret or []),
    ))
    raise typer.Exit(code)


@app.command("list")
@handle_errors
def list_(
    attrs: Annotated[list[str] | None, typer.Argument(
        help="Show these attributes (columns) after the fullname, e.g. `status priority "
             "devices`; any key of --json works.")] = None,
    filter_: Annotated[str | None, typer.Option(
        "--filter", help="Only tasks matching, e.g. 'status==running', 'priority>1, "
        "name~^sweep' (== != > >= < <= ~regex; clauses joined by , or and).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List tasks: id, name, status, priority, GPUs, memory, peak GPU memory, exit code,
    times, and a note (why a task waits, or a warning)."""
    from meowcli.filters import parse_filter

    keep = parse_filter(filter_) if filter_ else None
    with connect() as client:
        tasks = sorted(client.list(), key=lambda t: t["id"])
    if keep is not None:
        tasks = [t for t in tasks if keep(t)]
    if as_json:
        typer.echo(json.dumps(tasks))
    elif attrs:
        typer.echo(render.render_attrs(tasks, attrs))
    else:
        typer.echo(render.render_tasks(tasks, time.time()))


@app.command()
@handle_errors
def show(name: Annotated[str, typer.Argument(help="Task fullname or id.")],
         as_json: JsonOpt = False) -> None:
    """Show one task in full: command, environment keys, GPUs, attempts, log paths, events."""
    with connect() as client:
        task = client.show(name)
    typer.echo(json.dumps(task) if as_json else render.render_show(task, time.time()))


def _bulk(op: str, name: str | None, all_: bool, as_json: bool, **extra: Any) -> None:
    with connect() as client:
        result = getattr(client, op)(name, all_, **extra)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        out, err = render.render_bulk(op, result)
        if out:
            typer.echo(out)
        if err:
            typer.echo(err, err=True)
    if not result["success"]:
        raise typer.Exit(1)


@app.command()
@handle_errors
def kill(name: NameArg = None, all_: AllOpt = False,
         force: Annotated[bool, typer.Option("-f", "--force", help="SIGKILL instead of SIGTERM.")]
         = False, as_json: JsonOpt = False) -> None:
    """Stop running tasks: SIGTERM to the task's process group (SIGKILL after a grace
    period, or at once with -f). The task ends as `killed`."""
    _bulk("kill", name, all_, as_json, force=force)


@app.command()
@handle_errors
def cancel(name: NameArg = None, all_: AllOpt = False, as_json: JsonOpt = False) -> None:
    """Cancel waiting tasks (and stop running ones); `meow resume` queues them again."""
    _bulk("cancel", name, all_, as_json)


@app.command()
@handle_errors
def resume(name: NameArg = None, all_: AllOpt = False, as_json: JsonOpt = False) -> None:
    """Queue cancelled tasks again."""
    _bulk("resume", name, all_, as_json)


@app.command()
@handle_errors
def remove(name: NameArg = None, all_: AllOpt = False, as_json: JsonOpt = False) -> None:
    """Forget tasks in any status (a running task is killed first). Logs stay on disk."""
    _bulk("remove", name, all_, as_json)


@app.command()
@handle_errors
def devices(as_json: JsonOpt = False) -> None:
    """Each GPU: total, used by meow tasks, used by others, reserved, free (MiB)."""
    with connect() as client:
        result = client.devices()
    typer.echo(json.dumps(result) if as_json else render.render_devices(result))


def _follow(path: str, done: Callable[[], bool], first: bool = True) -> None:
    """Print a file as it grows until `done()`; the first read collapses progress bars."""
    while not os.path.exists(path):
        if done():
            return
        time.sleep(0.05)
    with open(path, "rb") as f:
        data = f.read()
        sys.stdout.write(render.collapse_progress(data.decode(errors="replace")))
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
                finished = done()
                if not finished:
                    time.sleep(0.1)


@app.command()
@handle_errors
def watch(
    name: Annotated[str | None, typer.Argument(
        help="Task fullname or id; without one, follow the daemon's log.")] = None,
    stream: Annotated[str, typer.Option("-s", "--stream", help="stdout or stderr.")] = "stdout",
) -> None:
    """Follow a task's output; returns when the task ends."""
    if stream not in ("stdout", "stderr"):
        raise MeowError(f"--stream must be stdout or stderr, not {stream!r}")
    client = connect()
    if name is None:
        _follow(str(client.paths.daemon_log), lambda: False)
        return
    task = client.show(name)
    while task["status"] == "waiting":
        time.sleep(0.2)
        task = client.show(name)
    if not task["attempt_list"]:
        typer.echo(f"meow: {task['fullname']} is {task['status']} and never ran", err=True)
        raise typer.Exit(1)
    path = task["attempt_list"][-1][stream]
    waiter = connect()
    waiter.send(WaitRequest(name))

    def ended() -> bool:
        return bool(select.select([waiter], [], [], 0)[0])

    _follow(path, ended)
    final = waiter.receive()
    typer.echo(f"[meow] {final['fullname']} {final['status']}"
               + (f" (exit {final['exit_code']})" if final["exit_code"] is not None else ""),
               err=True)


@app.command("run")
def run_(verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logging.")] = False
        ) -> None:
    """Run the daemon in the foreground, logging what it does; Ctrl-C stops it
    (running tasks keep running and are re-adopted by the next daemon)."""
    try:
        info = connect(timeout=5).ping()
    except MeowError:
        info = None
    if info:
        typer.echo(f"meow: meowd is already running (pid {info['pid']}); "
                   "`meow watch` follows its log, `meow exit` stops it", err=True)
        raise typer.Exit(1)
    from meowd.main import run_daemon

    raise typer.Exit(run_daemon(verbose))


@app.command("exit")
@handle_errors
def exit_(
    kill_tasks: Annotated[bool, typer.Option(
        "--kill", help="Kill running tasks first (default: they keep running).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop the daemon. Queued tasks stay queued on disk; running tasks keep running and
    are re-adopted by the next daemon, unless --kill."""
    client = connect(timeout=None)
    result = client.exit(kill_tasks)
    client.wait_closed()
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo("meowd stopped" + (
            f"; {result['running']} running task(s) "
            + ("killed" if kill_tasks else "left running") if result["running"] else ""))


@app.command("test")
@handle_errors
def test_(name: Annotated[str | None, typer.Argument(help="Task fullname or id.")] = None
          ) -> None:
    """Check the daemon is up, or whether a task is running."""
    try:
        client = connect(timeout=5)
    except NotRunning as exc:
        typer.echo(exc.message)
        raise typer.Exit(1) from None
    with client:
        if name is None:
            info = client.ping()
            typer.echo(f"meowd {info['version']} is running (pid {info['pid']}, "
                       f"devices: {info['backend'] or 'none'})")
            return
        task = client.show(name)
    if task["status"] == "running":
        typer.echo(f"{task['fullname']} is running with PID {task['pid']}")
    else:
        typer.echo(f"{task['fullname']} is not running ({task['status']})")
        raise typer.Exit(1)


def _setting_value(text: str) -> Any:
    """`true`, `3`, `0.5`, `[0, 1]`, or else the text itself (as TOML would read it)."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


@app.command("set")
@handle_errors
def set_(
    key: Annotated[str, typer.Argument(
        help="A setting (see below), or TASK.ATTR with ATTR one of name, priority, "
             "requires_memory_per_device, min_devices.")],
    value: Annotated[str, typer.Argument(help="The new value.")],
    as_json: JsonOpt = False,
) -> None:
    """Change a daemon setting (kept in the config file) or a task's attribute.

    Settings: visible_devices [0,1] | starvation_guard true | reserve_after 600 |
    placement spread/pack/first | head_of_line false | cascade_cancel_on_failure false |
    override_exist_tasks forbid/rename/allow | shutdown_on_complete false |
    hook_timeout 300 | max_attempts 10 | cpu_slots N | kill_grace 10 | fake_gpus 4x80GiB.
    Task attributes change where and when a waiting task runs: meow set train.priority 5.
    """
    from meowd.config import Settings, check_setting, save_setting
    from meowd.core.paths import resolve_paths
    from meowd.core.units import parse_memory_request

    setting = key.replace("-", "_")
    if setting in Settings.__dataclass_fields__:
        parsed = _setting_value(value)
        try:
            with connect() as client:
                result = client.set_setting(setting, parsed)
        except NotRunning:
            checked = check_setting(setting, parsed)
            path = save_setting(resolve_paths(), setting, checked)
            result = {"key": setting, "value": checked, "config": str(path),
                      "restart_needed": False}
        if as_json:
            typer.echo(json.dumps(result))
        else:
            typer.echo(f"{setting} = {json.dumps(result['value'])} (saved in {result['config']})"
                       + ("; takes effect when meowd restarts (`meow exit`)"
                          if result["restart_needed"] else ""))
        return
    target, dot, attr = key.rpartition(".")
    if not dot or not target:
        from meowd.core.errors import BadRequest

        raise BadRequest(f"{key!r} is neither a setting nor TASK.ATTR "
                         f"(settings: {', '.join(Settings.__dataclass_fields__)})")
    parsed: Any = value
    if attr in ("priority", "min_devices"):
        parsed = _setting_value(value)
    elif attr == "requires_memory_per_device":
        parsed = parse_memory_request(value)
    with connect() as client:
        task = client.set_task(target, attr, parsed)
    if as_json:
        typer.echo(json.dumps(task))
    else:
        typer.echo(f"{task['fullname']}.{attr} = {json.dumps(task[attr])}")


@app.command("clean")
@handle_errors
def clean(
    before: Annotated[str | None, typer.Option(
        "-b", "--before", help="Tasks that ended before this date (YYYY[-MM[-DD[ HH[:MM]]]]; "
        "a partial date means the end of that period).")] = None,
    after: Annotated[str | None, typer.Option(
        "-a", "--after", help="Tasks that ended after this date.")] = None,
    all_: Annotated[bool, typer.Option("-A", "--all", help="Every finished task.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Name each task.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Forget finished tasks (done, failed, killed, lost) and delete their logs.
    Waiting, running and cancelled tasks are never touched."""
    from meowcli.timeparse import parse_when

    with connect() as client:
        result = client.clean(parse_when(before) if before else None,
                              parse_when(after) if after else None, all_)
    removed = result["removed"]
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"cleaned {len(removed)} task(s)" + (": " + ", ".join(removed)
                                                    if verbose and removed else ""))


@app.command("top")
def top(demo: Annotated[bool, typer.Option(
        "--demo", help="Show made-up data instead of connecting (to try the keys).")] = False,
        ) -> None:
    """A live monitor: GPUs with their memory split (meow, others, reserved, free), the
    task tree with why each waiting task waits, and the selected task's log. Keys are
    listed at the bottom; q quits. Updates are pushed by meowd as they happen."""
    from meowcli.top import MeowTop, StaticSource, demo_state

    MeowTop(StaticSource(demo_state(time.time())) if demo else None).run()


@app.command("meow")
def meow_() -> None:
    """Print the version."""
    typer.echo(f"meow {__version__} =^.^=")


daemon_app = typer.Typer(help="Run and install the daemon.", no_args_is_help=True)
app.add_typer(daemon_app, name="daemon")


@daemon_app.command("install-systemd")
@handle_errors
def install_systemd(
    directory: Annotated[str | None, typer.Option(
        "--dir", help="Where to write the units [default: ~/.config/systemd/user]")] = None,
    print_only: Annotated[bool, typer.Option(
        "--print", help="Print the units instead of writing them.")] = False,
) -> None:
    """Write the systemd user units meowd.service (Type=notify, KillMode=process, so
    tasks survive a restart) and meowd.socket (socket activation) for this meow."""
    import shutil as sh
    from pathlib import Path

    from meowd.core.paths import resolve_paths
    from meowd.systemd import unit_files

    meowd = sh.which("meowd") or str(Path(sys.executable).with_name("meowd"))
    env = {k: v for k, v in os.environ.items() if k in ("MEOW_HOME", "MEOW_FAKE_GPUS")}
    units = unit_files(os.path.abspath(meowd), str(resolve_paths().socket), env)
    if print_only:
        for name, text in units.items():
            typer.echo(f"# --- {name}\n{text}")
        return
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    target = Path(directory) if directory else Path(config) / "systemd" / "user"
    target.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (target / name).write_text(text)
        typer.echo(f"wrote {target / name}")
    typer.echo("next: systemctl --user daemon-reload && "
               "systemctl --user enable --now meowd.socket meowd.service")


def run(argv: list[str]) -> None:
    app(args=argv, prog_name="meow")
