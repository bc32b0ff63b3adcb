"""The SQLite store: a database written by an older meowd opens and keeps its tasks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from meowd.core.models import Task, TaskStatus
from meowd.store import SCHEMA_VERSION, Store

# The tasks table and meta of schema 1 (meow 0.1), as that version created them.
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY) STRICT;
CREATE TABLE envs (hash TEXT PRIMARY KEY, data BLOB NOT NULL) STRICT;
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, fullname TEXT NOT NULL UNIQUE,
    command TEXT NOT NULL, cwd TEXT NOT NULL, env_hash TEXT NOT NULL,
    priority INTEGER NOT NULL, min_devices INTEGER NOT NULL, memory ANY NOT NULL,
    status TEXT NOT NULL, devices TEXT NOT NULL, reserved_mib TEXT NOT NULL,
    exit_code INTEGER, reason TEXT, created_at REAL NOT NULL, started_at REAL,
    ended_at REAL, attempts INTEGER NOT NULL
) STRICT;
INSERT INTO meta VALUES ('schema_version', 1);
INSERT INTO tasks VALUES (7, 'old', 'old', 'true', '/', 'h', 2, 1, 0.5, 'waiting', '[]', '[]',
                          NULL, NULL, 1.0, NULL, NULL, 0);
"""


def test_a_schema_1_database_is_migrated_in_place(tmp_path: Path):
    path = tmp_path / "meow.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.close()
    store = Store(path)
    (task,) = store.load_tasks()
    assert (task.id, task.fullname, task.priority, task.requires_memory_per_device) == \
        (7, "old", 2, 0.5)
    assert task.depends_on == () and task.usage.gpu_peak_mib == {}
    task.depends_on, task.enforce_memory = [3], True
    task.usage.gpu_peak_mib[0] = 1234
    store.update_task(task)
    store.close()
    (again,) = Store(path).load_tasks()
    assert again.depends_on == (3,) and again.enforce_memory
    assert again.usage.gpu_peak_mib == {0: 1234}
    assert sqlite3.connect(path).execute(
        "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == SCHEMA_VERSION


def test_round_trip_of_every_field(tmp_path: Path):
    store = Store(tmp_path / "meow.db")
    task = Task(1, "t", "g/t", "echo", "/w", "h", priority=3, min_devices=2,
                requires_memory_per_device=1000, status=TaskStatus.RUNNING, devices=(0, 1),
                reserved_mib=(1000, 1000), created_at=5.0, started_at=6.0, attempts=1,
                depends_on=(9,), warning="hot")
    store.insert_tasks([task])
    (loaded,) = store.load_tasks()
    assert loaded == task


def test_prune_keeps_only_the_runtimes_estimates_read(tmp_path: Path):
    from meowd.core.estimates import HISTORY_LENGTH

    store = Store(tmp_path / "meow.db")
    for n in range(HISTORY_LENGTH + 20):
        store.record_runtime("a", float(n))
    store.record_runtime("b", 1.0)
    assert store.prune(before=0)["runtimes"] == 20
    runtimes = store.runtimes()
    assert runtimes["a"] == [float(n) for n in range(20, HISTORY_LENGTH + 20)]
    assert runtimes["b"] == [1.0]
    assert store._db.execute("SELECT count(*) FROM runtimes").fetchone()[0] == HISTORY_LENGTH + 1


def test_a_unit_sqlite_rolled_back_goes_to_the_backlog_whole(tmp_path: Path):
    """A write fails with SQLITE_FULL (SQLite then rolls the unit back) and the caller
    catches it, as the executor does per reported exit: the unit is not taken as
    committed, a later write of it does not start a second transaction, and every write
    of it is stored once there is room."""
    store = Store(tmp_path / "meow.db")
    tasks = [Task(i, f"t{i}", f"t{i}", "true", "/", "h") for i in (1, 2)]
    store.insert_tasks(tasks)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    with store.transaction():
        tasks[0].status = TaskStatus.DONE
        tasks[0].warning = "x" * 200_000  # needs pages the database may not grow by
        try:
            store.update_task(tasks[0])
        except sqlite3.OperationalError:
            pass
        tasks[1].status = TaskStatus.DONE
        try:
            store.update_task(tasks[1])
        except sqlite3.OperationalError:
            pass
    assert store.degraded and len(store.backlog) == 1 and len(store.backlog[0]) == 2
    store._db.execute("PRAGMA max_page_count = 1073741823")
    assert store.flush() and not store.degraded
    assert {t.id: t.status for t in store.load_tasks()} == {1: TaskStatus.DONE,
                                                            2: TaskStatus.DONE}
