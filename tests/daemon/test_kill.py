"""kill / cancel / resume / remove through the real CLI."""

import os
from pathlib import Path

import pytest

from tests.conftest import MeowEnv, dead, wait_for
from tests.daemon.test_create import gate


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_kill_stops_the_whole_process_group(meow_env: MeowEnv, tmp_path: Path):
    pids = tmp_path / "pids"
    # a task with a child and a grandchild, all sleeping
    meow_env.meow("create", f"sh -c 'sleep 60 & echo $! >> {pids}; wait' & echo $! >> {pids}; "
                  "wait", "-n", "tree", "-c", "0")
    wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, what="pids")
    task = meow_env.tasks()["tree"]
    assert task["status"] == "running"
    meow_env.meow("kill", "tree")
    task = meow_env.wait_status("tree", "killed")
    assert task["exit_code"] is not None
    for pid in map(int, pids.read_text().split()):
        wait_for(lambda pid=pid: _pid_gone(pid), 5, f"pid {pid} to exit")


def test_kill_force_and_no_op_reporting(meow_env: MeowEnv):
    meow_env.meow("create", "trap '' TERM; sleep 60", "-n", "stubborn", "-c", "0")
    meow_env.wait_status("stubborn", "running")
    meow_env.meow("create", "true", "-n", "finished", "-c", "0")
    meow_env.wait_status("finished", "done")
    result = meow_env.meow("kill", "finished", check=False)
    assert result.returncode == 1 and "not running" in result.stdout
    meow_env.meow("kill", "stubborn", "-f")
    assert meow_env.wait_status("stubborn", "killed")["exit_code"] == 137


def test_cancel_resume_remove(meow_env: MeowEnv, tmp_path: Path):
    meow_env.meow("create", gate(tmp_path, "go"), "-n", "blocker", "-c", "2", "-M", "20000")
    meow_env.wait_status("blocker", "running")
    for name in ("w1", "w2", "w3"):
        meow_env.meow("create", "true", "-n", name, "-M", "20000")
    meow_env.meow("cancel", "w1")
    assert meow_env.status("w1") == "cancelled"
    # -A: NAME is a regex over whole fullnames
    result = meow_env.meow("cancel", "-A", "w[23]")
    assert "cancelled: w2, w3" in result.stdout
    assert meow_env.meow("resume", "blocker", check=False).returncode == 1
    meow_env.meow("resume", "w2")
    meow_env.meow("remove", "w3")
    assert "w3" not in meow_env.tasks()
    (tmp_path / "go").touch()
    meow_env.wait_status("w2", "done")
    assert meow_env.status("w1") == "cancelled"  # cancelled tasks do not run
    meow_env.meow("remove", "-A")
    assert meow_env.tasks() == {}


def test_cancel_running_task_terminates_it(meow_env: MeowEnv):
    meow_env.meow("create", "sleep 60", "-n", "r", "-c", "0")
    meow_env.wait_status("r", "running")
    meow_env.meow("cancel", "r")
    meow_env.wait_status("r", "cancelled")
    meow_env.meow("resume", "r")
    meow_env.wait_status("r", "running")
    meow_env.meow("remove", "r")
    wait_for(lambda: "r" not in meow_env.tasks(), what="removal")


def test_ids_work_as_names(meow_env: MeowEnv):
    meow_env.meow("create", "sleep 60", "-n", "byid", "-c", "0")
    task = meow_env.wait_status("byid", "running")
    meow_env.meow("kill", str(task["id"]))
    meow_env.wait_status("byid", "killed")


@pytest.mark.parametrize("restart", [False, True], ids=["live", "after-kill-9-restart"])
def test_kill_reaches_what_escaped_everything_but_the_cgroup(meow_env: MeowEnv, tmp_path: Path,
                                                             restart: bool):
    """After a restart, the re-adopted attempt's cgroup is found again (from /proc, not a
    file meowd wrote), so the escaped grandchild still dies."""
    from meowd.executors.cgroups import Cgroups

    if Cgroups.detect() is None:
        pytest.skip("no writable cgroup v2 here")
    # A grandchild in a new session, with an empty environment, orphaned at once: no
    # process group, parent link or MEOW_* variable leads back to the task.
    gc = tmp_path / "gc"
    meow_env.meow("create", f"setsid env -i /bin/sh -c 'sleep 300 & echo $! > {gc}' ; "
                  "sleep 300", "-n", "sneaky", "-c", "0")
    pid = int(wait_for(lambda: gc.exists() and gc.read_text().strip(), what="the grandchild"))
    assert not _pid_gone(pid)
    if restart:
        meow_env.kill9()
        meow_env.start()
        assert meow_env.wait_status("sneaky", "running")
    meow_env.meow("kill", "sneaky")
    meow_env.wait_status("sneaky", "killed")
    wait_for(lambda: dead(pid), 10, "the escaped grandchild to die")
