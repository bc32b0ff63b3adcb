"""A task's whole life against a real daemon: time limits, retries with reasons, GPU
out-of-memory scaling, waiting, dependencies across submissions, usage, and all of it
across a `kill -9` of the daemon."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from meowd.core.protocol import CreateRequest, TaskSpec, UsageRequest, WaitRequest
from tests.conftest import MeowEnv, wait_for

PY = sys.executable
TORCH_OOM = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 "
             "has a total capacity of 23.99 GiB of which 3.10 GiB is free.")


def create(env: MeowEnv, *specs: TaskSpec, cwd: str = "/tmp") -> list[dict]:
    with env.client() as c:
        return c.call(CreateRequest(tuple(specs), cwd, dict(env.env)))


def attempts(env: MeowEnv, name: str) -> list[dict]:
    with env.client() as c:
        return c.show(name)["attempt_list"]


def test_a_time_limit_stops_the_task_as_timeout(meow_env: MeowEnv, tmp_path: Path):
    seen = tmp_path / "deadline"
    create(meow_env, TaskSpec(f"echo $MEOW_DEADLINE > {seen}; sleep 60", name="slow",
                              min_devices=0, time_limit=1.5))
    task = meow_env.wait_status("slow", "timeout", timeout=30)
    assert task["end_reason"] == "timeout" and task["reason"] == "time limit reached"
    assert abs(float(seen.read_text()) - task["started_at"] - 1.5) < 0.1
    assert attempts(meow_env, "slow")[0]["end_reason"] == "timeout"


def test_a_time_limit_survives_a_daemon_kill9(meow_env: MeowEnv):
    create(meow_env, TaskSpec("sleep 60", name="slow", min_devices=0, time_limit=3))
    meow_env.wait_status("slow", "running")
    meow_env.kill9()
    meow_env.start()  # the next daemon enforces the stored deadline
    task = meow_env.wait_status("slow", "timeout", timeout=30)
    assert task["attempts"] == 1


def test_graceful_timeout_exit_is_timeout_and_resumable_requeues(meow_env: MeowEnv,
                                                                 tmp_path: Path):
    counter = tmp_path / "runs"
    # The task counts its attempts in its run directory (kept across attempts) and
    # stops with GracefulTimeout's exit code until its third attempt.
    script = (f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
              "[ $n -ge 3 ] || exit 124")
    create(meow_env, TaskSpec(script, name="resumable", min_devices=0, resumable=True),
           TaskSpec("exit 124", name="graceful", min_devices=0))
    meow_env.wait_status("graceful", "timeout")
    task = meow_env.wait_status("resumable", "done", timeout=30)
    assert task["attempts"] == 3 and counter.read_text().strip() == "3"
    reasons = [a["end_reason"] for a in attempts(meow_env, "resumable")]
    assert reasons == ["timeout", "timeout", "exit"]


def test_retries_survive_a_daemon_kill9_without_running_twice(meow_env: MeowEnv,
                                                               tmp_path: Path):
    log = tmp_path / "log"
    go = tmp_path / "go"
    script = (f"echo $MEOW_ATTEMPT >> {log}; while [ ! -e {go} ]; do sleep 0.05; done; "
              "exit 3")
    create(meow_env, TaskSpec(script, name="flaky", min_devices=0, max_retries=2))
    meow_env.wait_status("flaky", "running")
    meow_env.kill9()
    go.touch()
    meow_env.start()
    task = meow_env.wait_status("flaky", "failed", timeout=30)
    assert task["attempts"] == 3 and task["retries_used"] == 2
    assert log.read_text().split() == ["1", "2", "3"]  # each attempt ran exactly once
    rows = attempts(meow_env, "flaky")
    assert [(a["n"], a["exit_code"], a["end_reason"]) for a in rows] == [
        (1, 3, "exit"), (2, 3, "exit"), (3, 3, "exit")]
    db = sqlite3.connect(meow_env.paths.database)
    history = [k for (k,) in db.execute(
        "SELECT kind FROM events WHERE task_id = ? ORDER BY id", (task["id"],))]
    assert history.count("running") == 3 and history[-1] == "failed"


def test_a_gpu_oom_is_retried_with_more_memory(meow_env: MeowEnv, tmp_path: Path):
    marker = tmp_path / "first"
    script = (f"if [ ! -e {marker} ]; then touch {marker}; echo '{TORCH_OOM}' >&2; exit 1; "
              "fi; echo fits")
    create(meow_env, TaskSpec(script, name="train", requires_memory_per_device=8000,
                              max_retries=2))
    task = meow_env.wait_status("train", "done", timeout=30)
    assert task["requires_memory_per_device"] == 12000
    rows = attempts(meow_env, "train")
    assert [(a["end_reason"], a["memory"]) for a in rows] == [("oom", 8000), ("exit", 12000)]
    assert "GPU out of memory" in rows[0]["reason"]


def test_wait_for_several_tasks_and_after_across_submissions(meow_env: MeowEnv,
                                                              tmp_path: Path):
    create(meow_env, TaskSpec("sleep 0.5", name="first", min_devices=0))
    create(meow_env, TaskSpec(f"touch {tmp_path / 'second'}", name="second", min_devices=0,
                              after=("first",)))
    assert meow_env.tasks()["second"]["why"] in ("waiting for first", None)
    with meow_env.client() as c:
        result = c.call(WaitRequest(targets=("first", "second"), timeout=30))
        assert not result["timed_out"]
        assert [t["status"] for t in result["tasks"]] == ["done", "done"]
        usage = c.call(UsageRequest("first"))
    assert (tmp_path / "second").exists()
    row = usage["attempts"][0]
    assert row["attempt"] == 1 and row["runtime_s"] >= 0.4 and row["end_reason"] == "exit"


def test_wait_times_out(meow_env: MeowEnv):
    create(meow_env, TaskSpec("sleep 30", name="long", min_devices=0))
    with meow_env.client() as c:
        result = c.call(WaitRequest(targets=("long",), timeout=0.3))
    assert result["timed_out"] and result["tasks"][0]["status"] in ("waiting", "running")
    meow_env.kill_leftovers()
    wait_for(lambda: meow_env.status("long") == "killed")
