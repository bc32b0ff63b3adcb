"""Messages between `meow` and `meowd`: one request type per command, with validation.

A request on the wire: {"v": PROTOCOL_VERSION, "op": "<name>", "args": {...}}.
A reply:               {"v": PROTOCOL_VERSION, "ok": true, "result": ...}
                    or {"v": PROTOCOL_VERSION, "ok": false, "error": {"code": ..., "message": ...}}.
`from_wire` turns an untrusted map into a typed request or raises BadRequest/ProtocolError;
the daemon never looks at a field that did not pass through here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from meowd.core.errors import BadRequest, MeowError, ProtocolError
from meowd.core.framing import PROTOCOL_VERSION
from meowd.core.models import validate_name
from meowd.core.units import MemoryRequest, validate_memory_request

MAX_TASKS_PER_CREATE = 100_000
MAX_ARG_BYTES = 128 * 1024
"""Linux refuses one argv or environment string longer than this (MAX_ARG_STRLEN)."""
MAX_EXEC_BYTES = 1024 * 1024
"""What a task's command and environment may take together: half of the usual ARG_MAX,
leaving room for the wrapper's own arguments."""
EXECUTORS = ("local", "slurm")
MAX_RETRIES = 1000


def check_env(env: dict[str, str], what: str) -> int:
    """Refuse what `execve` would (an `=` or NUL in a key, a NUL in a value, an empty
    key, an over-long string); returns the bytes the environment takes in execve."""
    size = 0
    for key, value in env.items():
        if not key or "=" in key or "\x00" in key:
            raise BadRequest(f"{what}: invalid variable name {key[:40]!r} "
                             "(empty, or contains '=' or a NUL byte)")
        if "\x00" in value:
            raise BadRequest(f"{what}: the value of {key[:40]} contains a NUL byte")
        entry = len(key.encode()) + len(value.encode()) + 2
        if entry > MAX_ARG_BYTES:
            raise BadRequest(f"{what}: {key[:40]} is {entry} bytes long (at most "
                             f"{MAX_ARG_BYTES} per variable)")
        size += entry + 8
    return size


def _get(args: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in args:
        if default is ...:
            raise BadRequest(f"missing field {key!r}")
        return default
    value = args[key]
    if value is None and default is None:
        return None
    if isinstance(value, bool) and kind is int:
        raise BadRequest(f"field {key!r} must be int, got bool")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadRequest(f"field {key!r} must be {names}, got {type(value).__name__}")
    return value


def _str_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise BadRequest(f"{what} must map strings to strings")
    return value


@dataclass(frozen=True)
class TaskSpec:
    """What a client asks to run. Plain data only: the daemon never runs client code."""

    command: str
    name: str | None = None
    priority: int = 0
    min_devices: int = 1
    requires_memory_per_device: MemoryRequest = 0
    group: str | None = None
    """`a/b`: the task's fullname is `a/b/<name>`."""
    after: tuple[int | str, ...] = ()
    """Predecessors: an index of an earlier task in the same request, or the fullname
    of an existing task. Earlier-only indices make every request's graph acyclic."""
    enforce_memory: bool = False
    env: dict[str, str] = field(default_factory=dict)
    """Added to the request's environment for this task only (ProcTask(env=...))."""
    time_limit: float | None = None
    """Seconds an attempt may run (None: the `default_time_limit` setting)."""
    max_retries: int = 0
    resumable: bool = False
    executor: str | None = None
    """local or slurm; None: the `executor` setting."""

    @classmethod
    def from_wire(cls, raw: Any) -> TaskSpec:
        if not isinstance(raw, dict):
            raise BadRequest("each task must be a map")
        command = _get(raw, "command", str)
        if not command.strip():
            raise BadRequest("empty command")
        if "\x00" in command:
            raise BadRequest("command contains a NUL byte")
        if len(command.encode()) >= MAX_ARG_BYTES:
            raise BadRequest(f"command is {len(command.encode())} bytes long (at most "
                             f"{MAX_ARG_BYTES - 1}); put a long script in a file")
        name = _get(raw, "name", str, None)
        if name is not None:
            validate_name(name)
        priority = _get(raw, "priority", int, 0)
        min_devices = _get(raw, "min_devices", int, 1)
        if not 0 <= min_devices <= 1024:
            raise BadRequest("min_devices must be between 0 and 1024")
        if not -(2**31) <= priority < 2**31:
            raise BadRequest("priority out of range")
        memory = validate_memory_request(raw.get("requires_memory_per_device", 0))
        group = _get(raw, "group", str, None)
        if group is not None:
            for part in group.split("/"):
                validate_name(part)
        after = _get(raw, "after", list, [])
        for dep in after:
            if isinstance(dep, bool) or not isinstance(dep, int | str):
                raise BadRequest("after must list task indices or fullnames")
        enforce = _get(raw, "enforce_memory", bool, False)
        env = _str_map(_get(raw, "env", dict, {}), "a task's env")
        check_env(env, "a task's env")
        time_limit = _get(raw, "time_limit", (int, float), None)
        if time_limit is not None and (isinstance(time_limit, bool)
                                       or not 0 < time_limit < 10 * 365 * 86400):
            raise BadRequest("time_limit must be a number of seconds > 0 (under 10 years)")
        max_retries = _get(raw, "max_retries", int, 0)
        if not 0 <= max_retries <= MAX_RETRIES:
            raise BadRequest(f"max_retries must be between 0 and {MAX_RETRIES}")
        resumable = _get(raw, "resumable", bool, False)
        executor = _get(raw, "executor", str, None)
        if executor is not None and executor not in EXECUTORS:
            raise BadRequest(f"executor must be one of: {', '.join(EXECUTORS)}")
        return cls(command, name, priority, min_devices, memory, group, tuple(after), enforce,
                   env, None if time_limit is None else float(time_limit), max_retries,
                   resumable, executor)

    def to_wire(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "name": self.name,
            "priority": self.priority,
            "min_devices": self.min_devices,
            "requires_memory_per_device": self.requires_memory_per_device,
            "group": self.group,
            "after": list(self.after),
            "enforce_memory": self.enforce_memory,
            "env": self.env,
            "time_limit": self.time_limit,
            "max_retries": self.max_retries,
            "resumable": self.resumable,
            "executor": self.executor,
        }


class Request:
    op: ClassVar[str]

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Request:
        return cls()

    def to_args(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class PingRequest(Request):
    op: ClassVar[str] = "ping"


@dataclass(frozen=True)
class CreateRequest(Request):
    op: ClassVar[str] = "create"
    tasks: tuple[TaskSpec, ...]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    request_id: str | None = None
    """Made by the client; a create sent again with the same id (the connection dropped
    before the answer) gets the first answer instead of new tasks."""

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> CreateRequest:
        raw_tasks = _get(args, "tasks", list)
        if not raw_tasks:
            raise BadRequest("no tasks to create")
        if len(raw_tasks) > MAX_TASKS_PER_CREATE:
            raise BadRequest(f"at most {MAX_TASKS_PER_CREATE} tasks per request")
        cwd = _get(args, "cwd", str)
        if not cwd.startswith("/"):
            raise BadRequest("cwd must be an absolute path")
        if "\x00" in cwd or len(cwd) > 4096:
            raise BadRequest("cwd contains a NUL byte or is longer than 4096 characters")
        env = _str_map(_get(args, "env", dict, {}), "env")
        env_size = check_env(env, "env")
        request_id = _get(args, "request_id", str, None)
        if request_id is not None and not 8 <= len(request_id) <= 64:
            raise BadRequest("request_id must be 8 to 64 characters")
        tasks = tuple(TaskSpec.from_wire(t) for t in raw_tasks)
        for spec in tasks:
            size = env_size + len(spec.command.encode()) + check_env(spec.env, "env")
            if size > MAX_EXEC_BYTES:
                raise BadRequest(f"the command and environment take {size} bytes (at most "
                                 f"{MAX_EXEC_BYTES}): pass large data in files")
        for n, spec in enumerate(tasks):
            for dep in spec.after:
                if isinstance(dep, int) and not 0 <= dep < n:
                    raise BadRequest(
                        f"task {n}: after={dep} must name an earlier task of this request"
                    )
        return cls(tasks, cwd, env, request_id)

    def to_args(self) -> dict[str, Any]:
        return {"tasks": [t.to_wire() for t in self.tasks], "cwd": self.cwd, "env": self.env,
                "request_id": self.request_id}


@dataclass(frozen=True)
class Selector:
    """Which tasks a bulk command acts on: `NAME` (fullname, group or id), or with
    `regex` set, NAME is a regular expression matched against the whole fullname,
    and no NAME means every task."""

    target: str | None
    regex: bool = False

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Selector:
        target = _get(args, "target", str, None)
        regex = _get(args, "regex", bool, False)
        if target is None and not regex:
            raise BadRequest("give a task NAME, or -A to select all tasks")
        return cls(target, regex)

    def to_args(self) -> dict[str, Any]:
        return {"target": self.target, "regex": self.regex}


@dataclass(frozen=True)
class _BulkRequest(Request):
    selector: Selector

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> _BulkRequest:
        return cls(Selector.from_args(args))

    def to_args(self) -> dict[str, Any]:
        return self.selector.to_args()


@dataclass(frozen=True)
class KillRequest(_BulkRequest):
    op: ClassVar[str] = "kill"
    force: bool = False

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> KillRequest:
        return cls(Selector.from_args(args), _get(args, "force", bool, False))

    def to_args(self) -> dict[str, Any]:
        return {**self.selector.to_args(), "force": self.force}


@dataclass(frozen=True)
class CancelRequest(_BulkRequest):
    op: ClassVar[str] = "cancel"


@dataclass(frozen=True)
class ResumeRequest(_BulkRequest):
    op: ClassVar[str] = "resume"


@dataclass(frozen=True)
class RetryRequest(_BulkRequest):
    op: ClassVar[str] = "retry"


@dataclass(frozen=True)
class RemoveRequest(_BulkRequest):
    op: ClassVar[str] = "remove"


@dataclass(frozen=True)
class ListRequest(Request):
    """Every task, one map each (the default: what older clients get).

    `columns`: the reply is {"columns": [key...], "rows": [[value...]...], "total",
    "omitted": {"waiting": n, "finished": n}, "degraded"} instead: the keys once, not once
    per task, so 100,000 tasks cost a fraction of the bytes, objects and time. `recent`
    (with `columns`): `meow list`'s bounded view, every running task, the next
    `RECENT_WAITING` waiting ones and the latest `RECENT_FINISHED` others, and how many
    of the rest it left out (see meowd.core.listing).

    `json` (with `columns`, without `recent`): the daemon encodes every task as
    `meow list --json` prints them and sends the bytes raw, right after a reply frame of
    {"tail_bytes": n, "total", "degraded"} (see `ReplyWithTail`): the CLI copies them to
    stdout instead of decoding 100,000 rows and encoding them again. A daemon that predates
    it ignores the flag and sends the columns and rows."""

    op: ClassVar[str] = "list"
    columns: bool = False
    recent: bool = False
    json: bool = False

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ListRequest:
        columns, recent = _get(args, "columns", bool, False), _get(args, "recent", bool, False)
        json = _get(args, "json", bool, False)
        if recent and not columns:
            raise BadRequest("recent needs columns")
        if json and (recent or not columns):
            raise BadRequest("json needs columns and no recent")
        return cls(columns, recent, json)

    def to_args(self) -> dict[str, Any]:
        if not self.columns:
            return {}
        args: dict[str, Any] = {"columns": True, "recent": self.recent}
        if self.json:
            args["json"] = True
        return args


@dataclass(frozen=True)
class ShowRequest(Request):
    """One task in full, with its attempts and log paths."""

    op: ClassVar[str] = "show"
    target: str

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ShowRequest:
        return cls(_get(args, "target", str))

    def to_args(self) -> dict[str, Any]:
        return {"target": self.target}


@dataclass(frozen=True)
class UsageRequest(ShowRequest):
    """Per attempt: runtime, peak RSS, CPU seconds, peak GPU memory per device."""

    op: ClassVar[str] = "usage"


@dataclass(frozen=True)
class WaitRequest(Request):
    """Reply once the tasks have left waiting/running (at once if they already have).
    `target` alone (meow watch) answers with that task; `targets`/`all` with
    {"tasks": [...], "timed_out": bool}."""

    op: ClassVar[str] = "wait"
    target: str | None = None
    targets: tuple[str, ...] = ()
    all: bool = False
    timeout: float | None = None

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> WaitRequest:
        target = _get(args, "target", str, None)
        targets = _get(args, "targets", list, [])
        if not all(isinstance(t, str) for t in targets):
            raise BadRequest("targets must be task names")
        everything = _get(args, "all", bool, False)
        timeout = _get(args, "timeout", (int, float), None)
        if timeout is not None and (isinstance(timeout, bool) or timeout < 0):
            raise BadRequest("timeout must be a number of seconds >= 0")
        if target is None and not targets and not everything:
            raise BadRequest("wait for what? give task names, or --all")
        return cls(target, tuple(targets), everything,
                   None if timeout is None else float(timeout))

    def to_args(self) -> dict[str, Any]:
        return {"target": self.target, "targets": list(self.targets), "all": self.all,
                "timeout": self.timeout}


@dataclass(frozen=True)
class DevicesRequest(Request):
    op: ClassVar[str] = "devices"


@dataclass(frozen=True)
class ExitRequest(Request):
    op: ClassVar[str] = "exit"
    kill: bool = False

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ExitRequest:
        return cls(_get(args, "kill", bool, False))

    def to_args(self) -> dict[str, Any]:
        return {"kill": self.kill}


@dataclass(frozen=True)
class SubscribeRequest(Request):
    """Keep the connection: the daemon pushes a full state (tasks, devices) at once and
    again after every change (at most `max_rate` times a second). For `meow top`."""

    op: ClassVar[str] = "subscribe"
    max_rate: float = 10.0
    deltas: bool = False
    """After the first full state, push only what changed: {"version", "since", "tasks"
    (changed ones), "removed" (ids), "devices", ...}; a full state (no "since") whenever
    the subscriber fell behind what the daemon's change log keeps."""

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> SubscribeRequest:
        rate = _get(args, "max_rate", (int, float), 10.0)
        if not 0.1 <= rate <= 100:
            raise BadRequest("max_rate must be between 0.1 and 100 updates a second")
        return cls(float(rate), _get(args, "deltas", bool, False))

    def to_args(self) -> dict[str, Any]:
        return {"max_rate": self.max_rate, "deltas": self.deltas}


SETTABLE_ATTRS = ("name", "priority", "requires_memory_per_device", "min_devices")


@dataclass(frozen=True)
class SetTaskRequest(Request):
    """`meow set NAME.ATTR VALUE`: one of SETTABLE_ATTRS, typed (never evaluated)."""

    op: ClassVar[str] = "set_task"
    target: str
    attr: str
    value: Any

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> SetTaskRequest:
        target, attr = _get(args, "target", str), _get(args, "attr", str)
        if attr not in SETTABLE_ATTRS:
            raise BadRequest(f"cannot set {attr!r}; settable: {', '.join(SETTABLE_ATTRS)}")
        value = args.get("value")
        if attr == "name":
            value = validate_name(value)
        elif attr == "requires_memory_per_device":
            value = validate_memory_request(value)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"{attr} must be a whole number")
        elif attr == "min_devices" and not 0 <= value <= 1024:
            raise BadRequest("min_devices must be between 0 and 1024")
        elif attr == "priority" and not -(2**31) <= value < 2**31:
            raise BadRequest("priority out of range")
        return cls(target, attr, value)

    def to_args(self) -> dict[str, Any]:
        return {"target": self.target, "attr": self.attr, "value": self.value}


@dataclass(frozen=True)
class SetSettingRequest(Request):
    """`meow set KEY VALUE` for a daemon setting; checked against meowd.config."""

    op: ClassVar[str] = "set_setting"
    key: str
    value: Any

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> SetSettingRequest:
        value = args.get("value")
        if not (value is None or isinstance(value, bool | int | float | str) or (
                isinstance(value, list) and all(isinstance(v, int) for v in value))):
            raise BadRequest("a setting's value must be a number, string, true/false or a "
                             "list of numbers")
        return cls(_get(args, "key", str).replace("-", "_"), value)

    def to_args(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value}


@dataclass(frozen=True)
class CleanRequest(Request):
    """Forget finished tasks (done/failed/killed/lost) and delete their logs, by the time
    they ended: before/after (epoch seconds), or all of them."""

    op: ClassVar[str] = "clean"
    before: float | None = None
    after: float | None = None
    all: bool = False

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> CleanRequest:
        before = _get(args, "before", (int, float), None)
        after = _get(args, "after", (int, float), None)
        everything = _get(args, "all", bool, False)
        if before is None and after is None and not everything:
            raise BadRequest("say which tasks to clean: --before, --after or --all")
        return cls(before, after, everything)

    def to_args(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "all": self.all}


REQUESTS: dict[str, type[Request]] = {
    cls.op: cls
    for cls in (
        PingRequest, CreateRequest, ListRequest, ShowRequest, WaitRequest, KillRequest,
        CancelRequest, ResumeRequest, RemoveRequest, DevicesRequest, ExitRequest,
        SetTaskRequest, SetSettingRequest, CleanRequest, SubscribeRequest, RetryRequest,
        UsageRequest,
    )
}


def request_to_wire(request: Request) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "op": request.op, "args": request.to_args()}


def request_from_wire(message: dict[str, Any]) -> Request:
    version = message.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version!r} not supported (this daemon speaks {PROTOCOL_VERSION}); "
            "restart the daemon after upgrading meow (`meow exit`)"
        )
    op = message.get("op")
    cls = REQUESTS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise BadRequest(f"unknown request {op!r}")
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise BadRequest("args must be a map")
    return cls.from_args(args)


@dataclass(frozen=True)
class ReplyWithTail:
    """A handler's result whose reply frame is followed by `tail`, raw bytes on the same
    stream (`reply` says how many): for bodies larger than a frame may be, which the
    client streams through without decoding (`list` with `json`)."""

    reply: dict[str, Any]
    tail: bytes


def ok_reply(result: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": True, "result": result}


def error_reply(error: MeowError) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": False,
            "error": {"code": error.code, "message": error.message}}


@dataclass
class BulkResult:
    """Per-task outcome of a bulk command, as Cattino reports it."""

    success: list[str] = field(default_factory=list)
    no_op: list[str] = field(default_factory=list)
    failure: list[tuple[str, str]] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return {"success": self.success, "no_op": self.no_op,
                "failure": [list(f) for f in self.failure]}
