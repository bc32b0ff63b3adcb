"""The `meow` commands (typer). Thin: parse, call the client, render.

Errors are not printed here: they propagate to `run()` at the bottom, which prints one
line and exits with a status from meowcli/errors.py. Help is plain text (no rich markup,
so `[a,b]` and `[default: ...]` survive).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, Any

import typer

from meowcli import render
from meowcli.client import Client, NotRunning, connect
from meowcli.create import CreateArgs, create_args, memory_warning
from meowcli.create import create as do_create
from meowcli.errors import FAILED, USAGE, warn
from meowcli.options import ALL, BY_DEST, FORCE, JSON, LIST_ALL, STREAM, TIMEOUT, WAIT_ALL
from meowd import __version__
from meowd.core.errors import BadRequest, MeowError, NotFound

app = typer.Typer(
    name="meow",
    help="meow: a GPU-aware local task queue. Queue commands; meowd runs each on free GPUs.",
    epilog="Exit status: 0 ok, 1 failed or refused, 2 bad usage or value, 130 interrupted; "
           "`meow watch NAME` exits with the task's own code.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

JsonOpt = Annotated[bool, typer.Option(*JSON.flags, help=JSON.help)]
COMPLETION_TIMEOUT = 1.0
"""Seconds shell completion waits for meowd's task list before completing nothing."""


def complete_task_names(incomplete: str) -> list[str]:
    """Task fullnames (and group prefixes) from a running meowd; never starts one."""
    try:
        with Client(timeout=COMPLETION_TIMEOUT) as client:
            names = [t["fullname"] for t in client.list()]
    except (MeowError, OSError):
        return []
    groups = {n.rsplit("/", 1)[0] + "/" for n in names if "/" in n}
    return sorted(n for n in {*names, *groups} if n.startswith(incomplete))


NameArg = Annotated[str | None, typer.Argument(
    metavar="NAME", autocompletion=complete_task_names, show_default=False,
    help="Task fullname, group, or id; with -A a regular expression over whole fullnames.")]
AllOpt = Annotated[bool, typer.Option(*ALL.flags, help=ALL.help)]
TaskArg = Annotated[str, typer.Argument(
    metavar="NAME", autocompletion=complete_task_names, help="Task fullname or id.")]


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


# -- create ------------------------------------------------------------------------------------
def _opt(dest: str) -> Any:
    """The typer option for a row of the options table (meowcli/options.py)."""
    o = BY_DEST[dest]
    return typer.Option(*o.flags, help=o.help_text, metavar=o.metavar, show_default=False)


@app.command()
def create(
    input: Annotated[str, typer.Argument(
        metavar="COMMAND|TASK.py", show_default=False,
        help="The command to run, quoted (\"python train.py\"), or a task file (task.py) "
             "that builds tasks with the Cattino API and calls cattino.export().")],
    args: Annotated[list[str] | None, typer.Argument(
        metavar="ARGS", show_default=False,
        help="Arguments after --, appended (shell-quoted) to the command, or given to the "
             "task file as sys.argv.")] = None,
    task_name: Annotated[str | None, _opt("task_name")] = None,
    priority: Annotated[str | None, _opt("priority")] = None,
    requires_memory_per_device: Annotated[str | None, _opt("requires_memory_per_device")] = None,
    min_devices: Annotated[str | None, _opt("min_devices")] = None,
    multirun: Annotated[bool, _opt("multirun")] = False,
    as_group: Annotated[str | None, _opt("as_group")] = None,
    cwd: Annotated[str | None, _opt("cwd")] = None,
    enforce_memory: Annotated[bool, _opt("enforce_memory")] = False,
    secrets: Annotated[list[str] | None, _opt("secrets")] = None,
    time_limit: Annotated[str | None, _opt("time_limit")] = None,
    max_retries: Annotated[str | None, _opt("max_retries")] = None,
    resumable: Annotated[bool, _opt("resumable")] = False,
    after: Annotated[list[str] | None, _opt("after")] = None,
    executor: Annotated[str | None, _opt("executor")] = None,
    as_json: Annotated[bool, _opt("json")] = False,
    traceback: Annotated[bool, _opt("traceback")] = False,
) -> None:
    """Queue a command, or the tasks a Cattino task file exports.

    The daemon starts in the background if it is not running. Each task runs in the
    current directory with this shell's environment, with CUDA_VISIBLE_DEVICES set to
    the GPUs it is placed on. Magic strings ${task_name}, ${fullname}, ${fullpath},
    ${run_dir} and ${env:VAR} are filled in here.

    \b
    Examples:
      meow create "python train.py" -M 20GiB -- --lr 0.2
      meow create "python train.py" -m -- --lr=[0.1,0.2] --bs [32,64]   (4 tasks)
      meow create pipeline.py -- --epochs 3   (runs pipeline.py, queues its exports)
    """
    raise typer.Exit(do_create(typer_create_args(locals())))


def typer_create_args(params: dict[str, Any]) -> CreateArgs:
    """What typer parsed for `create`, through the same checks as the fast parser."""
    values = {dest: params[name] for dest, name in _CREATE_PARAMS.items()}
    return create_args(params["input"], list(params["args"] or []), values)


_CREATE_PARAMS = {o: o for o in BY_DEST} | {"json": "as_json"}
"""Options-table dest -> parameter name of `create` above."""


# -- list and show -----------------------------------------------------------------------------
def _select(tasks: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Tasks named by fullname, group prefix or id, as every other command names them."""
    chosen: dict[int, dict[str, Any]] = {}
    for name in names:
        prefix = name.rstrip("/") + "/"
        found = [t for t in tasks if t["fullname"] == name] or \
            [t for t in tasks if t["fullname"].startswith(prefix)] or \
            [t for t in tasks if name.isdigit() and t["id"] == int(name)]
        if not found:
            raise NotFound(f"no task {name!r} (nor a column of that name: `meow list --json` "
                           "shows every attribute)")
        chosen.update((t["id"], t) for t in found)
    return list(chosen.values())


@app.command("list")
def list_(
    words: Annotated[list[str] | None, typer.Argument(
        metavar="NAME|ATTR", autocompletion=complete_task_names, show_default=False,
        help="Tasks to list (fullname, group or id), and/or attributes to show as columns "
             "after the fullname (status priority devices ...: any key of --json).")] = None,
    filter_: Annotated[str | None, typer.Option(
        "--filter", metavar="EXPR",
        help="Only tasks matching, e.g. 'status==running', 'priority>1, name~^sweep', "
             "'status==running or status==waiting' (== != > >= < <= ~regex; clauses joined "
             "by `,`/and, then or).")] = None,
    all_: Annotated[bool, typer.Option(*LIST_ALL.flags, help=LIST_ALL.help)] = False,
    as_json: JsonOpt = False,
) -> None:
    """List tasks, with why each waiting task waits.

    Columns: id, name, status, GPUs, memory, peak, exit code, times, and a note.

    The table shows every running task, the next 50 waiting ones (in the order they
    would start) and the 50 that ended last; a last line counts what it left out, and
    --all shows everything. --json always lists every task.

    The note says why a task waits (in full: `meow show NAME`), or warns. Starts the
    daemon if it is not running.
    """
    import gc

    from meowcli.filters import parse_filter
    from meowd.core.listing import bounded, footer

    gc.disable()  # as on the quick path: 100,000 rows live until exit (meowcli/quick.py)
    selecting = bool(words) or filter_ is not None
    with connect(autostart=True) as client:
        reply = client.listing(recent=not (as_json or all_ or selecting))
    tasks, omitted = render.task_maps(reply), reply["omitted"]
    if reply["degraded"] and not as_json:  # a header no one misses: ends not yet stored
        typer.echo(f"meow: warning: meowd is degraded: {reply['degraded']}; no task starts "
                   "until they are stored", err=True)
    columns = set(reply["columns"])
    attrs = [w for w in words or () if w in columns]
    names = [w for w in words or () if w not in columns]
    if names:
        tasks = sorted(_select(tasks, names), key=lambda t: t["id"])
    if filter_ is not None:
        keep = parse_filter(filter_, columns)
        tasks = [t for t in tasks if keep(t)]
    if as_json:
        sys.stdout.flush()
        render.write_json_tasks(tasks, sys.stdout.buffer)
        return
    if selecting and not all_:
        tasks, omitted = bounded(tasks, render.list_facts)
    line = footer(omitted)
    table = render.render_attrs(tasks, attrs) if attrs else render.render_tasks(tasks, time.time())
    typer.echo(table + ("" if line is None else f"\n{line}"))


@app.command()
def show(name: TaskArg, as_json: JsonOpt = False) -> None:
    """Show one task in full.

    Why it waits, how long it ran, GPUs, memory peaks, attempts and log paths.
    """
    with connect(autostart=True) as client:
        task = client.show(name)
    typer.echo(json.dumps(task) if as_json else render.render_show(task, time.time()))


# -- bulk commands -----------------------------------------------------------------------------
def _bulk(op: str, name: str | None, all_: bool, as_json: bool, force: bool = False) -> None:
    from meowcli.quick import bulk

    raise typer.Exit(bulk(op, name, all_, as_json, force))


@app.command()
def kill(name: NameArg = None, all_: AllOpt = False,
         force: Annotated[bool, typer.Option(*FORCE.flags, help=FORCE.help)] = False,
         as_json: JsonOpt = False) -> None:
    """Stop running tasks (they end as killed).

    SIGTERM to the task's process tree, SIGKILL after kill_grace seconds (or at once with
    -f).
    """
    _bulk("kill", name, all_, as_json, force=force)


@app.command()
def cancel(name: NameArg = None, all_: AllOpt = False, as_json: JsonOpt = False) -> None:
    """Cancel tasks; `meow resume` queues them again.

    A waiting task is cancelled at once; a running one is stopped first.
    """
    _bulk("cancel", name, all_, as_json)


@app.command()
def resume(name: NameArg = None, all_: AllOpt = False, as_json: JsonOpt = False) -> None:
    """Queue cancelled tasks again.

    A failed or killed task is run again with `meow retry NAME`.
    """
    _bulk("resume", name, all_, as_json)


@app.command()
def retry(name: NameArg = None, all_: AllOpt = False, as_json: JsonOpt = False) -> None:
    """Run failed, timed-out, killed or lost tasks again, as a new attempt.

    The earlier attempts stay in `meow show`. A cancelled task is queued with `meow resume`.
    """
    _bulk("retry", name, all_, as_json)


@app.command()
def wait(
    names: Annotated[list[str] | None, typer.Argument(
        metavar="NAME...", autocompletion=complete_task_names, show_default=False,
        help="Tasks (fullname, group or id) to wait for.")] = None,
    all_: Annotated[bool, typer.Option(*WAIT_ALL.flags, help=WAIT_ALL.help)] = False,
    timeout: Annotated[float | None, typer.Option(
        *TIMEOUT.flags, metavar=TIMEOUT.metavar, help=TIMEOUT.help)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Wait until tasks end; exit 0 only if every one is done.

    The daemon answers when the last one ends (no polling). Otherwise the exit status is
    the first unsuccessful task's exit code (1 if it has none), or 124 on --timeout.
    `meow wait train && meow create ...` goes on only if train succeeded.
    """
    from meowcli.quick import wait as wait_

    raise typer.Exit(wait_(list(names or ()), all_, timeout, as_json))


@app.command()
def usage(name: TaskArg, as_json: JsonOpt = False) -> None:
    """Each attempt's runtime, peak RSS, CPU time and peak GPU memory per GPU."""
    from meowd.core.protocol import UsageRequest

    with connect(autostart=True) as client:
        result = client.call(UsageRequest(name))
    typer.echo(json.dumps(result) if as_json else render.render_usage(result))


@app.command()
def remove(name: NameArg = None, all_: AllOpt = False, as_json: JsonOpt = False) -> None:
    """Forget tasks in any status; logs stay on disk.

    A running task is killed first.
    """
    _bulk("remove", name, all_, as_json)


@app.command()
def devices(as_json: JsonOpt = False) -> None:
    """Show each GPU's memory: meow's, others', reserved, free.

    In MiB: total, used by meow tasks, used by other processes, reserved, free.
    """
    with connect(autostart=True) as client:
        result = client.devices()
    typer.echo(json.dumps(result) if as_json else render.render_devices(result))


# -- watch -------------------------------------------------------------------------------------
@app.command()
def watch(
    name: Annotated[str | None, typer.Argument(
        metavar="NAME", autocompletion=complete_task_names, show_default=False,
        help="Task fullname or id; without one, follow the daemon's log.")] = None,
    stream: Annotated[str, typer.Option(*STREAM.flags, metavar=STREAM.metavar,
                                        help=STREAM.help)] = "stdout",
) -> None:
    """Follow a task's output; exit with its exit code.

    A waiting task is followed once it starts. `meow watch train && meow create ...`
    runs the next command only if train succeeded.
    """
    from meowcli.quick import watch as watch_

    raise typer.Exit(watch_(name, stream))


# -- the daemon --------------------------------------------------------------------------------
@app.command("run")
def run_(verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logging.")] = False
         ) -> None:
    """Run meowd in the foreground, logging; Ctrl-C stops it.

    Running tasks keep running and are re-adopted by the next daemon.
    """
    try:
        info = Client(timeout=5).connect().ping()
    except MeowError:
        info = None
    if info:
        raise MeowError(f"meowd is already running (pid {info['pid']}); `meow watch` follows "
                        "its log, `meow exit` stops it")
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "meowd", *(["-v"] if verbose else [])]
    os.execv(sys.executable, argv)


@app.command("exit")
def exit_(
    kill_tasks: Annotated[bool, typer.Option(
        "--kill", help="Kill running tasks first (default: they keep running).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop the daemon; tasks stay queued or running.

    The next daemon re-adopts running tasks, unless --kill killed them. Stopping a daemon
    that is not running is not an error.
    """
    try:
        client = connect(timeout=None)
    except NotRunning:
        typer.echo(json.dumps({"running": 0, "stopped": False}) if as_json
                   else "meowd is not running")
        return
    result = client.exit(kill_tasks)
    client.wait_closed()
    if as_json:
        typer.echo(json.dumps({**result, "stopped": True}))
    else:
        typer.echo("meowd stopped" + (
            f"; {result['running']} running task(s) "
            + ("killed" if kill_tasks else "left running") if result["running"] else ""))


@app.command("test")
def test_(name: Annotated[str | None, typer.Argument(
        metavar="NAME", autocompletion=complete_task_names, show_default=False,
        help="Task fullname or id.")] = None) -> None:
    """Is the daemon up? With NAME: is that task running?

    Exit status 0 means yes, 1 no.
    """
    from meowcli.quick import test

    raise typer.Exit(test(name))


# -- set ---------------------------------------------------------------------------------------
def _set_help() -> str:
    import textwrap

    from meowd.core.settings import SETTING_HELP

    rows = "\n".join(
        textwrap.fill(v, 78, initial_indent=f"  {k:<26} ", subsequent_indent=" " * 29)
        for k, v in SETTING_HELP.items())
    return (
        "Change a setting (saved in the config file) or a waiting task.\n\n"
        "meow set KEY VALUE checks the value (also against this machine's GPUs), applies "
        "it to the running daemon and saves it; with no daemon running it is only saved. "
        "meow set NAME.ATTR VALUE changes a task's name, priority, "
        "requires_memory_per_device or min_devices (the last two while it waits). Values "
        "are parsed (true, 3, -1, 0.5, [0, 1]), never evaluated.\n\n"
        "\b\nSettings:\n" + rows + "\n\n"
        "\b\nExamples:\n  meow set visible_devices [0,1]\n  meow set cpu_slots 4\n"
        "  meow set train.priority 5"
    )


def _machine_gpus(client: Client | None) -> list[int] | None:
    """Indices of the GPUs meowd sees; without a daemon, those of configured fake GPUs
    (None: unknown, e.g. NVML, which only meowd loads)."""
    if client is not None:
        result = client.devices()
        return [d["index"] for d in result["devices"]] if result["backend"] else []
    from meowd.config import load_settings
    from meowd.core.paths import resolve_paths
    from meowd.core.settings import parse_fake_gpus

    spec = load_settings(resolve_paths()).fake_gpus
    try:
        return list(range(len(parse_fake_gpus(spec)))) if spec else None
    except BadRequest:
        return None


@app.command("set", help=_set_help(),
             context_settings={"ignore_unknown_options": True})  # `-3` is a value
def set_(
    key: Annotated[str, typer.Argument(
        metavar="KEY|NAME.ATTR", show_default=False,
        help="A setting (listed below), or a task's NAME.ATTR.")],
    value: Annotated[str, typer.Argument(
        metavar="VALUE", show_default=False, help="The new value.")],
    as_json: JsonOpt = False,
) -> None:
    from meowd.core.settings import (
        SETTING_NAMES,
        check_setting,
        check_setting_on_machine,
        parse_setting_value,
    )

    setting = key.replace("-", "_")
    if setting in SETTING_NAMES:
        checked = check_setting(setting, parse_setting_value(value))
        try:
            client: Client | None = connect(timeout=60)
        except NotRunning:
            client = None
        if client is None:
            from meowd.config import save_setting
            from meowd.core.paths import resolve_paths

            note = check_setting_on_machine(setting, checked, _machine_gpus(None))
            path = save_setting(resolve_paths(), setting, checked)
            result = {"key": setting, "value": checked, "config": str(path),
                      "restart_needed": False, "applied": False}
        else:
            with client:
                note = check_setting_on_machine(setting, checked, _machine_gpus(client))
                result = {**client.set_setting(setting, checked), "applied": True}
            note = result.get("warning", note)  # a daemon that checks it says it itself
        if as_json:
            typer.echo(json.dumps({**result, "warning": note}))
        else:
            shown = {"visible_devices": "all", "fake_gpus": "none"}.get(setting, "-") \
                if result["value"] is None else json.dumps(result["value"])
            typer.echo(f"{setting} = {shown} (saved in {result['config']}"
                       + ("" if result["applied"] else "; meowd is not running") + ")"
                       + ("; takes effect when meowd restarts (`meow exit`)"
                          if result["restart_needed"] else ""))
        if note:
            warn(note)
        return
    target, dot, attr = key.rpartition(".")
    if not dot or not target:
        raise BadRequest(f"{key!r} is neither a setting nor NAME.ATTR (settings: "
                         f"{', '.join(SETTING_NAMES)}; see meow set --help)")
    parsed: Any = value
    if attr in ("priority", "min_devices"):
        parsed = parse_setting_value(value)
    elif attr == "requires_memory_per_device":
        from meowd.core.units import parse_memory_request

        parsed = parse_memory_request(value)
        warning = memory_warning(parsed, attr)
        if warning:
            typer.echo(warning, err=True)
    with connect(autostart=True) as client:
        task = client.set_task(target, attr, parsed)
    if as_json:
        typer.echo(json.dumps(task))
    else:
        typer.echo(f"{task['fullname']}.{attr} = {json.dumps(task[attr])}")


# -- clean, top --------------------------------------------------------------------------------
@app.command("clean")
def clean(
    before: Annotated[str | None, typer.Option(
        "-b", "--before", metavar="WHEN",
        help="Tasks that ended before WHEN: a date (YYYY[-MM[-DD[ HH[:MM]]]], a partial date "
             "means the end of that period), a time back from now (30m, 12h, 7d, 2w), "
             "today or yesterday.")] = None,
    after: Annotated[str | None, typer.Option(
        "-a", "--after", metavar="WHEN", help="Tasks that ended after WHEN.")] = None,
    all_: Annotated[bool, typer.Option("-A", "--all", help="Every finished task.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Name each task.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Forget finished tasks and delete their logs.

    Finished means done, failed, timed out, killed or lost: waiting, running and cancelled tasks
    are never touched. Example: meow clean -b 7d.
    """
    from meowcli.timeparse import parse_when

    if before is None and after is None and not all_:
        raise BadRequest("say which tasks to clean: --before WHEN, --after WHEN or --all")
    when_before = parse_when(before) if before else None
    when_after = parse_when(after) if after else None
    with connect(autostart=True) as client:
        result = client.clean(when_before, when_after, all_)
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
    """A live monitor: GPUs, tasks, logs.

    GPU memory is split into meow tasks, other processes, reserved and free. Keys are
    listed at the bottom; q quits. meowd pushes every change.
    """
    from meowcli.top import MeowTop, StaticSource, demo_state

    MeowTop(StaticSource(demo_state(time.time())) if demo else None).run()


@app.command("meow")
def meow_() -> None:
    """Print the version."""
    typer.echo(f"meow {__version__} =^.^=")


# -- completion --------------------------------------------------------------------------------
SHELLS = ("bash", "zsh", "fish")


def _complete_shell(incomplete: str) -> list[str]:
    return [s for s in SHELLS if s.startswith(incomplete)]


@app.command("completion")
def completion(shell: Annotated[str, typer.Argument(
        metavar="bash|zsh|fish", show_default=False, help="Your shell.",
        autocompletion=_complete_shell)],
        ) -> None:
    """Print a shell completion script.

    It completes commands, options and task names.

    \b
    bash: add to ~/.bashrc:   eval "$(meow completion bash)"
    zsh:  add to ~/.zshrc:    eval "$(meow completion zsh)"   (after compinit)
    fish: meow completion fish > ~/.config/fish/completions/meow.fish

    Task names come from a running meowd (never started for this), within a second.
    """
    if shell not in SHELLS:
        raise BadRequest(f"no completion for {shell!r}: use one of {', '.join(SHELLS)}")
    from typer.completion import get_completion_script

    typer.echo(get_completion_script(prog_name="meow", complete_var="_MEOW_COMPLETE",
                                     shell=shell))


# -- systemd -----------------------------------------------------------------------------------
daemon_app = typer.Typer(help="Install the daemon as a systemd user service.",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(daemon_app, name="daemon")


@daemon_app.command("install-systemd")
def install_systemd(
    directory: Annotated[str | None, typer.Option(
        "--dir", metavar="DIR",
        help="Where to write the units [default: ~/.config/systemd/user]")] = None,
    print_only: Annotated[bool, typer.Option(
        "--print", help="Print the units instead of writing them.")] = False,
) -> None:
    """Write the systemd user units meowd.service and meowd.socket.

    meowd.service is Type=notify with KillMode=process (tasks survive a restart);
    meowd.socket activates it.
    """
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


# -- running the app ---------------------------------------------------------------------------
# click's exception classes, found through a public name: typer vendors click since 0.17,
# older typers use click itself.
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _usage_line(exc: Any, path: str) -> str:
    import re

    message = exc.format_message().strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    message = re.sub(r"\.?\s*\(Possible options: (.*)\)$", r"; did you mean \1?", message)
    message = re.sub(r"\.?\s*Did you mean (.*)\?$", r"; did you mean \1?", message)
    ctx = getattr(exc, "ctx", None)
    return f"{message} (see `{ctx.command_path if ctx is not None else path} --help`)"


def run(argv: list[str]) -> int:
    """Run a command line; every failure ends as one line and a status (errors.py)."""
    from typer.main import get_command

    from meowcli.errors import report

    command = get_command(app)
    if os.environ.get("_MEOW_COMPLETE"):  # a shell asks for completions (meow completion)
        from typer.completion import completion_init

        completion_init()
    try:
        code = command.main(args=argv, prog_name="meow", standalone_mode=False)
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
            typer.echo(exc.ctx.get_help())
            return 0
        known = argv[:1] and argv[0] in getattr(command, "commands", {})
        typer.echo(f"meow: error: {_usage_line(exc, 'meow ' + argv[0] if known else 'meow')}",
                   err=True)
        return USAGE
    except ClickException as exc:
        typer.echo(f"meow: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except typer.Abort:
        return report(KeyboardInterrupt())
    except (MeowError, KeyboardInterrupt) as exc:
        return report(exc)
    except OSError as exc:  # e.g. a config file that cannot be written
        typer.echo(f"meow: error: {exc}", err=True)
        return FAILED
    return code if isinstance(code, int) else 0
