"""A new user's first hour (issue 13): each rough edge, driven through the real CLI and a
real daemon, checking the line the user reads."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from meowcli.autostart import nvidia_driver_present
from meowd.core.settings import DEFAULT_FAKE_GPUS
from meowd.devices import NO_GPU_HINT
from tests.conftest import BIN, MeowEnv, wait_for

STARTED = re.compile(r"^meow: meowd was not running; started it \(pid (\d+), fake GPUs\)$")


def gate(path: Path) -> str:
    return f"while [ ! -e {path} ]; do sleep 0.05; done"


# -- the daemon: started when needed, and said so ------------------------------------------------
def test_read_commands_start_the_daemon_and_say_so(meow_home: MeowEnv):
    result = meow_home.meow("list")
    assert result.stdout == "no tasks\n"
    match = STARTED.match(result.stderr.rstrip("\n"))
    assert match, result.stderr
    assert int(match.group(1)) == int(meow_home.paths.lock.read_text())
    again = meow_home.meow("list")
    assert again.stderr == ""  # running now: nothing to say
    meow_home.meow("exit")


def test_exit_without_a_daemon_is_not_an_error(meow_home: MeowEnv):
    result = meow_home.meow("exit")
    assert (result.stdout, result.stderr) == ("meowd is not running\n", "")
    assert not meow_home.paths.socket.exists()


def test_run_becomes_meowd(meow_home: MeowEnv):
    """`meow run` execs meowd: same pid, signals go straight to the daemon."""
    proc = subprocess.Popen([str(BIN / "meow"), "run"], env=meow_home.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: meow_home.paths.lock.exists() and meow_home.paths.lock.read_text(),
                 15, "meowd to take its lock")
        assert int(meow_home.paths.lock.read_text()) == proc.pid
        # It takes its lock before it listens: a (fast) `meow test` may come in between.
        wait_for(lambda: meow_home.meow("test", check=False).returncode == 0, 15,
                 "meowd to answer")
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert b"meowd" in f.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


@pytest.fixture
def gpuless_home():
    """A home with no fake GPUs configured, on a machine without an NVIDIA driver."""
    if nvidia_driver_present():
        pytest.skip("this machine has an NVIDIA driver")
    home = Path(tempfile.mkdtemp(prefix="meow-t-"))
    env = MeowEnv(home, fake_gpus=None)
    try:
        yield env
    finally:
        env.meow("exit", "--kill", check=False)
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def test_first_run_without_an_nvidia_driver_simulates_gpus(gpuless_home: MeowEnv):
    env = gpuless_home
    result = env.meow("create", "true", "-n", "first")
    config = env.paths.config_files[0]
    pid = env.paths.lock.read_text()
    assert result.stderr == (
        f"meow: meowd was not running; started it (pid {pid}); no NVIDIA GPU here, so it "
        f"simulates {DEFAULT_FAKE_GPUS} fake GPUs for this home, as `make demo` does "
        f"(fake_gpus in {config}; `meow set fake_gpus none; meow exit` turns them off)\n")
    assert f'fake_gpus = "{DEFAULT_FAKE_GPUS}"' in config.read_text()
    env.wait_status("first", "done")
    assert len(json.loads(env.meow("devices", "--json").stdout)["devices"]) == 4
    # Turned off, it stays off: a home with a config is not a first run any more.
    assert env.meow("set", "fake_gpus", "none").stdout.startswith(
        "fake_gpus = none (saved in")
    env.meow("exit")
    env.meow("create", "true", "-n", "cpu", "-c", "0")
    refused = env.meow("create", "true", "-n", "gpu", check=False)
    assert (refused.returncode, refused.stderr) == (1, f"meow: error: {NO_GPU_HINT}\n")
    assert "meow set fake_gpus 4x24GiB; meow exit" in NO_GPU_HINT


# -- list ----------------------------------------------------------------------------------------
def test_list_names_select_tasks_and_attributes_are_columns(meow_env: MeowEnv):
    for name in ("exp1", "exp2"):
        meow_env.meow("create", "true", "-n", name, "-g", "grp", "-c", "0")
    meow_env.meow("create", "true", "-n", "solo", "-c", "0")
    meow_env.wait_status("solo", "done")
    one = meow_env.meow("list", "grp/exp1", "status").stdout.split()
    assert one == ["FULLNAME", "STATUS", "grp/exp1", "done"]
    group = json.loads(meow_env.meow("list", "grp", "--json").stdout)
    assert [t["fullname"] for t in group] == ["grp/exp1", "grp/exp2"]
    by_id = meow_env.meow("list", "3", "name").stdout.split()
    assert by_id == ["FULLNAME", "NAME", "solo", "solo"]


def test_filter_or_and(meow_env: MeowEnv, tmp_path: Path):
    meow_env.meow("create", gate(tmp_path / "go"), "-n", "run1", "-c", "0")
    meow_env.meow("create", "true", "-n", "done1", "-c", "0", "-p", "3")
    meow_env.meow("create", "sleep 30", "-n", "wait1", "-c", "2", "-M", "30000", check=False)
    meow_env.meow("create", gate(tmp_path / "go"), "-n", "blocker", "-c", "2", "-M", "20000")
    meow_env.meow("create", "true", "-n", "wait2", "-c", "2", "-M", "20000")
    meow_env.wait_status("run1", "running")
    meow_env.wait_status("done1", "done")
    meow_env.wait_status("blocker", "running")

    def names(expr: str) -> list[str]:
        out = meow_env.meow("list", "--filter", expr, "--json").stdout
        return sorted(t["fullname"] for t in json.loads(out))

    assert names("status==running or status==waiting") == ["blocker", "run1", "wait2"]
    assert names("status==done or priority>2 and status==running") == ["done1"]
    assert names("status==running and name~^run, priority<1") == ["run1"]
    assert names("name=='run1' or name==\"done1\"") == ["done1", "run1"]
    (tmp_path / "go").touch()
    meow_env.kill_leftovers()


# -- create --------------------------------------------------------------------------------------
def test_a_small_memory_request_warns(meow_env: MeowEnv):
    result = meow_env.meow("create", "true", "-n", "small", "-M", "2")
    assert result.stderr == ("meow: warning: -M 2 reserves 2 MiB per GPU; for GiB write 2GiB, "
                             "for a share of each GPU a ratio such as 0.5\n")
    assert result.stdout == "created small (id 1)\n"
    for quiet in (["-M", "2GiB"], ["-M", "0.5"], ["-M", "0"], ["-M", "256"]):
        assert meow_env.meow("create", "true", *quiet).stderr == "", quiet


def test_multirun_says_each_tasks_parameters(meow_env: MeowEnv):
    result = meow_env.meow("create", "echo", "-m", "-n", "sweep", "-c", "0", "--",
                           "--lr=[0.1,0.2]", "--bs", "[32,64]", "--fixed")
    assert result.stdout.splitlines() == [
        "created sweep_1 (id 1): --lr=0.1 --bs 32",
        "created sweep_2 (id 2): --lr=0.1 --bs 64",
        "created sweep_3 (id 3): --lr=0.2 --bs 32",
        "created sweep_4 (id 4): --lr=0.2 --bs 64",
    ]
    typo = meow_env.meow("create", "echo", "-m", "-n", "typo", "-c", "0", "--", "[1,2")
    assert typo.stderr == ("meow: warning: '[1,2' is not a multirun list [a,b] (unbalanced "
                           "brackets?); it is passed on as it is\n")


def test_help_is_readable():
    out = subprocess.run([str(BIN / "meow"), "create", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "COMMAND|TASK.py" in out and "{input}" not in out
    assert "Expand [a,b] and key=[a,b] arguments" in out.replace("\n", " ").replace("  ", " ")
    for default in ("[default: 0, or the task file's]", "[default: 1, or the task file's]"):
        assert default in " ".join(out.split())
    assert "meow create \"python train.py\" -m -- --lr=[0.1,0.2] --bs [32,64]" in out
    top = subprocess.run([str(BIN / "meow"), "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "Exit status: 0 ok, 1 failed or refused, 2 bad usage or value" in " ".join(
        top.split())


# -- show, watch, resume, clean ------------------------------------------------------------------
def test_show_says_why_a_task_waits_and_how_long_one_ran(meow_env: MeowEnv, tmp_path: Path):
    meow_env.meow("create", gate(tmp_path / "go"), "-n", "big", "-c", "2", "-M", "20000")
    meow_env.wait_status("big", "running")
    meow_env.meow("create", "true", "-n", "next", "-c", "2", "-M", "20000")
    shown = meow_env.meow("show", "next").stdout
    status = next(line for line in shown.splitlines() if line.startswith("  status"))
    assert re.fullmatch(r"  status      waiting \(\d+s so far\): GPUs 0,1 held for it until "
                        r"they have room", status), status
    (tmp_path / "go").touch()
    meow_env.wait_status("next", "done")
    done = meow_env.meow("show", "big").stdout
    assert re.search(r"^  runtime     \d+s$", done, re.M), done
    assert " now" not in done


def test_watch_exits_with_the_tasks_exit_code(meow_env: MeowEnv):
    meow_env.meow("create", "echo out; exit 3", "-n", "three", "-c", "0")
    result = meow_env.meow("watch", "three", check=False)
    assert (result.returncode, result.stdout) == (3, "out\n")
    assert result.stderr == "[meow] three failed (exit 3)\n"
    meow_env.meow("create", "true", "-n", "fine", "-c", "0")
    assert meow_env.meow("watch", "fine").returncode == 0


def test_resume_of_a_failed_task_points_to_retry(meow_env: MeowEnv):
    meow_env.meow("create", "exit 1", "-n", "bad", "-c", "0")
    meow_env.wait_status("bad", "failed")
    result = meow_env.meow("resume", "bad", check=False)
    assert (result.returncode, result.stdout) == (
        1, "unchanged: bad: not cancelled (failed); to run it again: meow retry bad\n")


def test_clean_takes_relative_times(meow_env: MeowEnv):
    meow_env.meow("create", "true", "-n", "old", "-c", "0")
    meow_env.wait_status("old", "done")
    assert meow_env.meow("clean", "--before", "7d").stdout == "cleaned 0 task(s)\n"
    assert meow_env.meow("clean", "--before", "yesterday").stdout == "cleaned 0 task(s)\n"
    assert meow_env.meow("clean", "--after", "1h", "-v").stdout == "cleaned 1 task(s): old\n"


# -- set -----------------------------------------------------------------------------------------
def test_set_checks_against_the_machine_and_says_the_consequence(meow_env: MeowEnv):
    result = meow_env.meow("set", "cpu_slots", "0")
    config = meow_env.paths.config_files[0]
    assert result.stdout == f"cpu_slots = 0 (saved in {config})\n"
    assert result.stderr == ("meow: warning: cpu_slots = 0: tasks without GPUs (-c 0) will "
                             "wait until cpu_slots is raised\n")
    assert meow_env.meow("set", "visible_devices", "[1]").stdout.startswith(
        "visible_devices = [1] (saved in")
    assert meow_env.meow("set", "visible_devices", "all").stdout.startswith(
        "visible_devices = all (saved in")
    negative = meow_env.meow("set", "max_attempts", "-3", check=False)
    assert (negative.returncode, negative.stderr) == (
        2, "meow: error: max_attempts must be a whole number >= 0\n")
    meow_env.meow("create", "sleep 30", "-n", "p", "-c", "0")
    assert meow_env.meow("set", "p.priority", "-5").stdout == "p.priority = -5\n"
    meow_env.meow("set", "cpu_slots", "2")
    meow_env.kill_leftovers()


def test_set_without_a_daemon_saves_checks_and_starts_nothing(meow_home: MeowEnv):
    config = meow_home.paths.config_files[0]
    result = meow_home.meow("set", "visible_devices", "[5]", check=False)
    assert (result.returncode, result.stderr) == (
        2, "meow: error: visible_devices: no GPU 5 here (meowd sees 2 GPU(s): 0, 1)\n")
    result = meow_home.meow("set", "cpu_slots", "0")
    assert result.stdout == f"cpu_slots = 0 (saved in {config}; meowd is not running)\n"
    assert "cpu_slots = 0" in config.read_text()
    assert not meow_home.paths.socket.exists() and not meow_home.paths.lock.exists()
    assert os.path.exists(config)
