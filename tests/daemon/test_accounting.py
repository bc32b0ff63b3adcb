"""GPU accounting through a real daemon and the fake backend: memory held by processes
outside meow, memory held by a task's children and grandchildren, over-use warnings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meowd.executors.cgroups import Cgroups
from tests.conftest import MeowEnv, dead, wait_for

HOLD = f"{sys.executable} -m meowd.devices.fake hold"


def devices(env: MeowEnv) -> list[dict]:
    return json.loads(env.meow("devices", "--json").stdout)["devices"]


@pytest.fixture
def outsider(meow_env: MeowEnv):
    """Another user's process holding 20000 MiB on fake GPU 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "meowd.devices.fake", "hold", "--gpu", "0", "--mib", "20000",
         "--", "sleep", "120"], env=meow_env.env,
    )
    yield proc
    proc.kill()
    proc.wait()


def test_meow_places_around_memory_held_outside_meow(meow_env: MeowEnv, outsider):
    wait_for(lambda: devices(meow_env)[0]["used_by_others_mib"] == 20000, what="the outsider")
    for name in ("a", "b"):
        meow_env.meow("create", "sleep 30", "-n", name, "-M", "10000")
    meow_env.meow("create", "sleep 30", "-n", "c", "-M", "5000")
    assert meow_env.wait_status("a", "running")["devices"] == [1]
    assert meow_env.wait_status("b", "running")["devices"] == [1]
    # GPU 0 has 4576 MiB left after the outsider, GPU 1 4576 after a and b: c waits.
    gpu0, gpu1 = devices(meow_env)
    assert (gpu0["free_mib"], gpu1["free_mib"]) == (4576, 4576)
    assert meow_env.status("c") == "waiting"
    outsider.kill()
    outsider.wait()
    assert meow_env.wait_status("c", "running")["devices"] == [0]
    meow_env.kill_leftovers()


@pytest.mark.parametrize("mode", ["cgroup", "fallback"])
def test_a_tasks_children_and_escaped_grandchildren_count_as_its_usage(
        meow_env: MeowEnv, tmp_path: Path, mode: str):
    if mode == "fallback":  # process group + tracked descendants + MEOW_TASK_HOME scan
        meow_env.stop()
        meow_env.env["MEOW_NO_CGROUPS"] = "1"
        meow_env.start()
    elif Cgroups.detect() is None:
        pytest.skip("no writable cgroup v2 here")
    # The task holds 3000 MiB through a child and 1000 through a grandchild that starts a
    # new session (as a torchrun worker or a daemonizing tool might).
    # Both hold memory on the GPU meow gave the task, as a CUDA program would.
    gpu = "--gpu $CUDA_VISIBLE_DEVICES"
    command = (f"{HOLD} {gpu} --mib 3000 -- sleep 60 & "
               f"setsid sh -c '{HOLD} {gpu} --mib 1000 -- sleep 60 & echo $! > {tmp_path}/gc'"
               " & wait")
    meow_env.meow("create", "sleep 60", "-n", "first", "-M", "1000")  # takes GPU 0
    meow_env.wait_status("first", "running")
    meow_env.meow("create", command, "-n", "tree", "-M", "2000")
    task = wait_for(lambda: (t := meow_env.tasks()["tree"])["usage"]["gpu_mib"].get("1") == 4000
                    and t, 15, "4000 MiB attributed to the task")
    assert task["devices"] == [1]
    assert task["usage"]["gpu_peak_mib"]["1"] == 4000
    assert task["usage"]["rss_peak_mib"] > 0
    assert "over the 2000MiB it asked for" in task["warning"]
    gpu1 = devices(meow_env)[1]
    assert (gpu1["used_by_meow_mib"], gpu1["used_by_others_mib"]) == (4000, 0)
    show = meow_env.meow("show", "tree").stdout
    assert "GPU 1: 4000MiB now, peak 4000MiB" in show and "warning" in show
    # Killing the task leaves nothing behind, the escaped grandchild included.
    grandchild = int(wait_for(lambda: (tmp_path / "gc").read_text().strip(), what="gc pid"))
    meow_env.meow("kill", "tree")
    meow_env.wait_status("tree", "killed")
    wait_for(lambda: dead(grandchild), 10, "the escaped grandchild to die")
    meow_env.kill_leftovers()


def test_enforce_memory_stops_a_task_over_its_request(meow_env: MeowEnv):
    meow_env.meow("create", f"{HOLD} --gpu 0 --mib 6000 -- sleep 60", "-n", "greedy",
                  "-M", "4000", "--enforce-memory")
    task = meow_env.wait_status("greedy", "failed", timeout=20)
    assert "uses 6000MiB on GPU 0, over the 4000MiB" in task["reason"]
    assert "--enforce-memory" in task["reason"]


@pytest.mark.fake_gpus("4x24GiB")
def test_visible_devices_and_the_starvation_guard(meow_env: MeowEnv, tmp_path: Path):
    (meow_env.home / "config.toml").write_text("visible_devices = [1, 2]\n")
    meow_env.stop()
    meow_env.start()
    meow_env.meow("create", "sleep 30", "-n", "small1", "-M", "20000")
    meow_env.meow("create", "sleep 30", "-n", "small2", "-M", "20000")
    assert sorted(meow_env.wait_status(n, "running")["devices"][0]
                  for n in ("small1", "small2")) == [1, 2]
    refused = meow_env.meow("create", "true", "-c", "3", check=False)
    assert refused.returncode == 1 and "meow may use 2 GPU(s)" in refused.stderr
    # A 2-GPU task is blocked; a later small task must not overtake it on the held GPUs.
    meow_env.meow("create", "true", "-n", "big", "-c", "2", "-M", "20000")
    meow_env.meow("create", "true", "-n", "small3", "-M", "20000")
    big = wait_for(lambda: (t := meow_env.tasks()["big"])["held_for"] and t, what="a hold")
    assert big["status"] == "waiting"
    meow_env.meow("kill", "small1")
    meow_env.wait_status("small1", "killed")
    # small3 fits on the GPU small1 left, but that GPU is held for big: it keeps waiting.
    assert meow_env.status("small3") == "waiting"
    meow_env.meow("kill", "small2")
    meow_env.wait_status("big", "done")
    meow_env.wait_status("small3", "done")
