"""SQLite store (WAL): tasks, attempts, events, and each creating environment once.

The controller is the only writer. Every change is committed before the daemon
answers the request that caused it, so an acknowledged task survives `kill -9`.
Environments are content-addressed (sha256 of their canonical msgpack): 10,000 tasks
created from one shell share one row instead of carrying 10,000 copies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from meowd.core.errors import StoreUnavailable
from meowd.core.estimates import HISTORY_LENGTH
from meowd.core.models import NO_USAGE, Task, TaskStatus, TaskUsage

log = logging.getLogger("meowd.store")

SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value ANY) STRICT;
CREATE TABLE IF NOT EXISTS envs (hash TEXT PRIMARY KEY, data BLOB NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    fullname TEXT NOT NULL UNIQUE,
    command TEXT NOT NULL,
    cwd TEXT NOT NULL,
    env_hash TEXT NOT NULL,
    priority INTEGER NOT NULL,
    min_devices INTEGER NOT NULL,
    memory ANY NOT NULL,            -- MiB (integer) or a ratio of each device's total (real)
    status TEXT NOT NULL,
    devices TEXT NOT NULL,          -- JSON list of GPU indices
    reserved_mib TEXT NOT NULL,     -- JSON list, per device
    exit_code INTEGER,
    reason TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    attempts INTEGER NOT NULL,
    depends_on TEXT NOT NULL DEFAULT '[]',   -- JSON list of task ids
    enforce_memory INTEGER NOT NULL DEFAULT 0,
    warning TEXT,
    usage TEXT NOT NULL DEFAULT '{}',        -- JSON TaskUsage
    time_limit REAL,
    max_retries INTEGER NOT NULL DEFAULT 0,
    resumable INTEGER NOT NULL DEFAULT 0,
    retries_used INTEGER NOT NULL DEFAULT 0,
    end_reason TEXT,
    executor TEXT NOT NULL DEFAULT 'local',
    deadline REAL
) STRICT;
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status);
CREATE TABLE IF NOT EXISTS attempts (
    task_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    pid INTEGER,
    create_time REAL,               -- the process's start time: a reused pid never matches
    devices TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    exit_code INTEGER,
    reason TEXT,
    stdout TEXT NOT NULL,
    stderr TEXT NOT NULL,
    exit_file TEXT NOT NULL,
    end_reason TEXT,
    job_id TEXT,                    -- an external system's id (Slurm)
    deadline REAL,
    usage TEXT NOT NULL DEFAULT '{}',
    memory ANY,                     -- the memory request this attempt ran with
    PRIMARY KEY (task_id, n)
) STRICT;
CREATE TABLE IF NOT EXISTS runtimes (
    key TEXT NOT NULL,              -- what makes tasks alike (meowd.core.estimates)
    runtime REAL NOT NULL,          -- seconds a successful attempt ran
    ts REAL NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS runtimes_key ON runtimes(key, ts);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,            -- made by the client: a retried create is answered once
    ts REAL NOT NULL,
    answer BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    task_id INTEGER,
    kind TEXT NOT NULL,
    detail TEXT
) STRICT;
-- `meow show` and forgetting a task read a task's events: without this, a scan of every
-- task's (100,000 tasks: ~6 ms a show, and `meow clean` of N tasks N scans).
CREATE INDEX IF NOT EXISTS events_task ON events(task_id);
"""


@dataclass
class Attempt:
    task_id: int
    n: int
    pid: int | None
    create_time: float | None
    devices: list[int]
    started_at: float
    stdout: str
    stderr: str
    exit_file: str
    ended_at: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    end_reason: str | None = None
    job_id: str | None = None
    deadline: float | None = None
    usage: TaskUsage = field(default_factory=TaskUsage)
    memory: int | float | None = None

    def to_wire(self) -> dict[str, Any]:
        return {**self.__dict__, "usage": self.usage.to_wire()}

    def file(self, ext: str) -> str:
        """`attempt-N.<ext>` beside this attempt's exit file (its note, its cgroup)."""
        return f"{self.exit_file.removesuffix('.exit')}.{ext}"


def env_hash(env: dict[str, str]) -> tuple[str, bytes]:
    data = msgpack.packb(sorted(env.items()), use_bin_type=True)
    return hashlib.sha256(data).hexdigest(), data


# Columns added after schema 1, with the statement that adds each to an older database.
_MIGRATIONS = {
    2: [
        "ALTER TABLE tasks ADD COLUMN depends_on TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE tasks ADD COLUMN enforce_memory INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tasks ADD COLUMN warning TEXT",
        "ALTER TABLE tasks ADD COLUMN usage TEXT NOT NULL DEFAULT '{}'",
    ],
    3: [
        "ALTER TABLE tasks ADD COLUMN time_limit REAL",
        "ALTER TABLE tasks ADD COLUMN max_retries INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tasks ADD COLUMN resumable INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tasks ADD COLUMN retries_used INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tasks ADD COLUMN end_reason TEXT",
        "ALTER TABLE tasks ADD COLUMN executor TEXT NOT NULL DEFAULT 'local'",
        "ALTER TABLE tasks ADD COLUMN deadline REAL",
        "ALTER TABLE attempts ADD COLUMN end_reason TEXT",
        "ALTER TABLE attempts ADD COLUMN job_id TEXT",
        "ALTER TABLE attempts ADD COLUMN deadline REAL",
        "ALTER TABLE attempts ADD COLUMN usage TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE attempts ADD COLUMN memory ANY",
    ],
}


_EMPTY_USAGE = TaskUsage()
_NO_USAGE = json.dumps(_EMPTY_USAGE.to_wire())


def _json_list(values: Sequence[int]) -> str:
    return json.dumps(values) if values else "[]"  # most lists are empty: skip the encoder


def _task_row(t: Task) -> dict[str, Any]:
    """Column name -> value. The only place that knows how a Task maps to its row."""
    usage = t.usage
    return {
        "id": t.id, "name": t.name, "fullname": t.fullname, "command": t.command, "cwd": t.cwd,
        "env_hash": t.env_hash, "priority": t.priority, "min_devices": t.min_devices,
        "memory": t.requires_memory_per_device, "status": str(t.status),
        "devices": _json_list(t.devices), "reserved_mib": _json_list(t.reserved_mib),
        "exit_code": t.exit_code, "reason": t.reason, "created_at": t.created_at,
        "started_at": t.started_at, "ended_at": t.ended_at, "attempts": t.attempts,
        "depends_on": _json_list(t.depends_on), "enforce_memory": int(t.enforce_memory),
        "warning": t.warning,
        "usage": _NO_USAGE if usage == _EMPTY_USAGE else json.dumps(usage.to_wire()),
        "time_limit": t.time_limit, "max_retries": t.max_retries,
        "resumable": int(t.resumable), "retries_used": t.retries_used,
        "end_reason": t.end_reason, "executor": t.executor, "deadline": t.deadline,
    }


_TASK_COLUMNS = tuple(_task_row(Task(0, "", "", "", "", "")))
_SELECT_TASKS = f"SELECT {', '.join(_TASK_COLUMNS)} FROM tasks"
# Positional for the bulk insert: binding 22 named parameters per row cost a third of a
# 10,000-task create. The values come from `_task_row`, in its (= _TASK_COLUMNS) order.
_INSERT_TASK = (f"INSERT INTO tasks ({', '.join(_TASK_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_TASK_COLUMNS))})")
# Identity and origin never change after creation.
_UPDATE_TASK = "UPDATE tasks SET " + ", ".join(
    f"{c} = :{c}" for c in _TASK_COLUMNS if c not in {"id", "command", "cwd", "env_hash",
                                                       "created_at"}
) + " WHERE id = :id"


def _task_from_row(row: tuple[Any, ...], shared: dict[str, str] | None = None) -> Task:
    """`shared` makes the strings most tasks have in common (cwd, environment hash,
    executor) one object each: 100,000 restored tasks are ~20 MiB smaller."""
    r = dict(zip(_TASK_COLUMNS, row, strict=True))
    same = (lambda s: s) if shared is None else (lambda s: shared.setdefault(s, s))
    fullname = r["fullname"]
    return Task(
        id=r["id"], name=fullname if r["name"] == fullname else r["name"], fullname=fullname,
        command=r["command"],
        cwd=same(r["cwd"]), env_hash=same(r["env_hash"]), priority=r["priority"],
        min_devices=r["min_devices"], requires_memory_per_device=r["memory"],
        status=TaskStatus(r["status"]), devices=_list(r["devices"]),
        reserved_mib=_list(r["reserved_mib"]), exit_code=r["exit_code"], reason=r["reason"],
        created_at=r["created_at"], started_at=r["started_at"], ended_at=r["ended_at"],
        attempts=r["attempts"], depends_on=_list(r["depends_on"]),
        enforce_memory=bool(r["enforce_memory"]), warning=r["warning"],
        usage=NO_USAGE if r["usage"] == _NO_USAGE
        else TaskUsage.from_wire(json.loads(r["usage"])),
        time_limit=r["time_limit"], max_retries=r["max_retries"],
        resumable=bool(r["resumable"]), retries_used=r["retries_used"],
        end_reason=r["end_reason"], executor=same(r["executor"]), deadline=r["deadline"],
    )


def _rolled_back() -> sqlite3.OperationalError:
    """A unit whose transaction SQLite itself rolled back after an error that a caller
    caught: none of its writes are stored, so all of them go to the backlog."""
    return sqlite3.OperationalError("the transaction was rolled back after an error")


def _list(text: str) -> tuple[int, ...]:
    return () if text == "[]" else tuple(json.loads(text))  # most are empty: no decoder


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of this process (kill -9); only
        # an OS crash or power cut may lose the last commits. FULL would fsync each one.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._ops: list[tuple[str, Any, bool]] | None = None
        self._began = False
        """The unit in progress has begun its transaction (see `transaction`)."""
        self.backlog: list[list[tuple[str, Any, bool]]] = []
        self.error: str | None = None
        self._db.execute("BEGIN IMMEDIATE")
        self._ops = []  # the schema is written directly, never backlogged
        try:
            fresh = self._db.execute(
                "SELECT count(*) FROM sqlite_master WHERE name = 'meta'").fetchone()[0] == 0
            version = None if fresh else self._meta("schema_version")
            if version is not None and version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{path}: schema version {version} is newer than this meowd "
                    f"({SCHEMA_VERSION}); upgrade meow"
                )
            tables = {row[0] for row in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            for new_version in range(version or SCHEMA_VERSION, SCHEMA_VERSION):
                for statement in _MIGRATIONS[new_version + 1]:
                    if statement.split()[2] in tables:  # a missing table is made whole below
                        self._db.execute(statement)
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._set_meta("schema_version", SCHEMA_VERSION)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        finally:
            self._ops = None
        self._db.execute("COMMIT")
        self._envs: dict[str, dict[str, str]] = {}

    @contextmanager
    def transaction(self, critical: bool = False) -> Iterator[None]:
        """One atomic, committed unit; nested uses join the outer one.

        A unit that cannot be committed (disk full, I/O error) is rolled back. With
        `critical` (a user's request), StoreUnavailable is raised and the caller changes
        nothing. Otherwise (a transition that already happened: a task ended) its writes
        join the backlog, replayed in order by `flush()` once the disk has room; until
        then every later write queues behind it, so the store never records them out of
        order, and `degraded` says why."""
        if self._ops is not None:
            yield
            return
        if critical and self.backlog:
            raise StoreUnavailable(self._unavailable())
        self._ops = []
        self._began = False
        try:
            try:  # BEGIN comes with the first write (`_write`): a unit with none is free
                yield
                if self._db.in_transaction:
                    self._db.execute("COMMIT")
                elif self._began:
                    raise _rolled_back()
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if not isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
                    raise
                self.error = str(exc)
                if critical:
                    raise StoreUnavailable(self._unavailable()) from None
                log.error("cannot record a change (%s): kept in memory, retried until stored",
                          exc)
                self.backlog.append(self._ops)
            else:
                if self.backlog and self._ops and self.backlog[-1] is not self._ops:
                    self.backlog.append(self._ops)
        finally:
            self._ops = None

    def _write(self, sql: str, params: Any = (), many: bool = False) -> None:
        """Every write goes through here, so a unit's writes can be replayed."""
        if self._ops is None:
            with self.transaction():
                self._write(sql, params, many)
            return
        self._ops.append((sql, params, many))
        if not self.backlog:
            if not self._db.in_transaction:
                if self._began:  # SQLite rolled the unit back (SQLITE_FULL, IOERR, NOMEM)
                    raise _rolled_back()
                self._db.execute("BEGIN IMMEDIATE")
                self._began = True
            (self._db.executemany if many else self._db.execute)(sql, params)

    @property
    def degraded(self) -> str | None:
        """Why changes are waiting to be stored (None when all is stored)."""
        if not self.backlog:
            return None
        return (f"{sum(map(len, self.backlog))} changes not yet stored under "
                f"{self.path.parent}: {self.error}")

    def _unavailable(self) -> str:
        return f"meowd cannot write its state under {self.path.parent}: {self.error}"

    def flush(self) -> bool:
        """Replay the backlog in one transaction; True when everything is stored."""
        if not self.backlog:
            return True
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for ops in self.backlog:
                for sql, params, many in ops:
                    (self._db.executemany if many else self._db.execute)(sql, params)
            self._db.execute("COMMIT")
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self.error = str(exc)
            return False
        log.warning("stored %d changes that had waited for the disk", sum(map(len, self.backlog)))
        self.backlog.clear()
        self.error = None
        return True

    def _meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: Any) -> None:
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- tasks ---------------------------------------------------------------------------
    def load_tasks(self) -> list[Task]:
        shared: dict[str, str] = {}
        return [_task_from_row(row, shared)
                for row in self._db.execute(f"{_SELECT_TASKS} ORDER BY id")]

    def next_task_id(self) -> int:
        """Ids are never reused, even after `meow remove`."""
        stored = self._meta("next_task_id") or 1
        row = self._db.execute("SELECT max(id) FROM tasks").fetchone()
        return max(stored, (row[0] or 0) + 1)

    def insert_tasks(self, tasks: list[Task]) -> None:
        with self.transaction():
            self._write(_INSERT_TASK, [tuple(_task_row(t).values()) for t in tasks], many=True)
            if tasks:
                self._set_meta("next_task_id", tasks[-1].id + 1)
            now = time.time()
            self._write(
                "INSERT INTO events (ts, task_id, kind, detail) VALUES (?, ?, 'created', NULL)",
                [(now, t.id) for t in tasks], many=True,
            )

    def update_task(self, task: Task, event: str | None = None, detail: str | None = None) -> None:
        with self.transaction():
            self._write(_UPDATE_TASK, _task_row(task))
            if event:
                self.event(task.id, event, detail)

    def delete_tasks(self, ids: Iterable[int]) -> None:
        ids = [(i,) for i in ids]
        with self.transaction():
            self._write("DELETE FROM tasks WHERE id = ?", ids, many=True)
            self._write("DELETE FROM attempts WHERE task_id = ?", ids, many=True)
            # A forgotten task's history goes with it (events would grow forever).
            self._write("DELETE FROM events WHERE task_id = ?", ids, many=True)

    def event(self, task_id: int | None, kind: str, detail: str | None = None) -> None:
        self._write(
            "INSERT INTO events (ts, task_id, kind, detail) VALUES (?, ?, ?, ?)",
            (time.time(), task_id, kind, detail),
        )

    def events(self, task_id: int) -> list[tuple[float, str, str | None]]:
        return self._db.execute(
            "SELECT ts, kind, detail FROM events WHERE task_id = ? ORDER BY id", (task_id,)
        ).fetchall()

    # -- environments --------------------------------------------------------------------
    def put_env(self, env: dict[str, str]) -> str:
        digest, data = env_hash(env)
        if digest not in self._envs:
            self._write(
                "INSERT OR IGNORE INTO envs (hash, data) VALUES (?, ?)", (digest, data)
            )
            self._envs[digest] = env
        return digest

    def get_env(self, digest: str) -> dict[str, str]:
        env = self._envs.get(digest)
        if env is None:
            row = self._db.execute("SELECT data FROM envs WHERE hash = ?", (digest,)).fetchone()
            env = dict(msgpack.unpackb(row[0], raw=False)) if row else {}
            self._envs[digest] = env
        return env

    def count_envs(self) -> int:
        return self._db.execute("SELECT count(*) FROM envs").fetchone()[0]

    # -- attempts ------------------------------------------------------------------------
    def insert_attempt(self, a: Attempt) -> None:
        self._write(
            "INSERT OR REPLACE INTO attempts (task_id, n, pid, create_time, devices, started_at, "
            "ended_at, exit_code, reason, stdout, stderr, exit_file, end_reason, job_id, "
            "deadline, usage, memory) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (a.task_id, a.n, a.pid, a.create_time, _json_list(a.devices), a.started_at,
             a.ended_at, a.exit_code, a.reason, a.stdout, a.stderr, a.exit_file, a.end_reason,
             a.job_id, a.deadline,
             _NO_USAGE if a.usage == _EMPTY_USAGE else json.dumps(a.usage.to_wire()),
             a.memory),
        )

    def delete_attempt(self, task_id: int, n: int) -> None:
        self._write("DELETE FROM attempts WHERE task_id = ? AND n = ?", (task_id, n))

    def attempt_started(self, a: Attempt) -> None:
        """Record what the executor says of a started attempt: its process or job."""
        self._write("UPDATE attempts SET pid = ?, create_time = ?, job_id = ? "
                    "WHERE task_id = ? AND n = ?",
                    (a.pid, a.create_time, a.job_id, a.task_id, a.n))

    def attempts(self, task_id: int) -> list[Attempt]:
        rows = self._db.execute(
            "SELECT task_id, n, pid, create_time, devices, started_at, stdout, stderr, exit_file, "
            "ended_at, exit_code, reason, end_reason, job_id, deadline, usage, memory "
            "FROM attempts WHERE task_id = ? ORDER BY n", (task_id,)
        ).fetchall()
        return [
            Attempt(r[0], r[1], r[2], r[3], json.loads(r[4]), *r[5:15],
                    usage=TaskUsage.from_wire(json.loads(r[15])), memory=r[16])
            for r in rows
        ]

    def last_attempt(self, task_id: int) -> Attempt | None:
        attempts = self.attempts(task_id)
        return attempts[-1] if attempts else None

    # -- runtime history (estimates for backfill) ----------------------------------------
    def record_runtime(self, key: str, runtime: float) -> None:
        self._write("INSERT INTO runtimes (key, runtime, ts) VALUES (?, ?, ?)",
                    (key, runtime, time.time()))

    def runtimes(self) -> dict[str, list[float]]:
        """The latest runtimes per key (as many as estimates use), oldest first."""
        found: dict[str, list[float]] = {}
        for key, runtime in self._db.execute(
                "SELECT key, runtime FROM (SELECT key, runtime, ts, rowid AS n, row_number() "
                "OVER (PARTITION BY key ORDER BY ts DESC, rowid DESC) AS r FROM runtimes) "
                "WHERE r <= ? ORDER BY ts, n", (HISTORY_LENGTH,)):
            found.setdefault(key, []).append(runtime)
        return found

    # -- request ids and housekeeping ---------------------------------------------------
    def answer_of(self, request_id: str) -> Any:
        """The stored answer of a create already applied (a client's retry), or None."""
        row = self._db.execute("SELECT answer FROM requests WHERE id = ?",
                               (request_id,)).fetchone()
        return None if row is None else msgpack.unpackb(row[0], raw=False)

    def remember_answer(self, request_id: str, answer: Any) -> None:
        self._write("INSERT OR REPLACE INTO requests (id, ts, answer) VALUES (?, ?, ?)",
                    (request_id, time.time(), msgpack.packb(answer, use_bin_type=True)))

    def prune(self, before: float) -> dict[str, int]:
        """Forget what only history needs: request answers and daemon-wide events older
        than `before`, and environments no task refers to."""
        counts = {}
        with self.transaction(critical=True):
            for table, sql in (
                ("requests", "DELETE FROM requests WHERE ts < ?"),
                ("events", "DELETE FROM events WHERE ts < ? AND (task_id IS NULL OR task_id "
                           "NOT IN (SELECT id FROM tasks))"),
            ):
                counts[table] = self._db.execute(sql, (before,)).rowcount
                self._ops.append((sql, (before,), False))  # type: ignore[union-attr]
            sql = "DELETE FROM envs WHERE hash NOT IN (SELECT env_hash FROM tasks)"
            counts["envs"] = self._db.execute(sql).rowcount
            self._ops.append((sql, (), False))  # type: ignore[union-attr]
            # Runtimes beyond what estimates read (three rows per task that ended: the
            # history must not grow with every task ever run).
            sql = ("DELETE FROM runtimes WHERE rowid IN (SELECT n FROM (SELECT rowid AS n, "
                   "row_number() OVER (PARTITION BY key ORDER BY ts DESC, rowid DESC) AS r "
                   "FROM runtimes) WHERE r > ?)")
            counts["runtimes"] = self._db.execute(sql, (HISTORY_LENGTH,)).rowcount
            self._ops.append((sql, (HISTORY_LENGTH,), False))  # type: ignore[union-attr]
        live = {row[0] for row in self._db.execute("SELECT hash FROM envs")}
        self._envs = {k: v for k, v in self._envs.items() if k in live}
        return counts

    def integrity_check(self) -> str:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    def close(self) -> None:
        self._db.close()
