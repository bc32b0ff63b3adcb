"""State files are 0600 in 0700 directories whatever the umask of the shell that started
meowd (issue 11: the SQLite WAL was 0644)."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator

import pytest

from tests.conftest import MeowEnv


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # a usual login shell's; the daemon must not inherit it
    try:
        yield
    finally:
        os.umask(old)


def modes(root) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode)
            for p in [root, *root.rglob("*")] if not p.name.startswith("test-daemon")}


def test_state_files_are_private(meow_home: MeowEnv, umask_022, tmp_path):
    # Started by `meow create`, as users start it: the CLI creates meowd.log.
    meow_home.meow("create", "echo hi; echo oops >&2", "-n", "t", "-c", "0",
                   cwd=str(tmp_path))
    meow_home.wait_status("t", "done")
    meow_home.meow("set", "poll_interval", "2")  # the daemon writes config.toml
    found = modes(meow_home.home)
    for name in ("meow.db", "meow.db-wal", "meow.db-shm", "meowd.log", "config.toml",
                 "meowd.lock"):
        assert found.get(name) == 0o600, (name, found)
    assert any(name.endswith(".stdout.log") for name in found)
    # ledger/: this test home's private GPU ledger (MEOW_LEDGER=private); ledger files are
    # readable by every user by design (docs/ledger.md), here inside the 0700 home.
    loose = {name: oct(mode) for name, mode in found.items()
             if mode & 0o077 and not stat.S_ISSOCK((meow_home.home / name).lstat().st_mode)
             and not name.startswith("ledger/")}
    assert loose == {}
    assert found["."] == 0o700 and found["tasks"] == 0o700


def test_an_older_world_readable_database_is_tightened(meow_home: MeowEnv, umask_022):
    meow_home.home.mkdir(exist_ok=True)
    db = meow_home.home / "meow.db"
    sqlite3.connect(db).close()
    os.chmod(db, 0o644)
    meow_home.start()
    with meow_home.client() as c:
        c.ping()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    for suffix in ("-wal", "-shm"):
        assert stat.S_IMODE((meow_home.home / f"meow.db{suffix}").stat().st_mode) == 0o600
