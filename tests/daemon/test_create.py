"""Placement end to end: real meowd, real child processes, fake GPUs."""

import os
from pathlib import Path

import pytest

from tests.conftest import MeowEnv, wait_for


def gate(tmp: Path, name: str) -> str:
    """A command that runs until the file `name` appears (tests decide when tasks end)."""
    return f"while [ ! -e {tmp / name} ]; do sleep 0.02; done"


def test_placement_onto_distinct_gpus_and_third_waits(meow_env: MeowEnv, tmp_path: Path):
    for i in (1, 2, 3):
        meow_env.meow("create", gate(tmp_path, f"stop{i}"), "-n", f"t{i}", "-M", "20000")
    t1 = meow_env.wait_status("t1", "running")
    t2 = meow_env.wait_status("t2", "running")
    assert {t1["devices"][0], t2["devices"][0]} == {0, 1}
    assert meow_env.status("t3") == "waiting"
    (tmp_path / "stop2").touch()
    meow_env.wait_status("t2", "done")
    t3 = meow_env.wait_status("t3", "running")
    assert t3["devices"] == t2["devices"]
    for i in (1, 3):
        (tmp_path / f"stop{i}").touch()
    meow_env.wait_status("t3", "done")


def test_no_head_of_line_blocking(meow_env: MeowEnv, tmp_path: Path):
    meow_env.meow("create", gate(tmp_path, "stop"), "-n", "holder", "-M", "20000")
    meow_env.wait_status("holder", "running")
    meow_env.meow("create", "true", "-n", "big", "-c", "2", "-M", "20000", "-p", "5")
    meow_env.meow("create", "true", "-n", "small", "-M", "4000")
    meow_env.wait_status("small", "done")
    assert meow_env.status("big") == "waiting"
    (tmp_path / "stop").touch()
    big = meow_env.wait_status("big", "done")
    assert sorted(big["devices"]) == [0, 1]


def test_priority_decides_who_gets_the_freed_gpu(meow_env: MeowEnv, tmp_path: Path):
    meow_env.meow("create", gate(tmp_path, "s0"), "-n", "a", "-c", "2", "-M", "20000")
    meow_env.wait_status("a", "running")
    meow_env.meow("create", "true", "-n", "low", "-M", "20000")
    meow_env.meow("create", "true", "-n", "high", "-M", "20000", "-p", "3")
    (tmp_path / "s0").touch()
    high = meow_env.wait_status("high", "done")
    low = meow_env.wait_status("low", "done")
    assert high["started_at"] <= low["started_at"]


def test_task_environment_cwd_and_extra_args(meow_env: MeowEnv, tmp_path: Path):
    out = tmp_path / "env.txt"
    work = tmp_path / "work"
    work.mkdir()
    meow_env.env["MY_SHELL_VAR"] = "from-shell"
    script = (
        f"echo $CUDA_VISIBLE_DEVICES $NVIDIA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER "
        f"$MY_SHELL_VAR $(pwd) $MEOW_TASK_HOME $CATTINO_TASK_HOME \"$@\" > {out}"
    )
    meow_env.meow("create", f"sh -c '{script}' sh", "-n", "envtask", "-M", "1000", "--",
                  "--lr", "0.2", "two words", cwd=str(work))
    task = meow_env.wait_status("envtask", "done")
    gpu = str(task["devices"][0])
    fields = out.read_text().split()
    assert fields[:5] == [gpu, gpu, "PCI_BUS_ID", "from-shell", str(work)]
    assert fields[5] == fields[6] and Path(fields[5]).is_dir()
    assert fields[7:] == ["--lr", "0.2", "two", "words"]


def test_cpu_task_gets_no_gpu(meow_env: MeowEnv, tmp_path: Path):
    out = tmp_path / "cvd"
    meow_env.meow("create", f"echo \"[$CUDA_VISIBLE_DEVICES]\" > {out}", "-n", "cpu", "-c", "0")
    meow_env.wait_status("cpu", "done")
    assert out.read_text().strip() == "[]"


def test_exit_codes_recorded(meow_env: MeowEnv):
    meow_env.meow("create", "exit 7", "-n", "seven", "-c", "0")
    task = meow_env.wait_status("seven", "failed")
    assert task["exit_code"] == 7 and task["ended_at"] >= task["started_at"]


def test_list_json_fields(meow_env: MeowEnv):
    meow_env.meow("create", "true", "-n", "j", "-c", "0")
    task = meow_env.wait_status("j", "done")
    for key in ("id", "name", "fullname", "status", "priority", "devices", "min_devices",
                "requires_memory_per_device", "exit_code", "created_at", "started_at",
                "ended_at"):
        assert key in task
    assert task["status"] == "done" and task["devices"] == [] and task["min_devices"] == 0


def test_bad_inputs_get_one_line_errors(meow_env: MeowEnv):
    meow_env.meow("create", "true", "-n", "dup", "-c", "0")
    cases = [
        ["create", "true", "-n", "dup"],  # duplicate name
        ["create", "true", "-M", "1.5"],  # ratio out of range
        ["create", "true", "-M", "lots"],
        ["create", "true", "-c", "3", "-M", "1000"],  # more GPUs than the machine has
        ["create", "true", "-M", "30000"],  # more memory than any GPU
        ["create", "true", "-n", "bad name"],
        ["create", "true", "--cwd", "/nonexistent/dir"],
        ["kill"],  # neither NAME nor -A
        ["kill", "nosuchtask"],
        ["remove", "-A", "(unclosed"],
        ["show", "nosuchtask"],
        ["watch", "x", "-s", "stdin"],
    ]
    for args in cases:
        result = meow_env.meow(*args, check=False)
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert lines and "Traceback" not in result.stderr, (args, result.stderr)
    # the daemon is still fine
    assert meow_env.meow("test").returncode == 0


def test_gpu_task_refused_without_gpus(meow_home: MeowEnv):
    try:
        import pynvml

        pynvml.nvmlInit()
        pytest.skip("a real GPU is present")
    except Exception:
        pass
    del meow_home.env["MEOW_FAKE_GPUS"]
    meow_home.start()
    result = meow_home.meow("create", "true", "-n", "g", check=False)
    assert result.returncode == 1
    assert "MEOW_FAKE_GPUS" in result.stderr and "-c 0" in result.stderr
    meow_home.meow("create", "true", "-n", "c", "-c", "0")
    meow_home.wait_status("c", "done")
    assert "MEOW_FAKE_GPUS" in meow_home.meow("devices").stdout


def test_create_starts_the_daemon(meow_home: MeowEnv):
    assert not meow_home.paths.socket.exists()
    meow_home.meow("create", "true", "-n", "auto", "-c", "0")
    meow_home.wait_status("auto", "done")
    pid = int(meow_home.paths.lock.read_text())
    meow_home.meow("exit")
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, "daemon to exit")


def test_create_reports_a_daemon_that_cannot_start(meow_home: MeowEnv):
    meow_home.env["MEOW_FAKE_GPUS"] = "banana"
    result = meow_home.meow("create", "true", check=False)
    assert result.returncode == 1
    assert "meowd exited" in result.stderr and "MEOW_FAKE_GPUS" in result.stderr


def test_an_unwritable_log_directory_fails_only_that_task(meow_env: MeowEnv):
    # The next task's home is taken by a file: its logs cannot be written.
    next_id = max((t["id"] for t in meow_env.tasks().values()), default=0) + 1
    meow_env.paths.tasks.mkdir(parents=True, exist_ok=True)
    (meow_env.paths.tasks / str(next_id)).write_text("in the way")
    meow_env.meow("create", "true", "-n", "doomed", "-c", "0")
    task = meow_env.wait_status("doomed", "failed")
    assert task["reason"].startswith("cannot start: ")
    assert task["exit_code"] is None
    meow_env.meow("create", "true", "-n", "fine", "-c", "0")
    meow_env.wait_status("fine", "done")
