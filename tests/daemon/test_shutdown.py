"""Graceful shutdown and back-pressure: SIGTERM with clients and tasks in flight, and a
full disk under the state directory."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, MeowEnv, wait_for


def test_sigterm_exits_promptly_and_leaves_tasks_running(meow_env: MeowEnv):
    meow_env.meow("create", "sleep 60", "-n", "long", "-c", "0")
    pid = wait_for(lambda: (t := meow_env.tasks()["long"])["status"] == "running" and t["id"])
    show = meow_env.meow("show", "long", "--json").stdout
    task_pid = int(show.split('"pid": ')[1].split(",")[0])
    waiter = subprocess.Popen([str(BIN / "meow"), "watch", "long"], env=meow_env.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _has_socket(waiter.pid), what="the watcher to connect")
    meow_env.daemon.send_signal(signal.SIGTERM)
    assert meow_env.daemon.wait(15) == 0  # promptly, though a client waits on a task
    assert waiter.wait(10) != 0  # told the daemon went away, not left hanging
    os.kill(task_pid, 0)  # the task itself still runs
    meow_env.daemon = None
    meow_env.start()
    after = meow_env.tasks()["long"]
    assert after["status"] == "running" and after["id"] == pid
    meow_env.kill_leftovers()


def _has_socket(pid: int) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd).startswith("socket:") for fd in fds.iterdir())
    except OSError:
        return False


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path: Path) -> Path:
    filler = path / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_fails_the_task_not_the_daemon(meow_home: MeowEnv, small_disk: Path):
    home = small_disk / "meow"
    meow_home.env["MEOW_HOME"] = str(home)
    meow_home.paths = type(meow_home.paths)(home, home / "meowd.sock", (home / "config.toml",))
    meow_home.start()
    meow_home.meow("create", "true", "-n", "before", "-c", "0")
    meow_home.wait_status("before", "done")
    filler = _fill(small_disk)
    result = meow_home.meow("create", "echo hi", "-n", "full", "-c", "0", check=False)
    if result.returncode == 0:  # accepted (the database had room): the task cannot start
        task = meow_home.wait_status("full", "failed")
        assert "No space left on device" in task["reason"]
    else:  # refused, with one clear line
        assert "meowd cannot write its state" in result.stderr
        assert "full" in result.stderr or "No space" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert meow_home.meow("list").returncode == 0  # the daemon carries on
    filler.unlink()
    meow_home.meow("create", "true", "-n", "after", "-c", "0")
    meow_home.wait_status("after", "done")
