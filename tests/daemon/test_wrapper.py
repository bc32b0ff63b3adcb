"""The wrapper every local attempt runs in: the command runs in a subshell of it, as if
in a fresh `sh -c` (a command that names `$$`, `$PPID` or `$0` gets a shell of its own),
and a restarted meowd that lost the attempt's pid finds the wrapper, never a fork of it."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import psutil

from meowd.executors.local import find_wrapper
from tests.conftest import MeowEnv, wait_for
from tests.daemon.test_create import gate


def test_the_command_sees_what_sh_c_would_show_it(meow_env: MeowEnv, tmp_path: Path):
    out = tmp_path / "out"
    meow_env.meow("create", f'echo "[$#][$1]" > {out}', "-n", "args", "-c", "0")
    assert meow_env.wait_status("args", "done") and out.read_text() == "[0][]\n"
    # `kill $$` ends the command, as in `sh -c`, and $PPID is the wrapper, not meowd.
    ppid, after = tmp_path / "ppid", tmp_path / "after"
    meow_env.meow("create", f"echo $PPID > {ppid}; kill $$; touch {after}", "-n", "self",
                  "-c", "0")
    task = meow_env.wait_status("self", "failed")
    assert task["exit_code"] == 128 + signal.SIGTERM and not after.exists()
    with sqlite3.connect(meow_env.paths.database) as db:
        wrapper = db.execute("SELECT pid FROM attempts WHERE task_id = ?",
                             (task["id"],)).fetchone()[0]
    assert int(ppid.read_text()) == wrapper != meow_env.daemon.pid


def test_restart_without_a_recorded_pid_adopts_the_wrapper(meow_env: MeowEnv,
                                                          tmp_path: Path):
    """A daemon killed between the spawn and recording the pid: the next one finds the
    wrapper by its argv (which its subshell shares), waits for it and gets its exit code."""
    meow_env.meow("create", gate(tmp_path, "go") + "; exit 4", "-n", "lostpid", "-c", "0")
    task = meow_env.wait_status("lostpid", "running")
    with meow_env.client() as c:
        wrapper = c.show("lostpid")["pid"]
    exit_file = str(meow_env.paths.tasks / str(task["id"]) / "attempt-1.exit")
    assert find_wrapper(exit_file) == wrapper
    _forget_pid(meow_env, task["id"])
    meow_env.start()
    assert meow_env.tasks()["lostpid"]["status"] == "running"
    with meow_env.client() as c:
        assert c.show("lostpid")["pid"] == wrapper
    (tmp_path / "go").touch()
    assert meow_env.wait_status("lostpid", "failed")["exit_code"] == 4


def test_an_orphaned_fork_of_the_command_is_no_wrapper(meow_env: MeowEnv, tmp_path: Path):
    """The wrapper ended while no daemon ran, leaving a `( ... ) &` of its command behind
    (with the wrapper's argv): the next daemon reads the exit file, and does not wait on
    that loop as if it were the wrapper."""
    meow_env.meow("create", "( while sleep 0.2; do :; done ) & " + gate(tmp_path, "go"),
                  "-n", "orphan", "-c", "0")
    task = meow_env.wait_status("orphan", "running")
    exit_file = meow_env.paths.tasks / str(task["id"]) / "attempt-1.exit"
    _forget_pid(meow_env, task["id"])
    (tmp_path / "go").touch()
    wait_for(exit_file.exists, what="the wrapper to end")
    forks = [p for p in psutil.process_iter(["cmdline"])
             if str(exit_file) in (p.info["cmdline"] or [])]
    try:
        assert forks  # the loop still runs, with the wrapper's argv
        assert find_wrapper(str(exit_file)) is None
        meow_env.start()
        assert meow_env.wait_status("orphan", "done")["exit_code"] == 0
    finally:
        for p in forks:
            p.kill()


def _forget_pid(env: MeowEnv, task_id: int) -> None:
    """kill -9 the daemon and drop the attempt's pid, as if it had died before storing it."""
    env.kill9()
    with sqlite3.connect(env.paths.database) as db:
        db.execute("UPDATE attempts SET pid = NULL, create_time = NULL WHERE task_id = ?",
                   (task_id,))
    assert os.path.exists(env.paths.database)
