"""A task's life through the CLI, as a user types it: time limits, retries, retry, wait,
--after, usage, and what `meow show` says about them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import MeowEnv

OOM = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_time_limit_retry_and_show(meow_env: MeowEnv):
    meow_env.meow("create", "sleep 60", "-n", "slow", "-c", "0", "--time-limit", "1s")
    task = meow_env.wait_status("slow", "timeout", timeout=30)
    assert task["time_limit"] == 1.0 and task["end_reason"] == "timeout"
    show = meow_env.meow("show", "slow").stdout
    assert "time limit  1s" in show and "ended by    timeout" in show
    assert "timeout" in meow_env.meow("list").stdout
    # resume says what to do; retry does it (a new attempt, the old one kept)
    resumed = meow_env.meow("resume", "slow", check=False)
    assert resumed.returncode == 1 and "meow retry slow" in resumed.stdout
    assert "requeued: slow" in meow_env.meow("retry", "slow").stdout
    meow_env.wait_status("slow", "timeout", timeout=30)
    attempts = json.loads(meow_env.meow("show", "slow", "--json").stdout)["attempt_list"]
    assert [a["end_reason"] for a in attempts] == ["timeout", "timeout"]


def test_retries_and_oom_scaling_from_the_command_line(meow_env: MeowEnv, tmp_path: Path):
    first = tmp_path / "first"
    meow_env.meow("create", f"[ -e {first} ] || {{ touch {first}; echo '{OOM}' >&2; exit 1; }}",
                  "-n", "train", "-M", "4GiB", "--retries", "2")
    task = meow_env.wait_status("train", "done", timeout=30)
    assert task["requires_memory_per_device"] == 6144
    out = meow_env.meow("show", "train").stdout
    assert "retries     1 of 2 used" in out
    assert "oom" in out and "GPU out of memory" in out
    usage = meow_env.meow("usage", "train").stdout.splitlines()
    assert usage[0] == "train" and usage[1].split()[:3] == ["ATTEMPT", "RUNTIME", "REASON"]
    assert [line.split()[2] for line in usage[2:]] == ["oom", "exit"]


def test_wait_and_after_chain_submissions(meow_env: MeowEnv, tmp_path: Path):
    meow_env.meow("create", "sleep 0.5", "-n", "prep", "-c", "0")
    meow_env.meow("create", f"touch {tmp_path / 'ran'}", "-n", "use", "-c", "0",
                  "--after", "prep")
    meow_env.meow("create", "exit 4", "-n", "bad", "-c", "0")
    done = meow_env.meow("wait", "prep", "use", "--timeout", "30")
    assert done.stdout.splitlines() == ["prep: done (exit 0)", "use: done (exit 0)"]
    assert (tmp_path / "ran").exists()
    failed = meow_env.meow("wait", "bad", check=False)
    assert failed.returncode == 4 and failed.stdout.strip() == "bad: failed (exit 4)"
    meow_env.meow("create", "sleep 30", "-n", "long", "-c", "0")
    timed_out = meow_env.meow("wait", "long", "--timeout", "0.2", check=False)
    assert timed_out.returncode == 124
    # a successor of a failed task waits blocked, and says so
    meow_env.meow("create", "true", "-n", "after-bad", "-c", "0", "--after", "bad")
    assert meow_env.tasks()["after-bad"]["why"] == "blocked: bad failed"
    meow_env.kill_leftovers()


def test_removing_an_unfinished_predecessor_cancels_its_successors(meow_env: MeowEnv):
    meow_env.meow("create", "sleep 30", "-n", "train", "-c", "0")
    meow_env.meow("create", "echo evaluated", "-n", "eval", "-c", "0", "--after", "train")
    meow_env.meow("remove", "train")
    task = meow_env.wait_status("eval", "cancelled")
    assert task["reason"] == "cancelled: train was removed before it was done"
    assert task["attempts"] == 0  # it never ran on a half-trained model


def test_wait_outlives_a_daemon_restart(meow_env: MeowEnv, tmp_path: Path):
    import subprocess

    from tests.conftest import BIN, wait_for
    from tests.daemon.test_shutdown import _has_socket

    go = tmp_path / "go"
    meow_env.meow("create", f"while [ ! -e {go} ]; do sleep 0.05; done", "-n", "w", "-c", "0")
    meow_env.wait_status("w", "running")
    waiter = subprocess.Popen([str(BIN / "meow"), "wait", "w"], env=meow_env.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _has_socket(waiter.pid), what="meow wait to connect")
    meow_env.kill9()
    meow_env.start()  # back within the grace: `meow wait` asks the new meowd
    go.touch()
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert out.strip() == "w: done (exit 0)"


def test_watch_outlives_a_daemon_restart(meow_env: MeowEnv, tmp_path: Path):
    import subprocess

    from tests.conftest import BIN, wait_for
    from tests.daemon.test_shutdown import _has_socket

    go = tmp_path / "go"
    meow_env.meow("create", f"echo started; while [ ! -e {go} ]; do sleep 0.05; done; "
                  "echo finished", "-n", "w", "-c", "0")
    meow_env.wait_status("w", "running")
    seen = tmp_path / "watched"
    with open(seen, "w") as out_file:
        watcher = subprocess.Popen([str(BIN / "meow"), "watch", "w"], env=meow_env.env,
                                   stdout=out_file, stderr=subprocess.PIPE, text=True)
    # following the log (past its first request), with its wait request sent
    wait_for(lambda: seen.read_text() == "started\n" and _has_socket(watcher.pid),
             what="meow watch to follow the task")
    meow_env.kill9()
    meow_env.start()  # back within the grace: `meow watch` asks the new meowd
    go.touch()
    _, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    assert seen.read_text().splitlines() == ["started", "finished"]
