"""Stopping and restarting the daemon never loses a task."""

import os
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import MeowEnv, wait_for
from tests.daemon.test_create import gate


@pytest.mark.parametrize("how", ["exit", "kill9"])
def test_restart_keeps_queue_and_running_tasks(meow_env: MeowEnv, tmp_path: Path, how: str):
    meow_env.meow("create", gate(tmp_path, "go") + "; exit 4", "-n", "runner", "-c", "2",
                  "-M", "20000")
    runner = meow_env.wait_status("runner", "running")
    for i in range(5):
        meow_env.meow("create", "true", "-n", f"q{i}", "-M", "20000", "-p", str(i))
    if how == "exit":
        assert "left running" in meow_env.meow("exit").stdout
        meow_env.daemon.wait(10)
    else:
        meow_env.kill9()
    db = sqlite3.connect(meow_env.paths.database)
    statuses = dict(db.execute("SELECT fullname, status FROM tasks").fetchall())
    assert statuses == {"runner": "running", **{f"q{i}": "waiting" for i in range(5)}}
    meow_env.start()
    tasks = meow_env.tasks()
    assert tasks["runner"]["status"] == "running"
    assert tasks["runner"]["devices"] == runner["devices"]  # still reserved
    assert all(tasks[f"q{i}"]["status"] == "waiting" for i in range(5))
    (tmp_path / "go").touch()
    assert meow_env.wait_status("runner", "failed")["exit_code"] == 4  # real exit code
    for i in range(5):
        meow_env.wait_status(f"q{i}", "done")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_task_that_ends_while_no_daemon_runs_gets_its_exit_code(meow_env: MeowEnv, tmp_path):
    meow_env.meow("create", gate(tmp_path, "go") + "; exit 9", "-n", "offline", "-c", "0")
    meow_env.wait_status("offline", "running")
    meow_env.kill9()
    (tmp_path / "go").touch()
    wait_for(lambda: list(meow_env.paths.tasks.glob("*/attempt-1.exit")), what="exit file")
    meow_env.start()
    task = meow_env.wait_status("offline", "failed")
    assert task["exit_code"] == 9


def test_vanished_task_is_marked_lost(meow_env: MeowEnv):
    meow_env.meow("create", "sleep 60", "-n", "vanish", "-c", "0")
    meow_env.wait_status("vanish", "running")
    with meow_env.client() as c:
        pid = c.show("vanish")["pid"]
    meow_env.kill9()
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or
             Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", what="task death")
    meow_env.start()
    task = meow_env.wait_status("vanish", "lost", "failed")
    assert task["status"] == "lost" and "vanished" in task["reason"]


def test_exit_kill_kills_running_tasks(meow_env: MeowEnv):
    meow_env.meow("create", "sleep 60", "-n", "victim", "-c", "0")
    meow_env.wait_status("victim", "running")
    with meow_env.client() as c:
        pid = c.show("victim")["pid"]
    assert "killed" in meow_env.meow("exit", "--kill").stdout
    meow_env.daemon.wait(10)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="task to die")
    meow_env.start()
    assert meow_env.status("victim") == "killed"


def test_second_daemon_refuses_to_start(meow_env: MeowEnv):
    import subprocess

    from tests.conftest import BIN

    result = subprocess.run([str(BIN / "meowd")], env=meow_env.env, capture_output=True,
                            text=True, timeout=20)
    assert result.returncode == 3 and "another meowd" in result.stderr
    assert meow_env.meow("test").returncode == 0
