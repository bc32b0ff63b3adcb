"""SQLite store (WAL): tasks, attempts, events, and each creating environment once.

The controller is the only writer. Every change is committed before the daemon
answers the request that caused it, so an acknowledged task survives `kill -9`.
Environments are content-addressed (sha256 of their canonical msgpack): 10,000 tasks
created from one shell share one row instead of carrying 10,000 copies.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from meowd.core.models import Task, TaskStatus

SCHEMA_VERSION = 1

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
    attempts INTEGER NOT NULL
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
    PRIMARY KEY (task_id, n)
) STRICT;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    task_id INTEGER,
    kind TEXT NOT NULL,
    detail TEXT
) STRICT;
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

    def to_wire(self) -> dict[str, Any]:
        return dict(self.__dict__)


def env_hash(env: dict[str, str]) -> tuple[str, bytes]:
    data = msgpack.packb(sorted(env.items()), use_bin_type=True)
    return hashlib.sha256(data).hexdigest(), data


_TASK_COLUMNS = (
    "id, name, fullname, command, cwd, env_hash, priority, min_devices, memory, status, "
    "devices, reserved_mib, exit_code, reason, created_at, started_at, ended_at, attempts"
)


def _task_row(t: Task) -> tuple[Any, ...]:
    return (
        t.id, t.name, t.fullname, t.command, t.cwd, t.env_hash, t.priority, t.min_devices,
        t.requires_memory_per_device, str(t.status), json.dumps(t.devices),
        json.dumps(t.reserved_mib), t.exit_code, t.reason, t.created_at, t.started_at,
        t.ended_at, t.attempts,
    )


def _task_from_row(row: tuple[Any, ...]) -> Task:
    (id_, name, fullname, command, cwd, env_h, priority, min_devices, memory, status, devices,
     reserved, exit_code, reason, created_at, started_at, ended_at, attempts) = row
    return Task(
        id=id_, name=name, fullname=fullname, command=command, cwd=cwd, env_hash=env_h,
        priority=priority, min_devices=min_devices, requires_memory_per_device=memory,
        status=TaskStatus(status), devices=json.loads(devices), reserved_mib=json.loads(reserved),
        exit_code=exit_code, reason=reason, created_at=created_at, started_at=started_at,
        ended_at=ended_at, attempts=attempts,
    )


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of this process (kill -9); only
        # an OS crash or power cut may lose the last commits. FULL would fsync each one.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._in_tx = False
        with self.transaction():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            version = self._meta("schema_version")
            if version is None:
                self._set_meta("schema_version", SCHEMA_VERSION)
            elif version != SCHEMA_VERSION:
                raise RuntimeError(
                    f"{path}: schema version {version}, this meowd knows {SCHEMA_VERSION}"
                )
        self._envs: dict[str, dict[str, str]] = {}

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic, committed unit; nested uses join the outer one."""
        if self._in_tx:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._in_tx = False

    def _meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- tasks ---------------------------------------------------------------------------
    def load_tasks(self) -> list[Task]:
        rows = self._db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks ORDER BY id").fetchall()
        return [_task_from_row(row) for row in rows]

    def next_task_id(self) -> int:
        """Ids are never reused, even after `meow remove`."""
        stored = self._meta("next_task_id") or 1
        row = self._db.execute("SELECT max(id) FROM tasks").fetchone()
        return max(stored, (row[0] or 0) + 1)

    def insert_tasks(self, tasks: list[Task]) -> None:
        with self.transaction():
            self._db.executemany(
                f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({', '.join('?' * 18)})",
                [_task_row(t) for t in tasks],
            )
            if tasks:
                self._set_meta("next_task_id", tasks[-1].id + 1)
            now = time.time()
            self._db.executemany(
                "INSERT INTO events (ts, task_id, kind, detail) VALUES (?, ?, 'created', NULL)",
                [(now, t.id) for t in tasks],
            )

    def update_task(self, task: Task, event: str | None = None, detail: str | None = None) -> None:
        with self.transaction():
            row = _task_row(task)
            self._db.execute(
                "UPDATE tasks SET name=?, fullname=?, priority=?, min_devices=?, memory=?, "
                "status=?, devices=?, reserved_mib=?, exit_code=?, reason=?, started_at=?, "
                "ended_at=?, attempts=? WHERE id=?",
                (*row[1:3], *row[6:13], row[13], row[15], row[16], row[17], task.id),
            )
            if event:
                self.event(task.id, event, detail)

    def delete_tasks(self, ids: Iterable[int]) -> None:
        ids = [(i,) for i in ids]
        with self.transaction():
            self._db.executemany("DELETE FROM tasks WHERE id = ?", ids)
            self._db.executemany("DELETE FROM attempts WHERE task_id = ?", ids)
            self._db.executemany(
                "INSERT INTO events (ts, task_id, kind) VALUES (?, ?, 'removed')",
                [(time.time(), i) for (i,) in ids],
            )

    def event(self, task_id: int | None, kind: str, detail: str | None = None) -> None:
        self._db.execute(
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
            self._db.execute(
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
        self._db.execute(
            "INSERT OR REPLACE INTO attempts (task_id, n, pid, create_time, devices, started_at, "
            "ended_at, exit_code, reason, stdout, stderr, exit_file) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (a.task_id, a.n, a.pid, a.create_time, json.dumps(a.devices), a.started_at,
             a.ended_at, a.exit_code, a.reason, a.stdout, a.stderr, a.exit_file),
        )

    def attempts(self, task_id: int) -> list[Attempt]:
        rows = self._db.execute(
            "SELECT task_id, n, pid, create_time, devices, started_at, stdout, stderr, exit_file, "
            "ended_at, exit_code, reason FROM attempts WHERE task_id = ? ORDER BY n", (task_id,)
        ).fetchall()
        return [
            Attempt(r[0], r[1], r[2], r[3], json.loads(r[4]), *r[5:]) for r in rows
        ]

    def last_attempt(self, task_id: int) -> Attempt | None:
        attempts = self.attempts(task_id)
        return attempts[-1] if attempts else None

    def integrity_check(self) -> str:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    def close(self) -> None:
        self._db.close()
