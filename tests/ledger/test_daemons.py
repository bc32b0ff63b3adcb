"""Several users' meowd on one machine (one home each), sharing one fake GPU and the
machine-wide ledger, as real daemons: two queues never book the same memory."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MeowEnv, _make_env, wait_for

HOLD = f"{sys.executable} -m meowd.devices.fake hold --gpu 0"


@pytest.fixture
def shared() -> Iterator[Path]:
    """One ledger (and fake GPU state) directory for the daemons of one test."""
    directory = Path(tempfile.mkdtemp(prefix="meow-ledger-"))
    directory.chmod(0o1777)
    yield directory
    subprocess.run(["rm", "-rf", str(directory)], check=False)


def daemons(shared: Path, n: int) -> Iterator[list[MeowEnv]]:
    envs, gens = [], []
    for _ in range(n):
        gen = _make_env("1x16GiB")
        env = next(gen)
        env.env["MEOW_LEDGER"] = str(shared)
        gens.append(gen)
        envs.append(env)
    try:
        for env in envs:
            env.start()
        yield envs
    finally:
        for gen in gens:
            for _ in gen:  # runs the cleanup
                pass


@pytest.fixture
def two(shared: Path) -> Iterator[list[MeowEnv]]:
    yield from daemons(shared, 2)


def test_two_queues_never_book_the_same_memory(two: list[MeowEnv], tmp_path: Path):
    a, b = two
    # Each task starts slowly (as CUDA and a framework do) before it allocates 12000 MiB.
    task = f"sleep 1.5; {HOLD} --mib 12000 -- sleep 1"
    threads = [threading.Thread(target=env.meow, args=("create", task, "-n", "big", "-M",
                                                       "12000")) for env in two]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = wait_for(lambda: [e for e in two if e.status("big") == "running"], 10,
                     "one task to start")
    assert len(first) == 1
    waiting = b if first[0] is a else a
    note = wait_for(lambda: waiting.tasks()["big"]["why"], 10, "a note")
    assert "12000MiB on GPU 0 reserved by another meow home of yours" in note
    # the other queue's reservation shows in `meow devices`, too
    others = wait_for(lambda: json.loads(waiting.meow("devices", "--json").stdout)
                      ["devices"][0]["others"], 10, "the other reservation in meow devices")
    assert others[0]["mib"] == 12000
    for env in two:
        done = env.wait_status("big", "done", "failed", timeout=60)
        assert done["status"] == "done", env.meow("show", "big").stdout  # no fake OOM


def test_ten_queues_forty_tasks_never_overbook(shared: Path):
    """A hold that does not fit fails like a CUDA out-of-memory: every task done means no
    moment had more than the GPU booked."""
    for envs in daemons(shared, 10):
        def submit(env: MeowEnv) -> None:
            for i in range(4):
                env.meow("create", f"{HOLD} --mib 12000 -- sleep 0.3", "-n", f"t{i}",
                         "-M", "12000")

        threads = [threading.Thread(target=submit, args=(env,)) for env in envs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 240
        for env in envs:
            for i in range(4):
                left = max(1.0, deadline - time.monotonic())
                t = env.wait_status(f"t{i}", "done", "failed", timeout=left)
                assert t["status"] == "done", env.meow("show", f"t{i}").stdout


def test_a_killed_daemons_claim_lives_as_long_as_its_task(two: list[MeowEnv],
                                                          tmp_path: Path):
    a, b = two
    go = tmp_path / "go"
    # a's task has its claim but allocates nothing until `go` exists
    a.meow("create", f"while [ ! -e {go} ]; do sleep 0.05; done", "-n", "slow",
           "-M", "12000")
    a.wait_status("slow", "running")
    a.kill9()
    b.meow("create", "true", "-n", "next", "-M", "12000")
    note = wait_for(lambda: b.tasks()["next"]["why"], 10, "a note")
    assert "reserved by another meow home of yours" in note
    go.touch()  # a's task ends while no daemon of a's runs: its claim goes with it
    b.wait_status("next", "done", timeout=30)
    a.start()
    assert a.wait_status("slow", "done")["exit_code"] == 0


def test_a_daemon_that_exits_leaves_only_the_claims_of_tasks_still_running(
        two: list[MeowEnv], shared: Path):
    a, b = two
    a.meow("create", "true", "-n", "short", "-M", "1000")
    a.wait_status("short", "done")
    b.meow("create", "sleep 60", "-n", "long", "-M", "2000")
    b.wait_status("long", "running")
    files = lambda: sorted(p.name for p in shared.glob("meow-ledger-*.u*"))  # noqa: E731
    wait_for(lambda: len(files()) >= 1, what="b's ledger file")
    a.meow("exit")
    b.meow("exit")  # its task keeps running, and keeps its claim
    [left] = files()
    assert '"claims":[[' in (shared / left).read_text() and "2000" in (shared / left).read_text()
    b.start()
    b.meow("kill", "long")
    b.wait_status("long", "killed")
    b.meow("exit")
    assert files() == []
