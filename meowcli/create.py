"""`meow create`: the hot path. Kept free of typer/rich so it starts fast.

`fast_parse` handles the common forms of the command line by hand; anything it is
unsure of (help, unknown or malformed options) returns None and typer parses instead,
which gives the same behaviour plus proper help and error messages. Both end in `create`.
"""

from __future__ import annotations

import os
import sys

from meowd.core.errors import BadRequest, MeowError
from meowd.core.framing import PROTOCOL_VERSION
from meowd.core.units import MemoryRequest, parse_memory_request


class CreateArgs:
    """What `meow create` was asked (a plain class: typing/dataclasses cost start-up time)."""

    def __init__(
        self, input: str, args: list[str] | None = None, task_name: str | None = None,
        priority: int | None = None, requires_memory_per_device: MemoryRequest | None = None,
        min_devices: int | None = None, cwd: str | None = None, json: bool = False,
        enforce_memory: bool = False, multirun: bool = False, as_group: str | None = None,
        secrets: list[str] | None = None,
    ) -> None:
        # None means "not given": a task file's own values then apply.
        self.input = input
        self.args = args or []
        self.task_name = task_name
        self.priority = priority
        self.requires_memory_per_device = requires_memory_per_device
        self.min_devices = min_devices
        self.cwd = cwd
        self.json = json
        self.enforce_memory = enforce_memory
        self.multirun = multirun
        self.as_group = as_group
        self.secrets = secrets or []

    @property
    def simple(self) -> bool:
        """One plain command: no task file, multirun, group or magic string."""
        return not (self.multirun or self.as_group or "${" in self.input
                    or any("${" in a for a in self.args) or _is_task_file(self.input))


def _is_task_file(input: str) -> bool:
    return input.endswith(".py") and os.path.isfile(input)


def create_message(args: CreateArgs, cwd: str, env: dict[str, str]) -> dict[str, object]:
    """The wire form of a CreateRequest, built without importing the typed protocol
    (tests/unit/test_protocol.py checks it against CreateRequest)."""
    task = {
        "command": build_command(args.input, args.args), "name": args.task_name,
        "priority": args.priority or 0,
        "min_devices": 1 if args.min_devices is None else args.min_devices,
        "requires_memory_per_device": args.requires_memory_per_device or 0,
        "enforce_memory": args.enforce_memory,
    }
    return {"v": PROTOCOL_VERSION, "op": "create",
            "args": {"tasks": [task], "cwd": cwd, "env": env}}


_VALUE_OPTS = {
    "-n": "task_name", "--task-name": "task_name",
    "-p": "priority", "--priority": "priority",
    "-M": "requires_memory_per_device",
    "--requires-memory-per-device": "requires_memory_per_device",
    "-c": "min_devices", "--min-devices": "min_devices",
    "--cwd": "cwd",
    "-g": "as_group", "--as-group": "as_group",
}


def fast_parse(argv: list[str]) -> CreateArgs | None:
    """Parse `create` arguments, or None to let typer do it (help, errors, oddities)."""
    values: dict[str, str] = {}
    positional: list[str] = []
    extra: list[str] = []
    as_json = enforce = multi = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            extra = argv[i + 1:]
            break
        if arg == "--json":
            as_json = True
        elif arg == "--enforce-memory":
            enforce = True
        elif arg in ("-m", "--multirun"):
            multi = True
        elif arg in _VALUE_OPTS:
            if i + 1 >= len(argv):
                return None
            values[_VALUE_OPTS[arg]] = argv[i + 1]
            i += 1
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            positional.append(arg)
        i += 1
    if len(positional) != 1:
        return None
    try:
        memory = values.get("requires_memory_per_device")
        return CreateArgs(
            input=positional[0], args=extra, task_name=values.get("task_name"),
            priority=int(values["priority"]) if "priority" in values else None,
            requires_memory_per_device=None if memory is None else parse_memory_request(memory),
            min_devices=int(values["min_devices"]) if "min_devices" in values else None,
            cwd=values.get("cwd"), json=as_json, enforce_memory=enforce, multirun=multi,
            as_group=values.get("as_group"),
        )
    except (ValueError, BadRequest):
        return None


def build_command(input: str, args: list[str]) -> str:
    import shlex

    return " ".join([input, *map(shlex.quote, args)]) if args else input


def create(args: CreateArgs) -> int:
    """Ship one command to the daemon (starting it if needed). Returns the exit status."""
    from meowcli.connection import open_connection

    if args.input.endswith(".py") and " " not in args.input and not os.path.exists(args.input):
        raise BadRequest(f"no task file {args.input} (to run a command, quote it: "
                         f"meow create \"python {args.input}\")")
    if args.min_devices is not None and args.min_devices < 0:
        raise BadRequest("--min-devices must be 0 or more")
    cwd = os.path.abspath(args.cwd) if args.cwd else os.getcwd()
    if not os.path.isdir(cwd):
        raise BadRequest(f"--cwd {cwd} is not a directory")
    env = _environment(args.secrets)
    if args.simple:
        message = create_message(args, cwd, env)
    else:
        message = {"v": PROTOCOL_VERSION, "op": "create",
                   "args": {"tasks": _expanded(args), "cwd": cwd, "env": env}}
    with open_connection(autostart=True) as connection:
        created = connection.call_wire(message)
    if args.json:
        import json

        print(json.dumps(created))
    else:
        for task in created:
            print(f"created {task['fullname']} (id {task['id']})")
    return 0


def _environment(secrets: list[str]) -> dict[str, str]:
    """This shell's environment; --secret NAME[=VALUE] adds and marks secret values."""
    env = dict(os.environ)
    if not secrets:
        return env
    names = []
    for item in secrets:
        name, eq, value = item.partition("=")
        if eq:
            env[name] = os.environ[name] = value  # ${env:NAME} in the command sees it too
        elif name not in env:
            raise BadRequest(f"--secret {name}: {name} is not set here (or use NAME=VALUE)")
        names.append(name)
    marked = [n for n in env.get("MEOW_SECRET_KEYS", "").split(",") if n]
    env["MEOW_SECRET_KEYS"] = ",".join(dict.fromkeys(marked + names))
    return env


def _expanded(args: CreateArgs) -> list[dict[str, object]]:
    from meowcli import expand
    from meowd.config import load_settings
    from meowd.core.paths import resolve_paths

    paths = resolve_paths()
    if _is_task_file(args.input):
        timeout = load_settings(paths).hook_timeout
        return expand.taskfile_specs(args, paths.state, timeout)
    return expand.command_specs(args, str(paths.tasks))


def fast_main(argv: list[str]) -> int | None:
    parsed = fast_parse(argv)
    if parsed is None:
        return None
    try:
        return create(parsed)
    except MeowError as exc:
        print(f"meow: error: {exc.message}", file=sys.stderr)
        return 1
