"""The wrapper every local attempt runs in: the command runs in a subshell of it, as if
in a fresh `sh -c`, and a restarted meowd that lost the attempt's pid finds the wrapper,
not that subshell."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from meowd.executors.local import find_wrapper
from tests.conftest import MeowEnv, wait_for
from tests.daemon.test_create import gate


def test_command_sees_no_wrapper_arguments_and_default_signals(meow_env: MeowEnv,
                                                              tmp_path: Path):
    out = tmp_path / "out"
    # $# and $1 as in `sh -c CMD`; TERM is not caught by the subshell (SigCgt of the
    # shell running the compound command, in hex, has no bit 15), so `kill` works.
    meow_env.meow("create", f'echo "[$#][$1][$0]" > {out}; '
                  f"grep SigCgt /proc/$(sh -c 'echo $PPID')/status >> {out}",
                  "-n", "args", "-c", "0")
    meow_env.wait_status("args", "done")
    first, sigcgt = out.read_text().splitlines()
    assert first == "[0][][meow-task]"
    assert not int(sigcgt.split()[1], 16) & (1 << (15 - 1))


def test_restart_without_a_recorded_pid_adopts_the_wrapper(meow_env: MeowEnv,
                                                          tmp_path: Path):
    """A daemon killed between the spawn and recording the pid: the next one finds the
    wrapper by its argv (which its subshell shares), waits for it and gets its exit code."""
    meow_env.meow("create", gate(tmp_path, "go") + "; exit 4", "-n", "lostpid", "-c", "0")
    task = meow_env.wait_status("lostpid", "running")
    with meow_env.client() as c:
        wrapper = c.show("lostpid")["pid"]
    exit_file = str(meow_env.paths.tasks / str(task["id"]) / "attempt-1.exit")
    assert os.getsid(wrapper) == wrapper  # the session leader; its subshell is not
    assert find_wrapper(exit_file) == wrapper
    meow_env.kill9()
    with sqlite3.connect(meow_env.paths.database) as db:
        db.execute("UPDATE attempts SET pid = NULL, create_time = NULL WHERE task_id = ?",
                   (task["id"],))
    meow_env.start()
    assert meow_env.tasks()["lostpid"]["status"] == "running"
    with meow_env.client() as c:
        assert c.show("lostpid")["pid"] == wrapper
    (tmp_path / "go").touch()
    assert meow_env.wait_status("lostpid", "failed")["exit_code"] == 4
    wait_for(lambda: not Path(f"/proc/{wrapper}").exists()
             or Path(f"/proc/{wrapper}/stat").read_text().split(") ")[1][0] == "Z",
             what="the wrapper to end")
