"""`meow create`: the hot path. Kept free of typer so it starts fast.

`fast_parse` handles the command line by hand from the options table (meowcli/options.py);
anything it is unsure of (help, unknown or malformed options) returns None and typer
parses instead. Both turn what they read into a `CreateArgs` with `create_args`, so a
value is checked, converted and defaulted in one place, and every task spec is built by
`task_spec`, whether it comes from one command, a multirun or a task file.
"""

from __future__ import annotations

import os
import sys

from meowcli.options import BY_DEST, BY_FLAG
from meowd.core.errors import BadRequest, MeowError
from meowd.core.framing import PROTOCOL_VERSION
from meowd.core.units import MemoryRequest, parse_duration, parse_memory_request

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the hot path start-up time
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

SMALL_MIB = 256
"""`-M` below this many MiB (and not a ratio) is probably GiB typed as MiB: warn."""


class CreateArgs:
    """What `meow create` was asked (a plain class: typing/dataclasses cost start-up time)."""

    def __init__(
        self, input: str, args: list[str] | None = None, task_name: str | None = None,
        priority: int | None = None, requires_memory_per_device: MemoryRequest | None = None,
        min_devices: int | None = None, cwd: str | None = None, json: bool = False,
        enforce_memory: bool = False, multirun: bool = False, as_group: str | None = None,
        secrets: list[str] | None = None, traceback: bool = False,
        time_limit: float | None = None, max_retries: int | None = None,
        resumable: bool = False, after: list[str] | None = None, executor: str | None = None,
    ) -> None:
        # None means "not given": a task file's own values, then the table's defaults apply.
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
        self.traceback = traceback
        self.time_limit = time_limit
        self.max_retries = max_retries
        self.resumable = resumable
        self.after = after or []
        self.executor = executor

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CreateArgs) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"CreateArgs({vars(self)!r})"

    @property
    def simple(self) -> bool:
        """One plain command: no task file, multirun, group or magic string."""
        return not (self.multirun or self.as_group or "${" in self.input
                    or any("${" in a for a in self.args) or _is_task_file(self.input))


def _is_task_file(input: str) -> bool:
    return input.endswith(".py") and os.path.isfile(input)


def _flags(dest: str) -> str:
    return "/".join(BY_DEST[dest].flags)


def _whole(dest: str, text: str, minimum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{_flags(dest)} must be a whole number, not {text!r}") from None
    if minimum is not None and value < minimum:
        raise BadRequest(f"{_flags(dest)} must be {minimum} or more, not {value}")
    if abs(value) >= 2**31:
        raise BadRequest(f"{_flags(dest)} is out of range: {value}")
    return value


def create_args(input: str, args: list[str], values: dict[str, object]) -> CreateArgs:
    """Check and convert what either parser read: `values` maps each option's dest to
    its text (value options), bool (flags) or list (repeatable); missing means not given."""
    def text(dest: str) -> str | None:
        value = values.get(dest)
        return None if value is None else str(value)

    def parsed(dest: str, parse: Callable[[str], T]) -> T | None:
        """The option's text through `parse`; its error names the option."""
        value = text(dest)
        try:
            return None if value is None else parse(value)
        except BadRequest as exc:
            raise BadRequest(f"{_flags(dest)}: {exc.message}") from None

    priority, min_devices = text("priority"), text("min_devices")
    memory_value = parsed("requires_memory_per_device", parse_memory_request)
    time_limit_s = parsed("time_limit", parse_duration)
    retries = text("max_retries")
    executor = text("executor")
    if executor is not None and executor not in ("local", "slurm"):
        raise BadRequest(f"--executor must be local or slurm, not {executor!r}")
    after = list(dict.fromkeys(
        name.strip() for item in values.get("after") or ()  # type: ignore[union-attr]
        for name in str(item).split(",") if name.strip()))
    if values.get("after") and not after:
        raise BadRequest("--after needs task names (or ids), e.g. --after prep,train")
    return CreateArgs(
        input=input, args=list(args), task_name=text("task_name"),
        time_limit=time_limit_s,
        max_retries=None if retries is None else _whole("max_retries", retries, 0),
        resumable=bool(values.get("resumable")), after=after, executor=executor,
        priority=None if priority is None else _whole("priority", priority),
        requires_memory_per_device=memory_value,
        min_devices=None if min_devices is None else _whole("min_devices", min_devices, 0),
        cwd=text("cwd"), json=bool(values.get("json")),
        enforce_memory=bool(values.get("enforce_memory")),
        multirun=bool(values.get("multirun")), as_group=text("as_group"),
        secrets=[str(s) for s in values.get("secrets") or ()],  # type: ignore[union-attr]
        traceback=bool(values.get("traceback")),
    )


def fast_parse(argv: list[str]) -> CreateArgs | None:
    """Parse `create` arguments, or None to let typer do it (help, usage errors,
    oddities such as `-nNAME`). Bad values raise BadRequest, as under typer."""
    values: dict[str, object] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positional += argv[i + 1:]
            break
        flag, eq, attached = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        option = BY_FLAG.get(flag)
        if option is not None and option.kind == "flag":
            if eq:
                return None
            values[option.dest] = True
        elif option is not None:
            if not eq:
                if i + 1 >= len(argv):
                    return None
                i += 1
                attached = argv[i]
            if option.kind == "list":
                values.setdefault(option.dest, [])
                values[option.dest].append(attached)  # type: ignore[union-attr]
            else:
                values[option.dest] = attached
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            positional.append(arg)
        i += 1
    if not positional:
        return None
    return create_args(positional[0], positional[1:], values)


def build_command(input: str, args: list[str]) -> str:
    if not args:
        return input
    import shlex

    return " ".join([input, *map(shlex.quote, args)])


def task_spec(args: CreateArgs, command: str, name: str | None, group: str | None = None, *,
              priority: int | None = None, min_devices: int | None = None,
              memory: MemoryRequest | None = None, after: list[int] | None = None,
              env: dict[str, str] | None = None, time_limit: float | None = None,
              max_retries: int | None = None, resumable: bool = False,
              executor: str | None = None) -> dict[str, object]:
    """The one place a task spec (the wire form of TaskSpec) is built. The command line's
    options win over a task file's own values (priority=...), which win over the
    defaults in the options table."""
    def pick(dest: str, own: object) -> object:
        given = getattr(args, dest)
        if given is not None:
            return given
        return own if own is not None else BY_DEST[dest].effective

    return {
        "command": command, "name": name, "group": group,
        "priority": pick("priority", priority),
        "min_devices": pick("min_devices", min_devices),
        "requires_memory_per_device": pick("requires_memory_per_device", memory),
        "enforce_memory": args.enforce_memory,
        # --after names existing tasks; a task file's own edges are indices in the request
        "after": [*(after or []), *args.after], "env": env or {},
        "time_limit": pick("time_limit", time_limit),
        "max_retries": pick("max_retries", max_retries),
        "resumable": args.resumable or resumable,
        "executor": pick("executor", executor),
    }


def create_message(args: CreateArgs, cwd: str, env: dict[str, str]) -> dict[str, object]:
    """The wire form of a CreateRequest for one plain command, built without importing
    the typed protocol (tests/unit/test_protocol.py checks it against CreateRequest)."""
    task = task_spec(args, build_command(args.input, args.args), args.task_name)
    return {"v": PROTOCOL_VERSION, "op": "create",
            "args": {"tasks": [task], "cwd": cwd, "env": env}}


def memory_warning(memory: object, flag: str = "-M") -> str | None:
    """A warning for a memory request that is probably GiB typed as MiB."""
    if isinstance(memory, int) and not isinstance(memory, bool) and 0 < memory < SMALL_MIB:
        return (f"meow: warning: {flag} {memory} reserves {memory} MiB per GPU; for GiB "
                f"write {memory}GiB, for a share of each GPU a ratio such as 0.5")
    return None


def create(args: CreateArgs) -> int:
    """Ship the tasks to the daemon (starting it if needed). Returns the exit status."""
    from meowcli.autostart import open_or_start
    from meowcli.connection import ConnectionLost

    if args.input.endswith(".py") and " " not in args.input and not os.path.exists(args.input):
        raise BadRequest(f"no task file {args.input} (to run a command, quote it: "
                         f"meow create \"python {args.input}\")")
    if not args.input.strip():
        raise BadRequest("empty command")
    cwd = os.path.abspath(args.cwd) if args.cwd else os.getcwd()
    if not os.path.isdir(cwd):
        raise BadRequest(f"--cwd {cwd} is not a directory")
    warning = memory_warning(args.requires_memory_per_device)
    if warning:
        print(warning, file=sys.stderr)
    if args.multirun:
        from meowcli.expand import not_lists

        for arg in not_lists(args.args):
            print(f"meow: warning: {arg!r} is not a multirun list [a,b] (unbalanced "
                  "brackets?); it is passed on as it is", file=sys.stderr)
    env = _environment(args.secrets)
    if args.simple:
        message = create_message(args, cwd, env)
        params: list[str] = []
    else:
        specs, params = _expanded(args)
        message = {"v": PROTOCOL_VERSION, "op": "create",
                   "args": {"tasks": specs, "cwd": cwd, "env": env}}
    # A create whose daemon dies in flight is sent once more (to a new daemon); the id makes
    # a repeat get the first answer, so the tasks exist exactly once either way.
    message["args"]["request_id"] = os.urandom(12).hex()  # type: ignore[index]
    try:
        with open_or_start() as connection:
            created = connection.call_wire(message)
    except ConnectionLost:
        with open_or_start() as connection:
            created = connection.call_wire(message)
    if args.json:
        import json

        print(json.dumps(created))
    else:
        for n, task in enumerate(created):  # type: ignore[arg-type]
            extra = f": {params[n]}" if n < len(params) and params[n] else ""
            print(f"created {task['fullname']} (id {task['id']}){extra}")
    return 0


def _environment(secrets: list[str]) -> dict[str, str]:
    """This shell's environment; --secret NAME[=VALUE] adds and marks secret values.
    Variables no process could be given (an empty name or one with `=`, bytes that are
    not UTF-8) are left out with a warning, rather than refusing every submission."""
    env = {}
    for key, value in os.environ.items():
        if not key or "=" in key or not _utf8(key) or not _utf8(value):
            print(f"meow: warning: leaving out the environment variable {key!r}: "
                  "not a valid name or not UTF-8", file=sys.stderr)
            continue
        env[key] = value
    if not secrets:
        return env
    names = []
    for item in secrets:
        name, eq, value = item.partition("=")
        if not name:
            raise BadRequest(f"--secret {item!r}: give NAME or NAME=VALUE")
        if eq:
            env[name] = os.environ[name] = value  # ${env:NAME} in the command sees it too
        elif name not in env:
            raise BadRequest(f"--secret {name}: {name} is not set here (or use NAME=VALUE)")
        names.append(name)
    marked = [n for n in env.get("MEOW_SECRET_KEYS", "").split(",") if n]
    env["MEOW_SECRET_KEYS"] = ",".join(dict.fromkeys(marked + names))
    os.environ["MEOW_SECRET_KEYS"] = env["MEOW_SECRET_KEYS"]  # expand.resolve refuses them
    return env


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _expanded(args: CreateArgs) -> tuple[list[dict[str, object]], list[str]]:
    """Specs for a multirun, a group, magic strings or a task file, and for a multirun
    each task's parameters (shown on `created` lines)."""
    from meowcli import expand
    from meowd.core.paths import resolve_paths

    paths = resolve_paths()
    if _is_task_file(args.input):
        from meowd.config import load_settings

        timeout = load_settings(paths).hook_timeout
        return expand.taskfile_specs(args, paths.state, timeout), []
    return expand.command_specs(args, str(paths.tasks))


def fast_main(argv: list[str]) -> int | None:
    """`meow create ARGV` without typer, or None to let typer parse it."""
    from meowcli.errors import report

    try:
        parsed = fast_parse(argv)
        if parsed is None:
            return None
        return create(parsed)
    except (MeowError, KeyboardInterrupt) as exc:
        return report(exc)
