"""Several meow queues on one machine, daemon-free: each queue is a real process with its own
file ledger in one shared directory, placing real tasks on shared fake GPUs (a task is
`python -m meowd.devices.fake hold`, which dies of a fake CUDA OOM when the GPU is full).
Also `kill -9` of a queue with and without a running task, and a restart that adopts."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meowd.devices.fake import FakeBackend
from meowd.ledger import Claim, FileLedger, ledger_scope, lock_file
from tests.conftest import dead, wait_for

GPU = 16384
SPEC = "1x16GiB"
SCOPE = ledger_scope([GPU])
MP = multiprocessing.get_context("spawn")


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path


def fake_env(base: Path) -> dict[str, str]:
    return {**os.environ, "MEOW_FAKE_GPUS_STATE": str(base), "MEOW_HOME": str(base / "home")}


def hold(base: Path, mib: int, seconds: float, gpu: int = 0) -> subprocess.Popen[bytes]:
    """A task that allocates `mib` on the fake GPU (as CUDA would, or fails) for a while."""
    return subprocess.Popen(
        [sys.executable, "-m", "meowd.devices.fake", "hold", "--spec", SPEC, "--gpu", str(gpu),
         "--mib", str(mib), "--", "sleep", str(seconds)],
        env=fake_env(base), stderr=subprocess.PIPE, start_new_session=True)


def view(backend: FakeBackend) -> tuple[dict[int, int], dict[int, list[tuple[int, int]]]]:
    """What a daemon sees through fake NVML: free MiB and processes per GPU."""
    snapshot = backend.snapshot()
    return ({d.index: d.total_mib - d.used_mib for d in snapshot},
            {d.index: [(p.pid, p.used_mib) for p in d.processes] for d in snapshot})


# -- a queue, in its own process ---------------------------------------------------------------
def run_queue(base: str, ns: str, tasks: int, mib: int, go: Any, out: Any) -> None:
    """Place `tasks` tasks of `mib` one after another, each when the ledger says it fits."""
    backend = FakeBackend([GPU], Path(base) / ns, fake_env(Path(base)))
    ledger = FileLedger(Path(base), SCOPE, ns)
    go.wait()
    waited = failed = 0
    for n in range(tasks):
        key = f"{n}.1"
        while True:
            free, processes = view(backend)
            if ledger.claim([Claim(key, 0, mib)], free, processes):
                break
            waited += 1
            time.sleep(0.01)
        task = hold(Path(base), mib, 0.05)
        ledger.bind(key, task.pid)
        _, err = task.communicate()
        ledger.release(key)
        if task.returncode != 0:
            failed += 1
            out.put(("error", ns, err.decode()))
    out.put(("done", ns, waited, failed))


def watch_bookings(base: Path, stop: threading.Event, seen: list[int]) -> None:
    """Sum every queue's claims under the ledger's lock, over and over."""
    monitor = FileLedger(base, SCOPE, "monitor")
    while not stop.is_set():
        fd = lock_file(monitor.lock_path, 10)
        try:
            seen.append(sum(c.mib for c in monitor.others() if c.device == 0))
        finally:
            os.close(fd)
        time.sleep(0.002)


def test_ten_queues_and_forty_tasks_never_book_more_than_the_gpu_holds(base: Path):
    queues, tasks = 10, 4
    go, out = MP.Event(), MP.Queue()
    workers = [MP.Process(target=run_queue, args=(str(base), f"home-{i}", tasks, 12000, go, out))
               for i in range(queues)]
    for w in workers:
        w.start()
    stop, seen = threading.Event(), []
    monitor = threading.Thread(target=watch_bookings, args=(base, stop, seen))
    monitor.start()
    go.set()
    results = [out.get(timeout=300) for _ in range(queues)]
    stop.set()
    monitor.join()
    for w in workers:
        w.join(30)
    errors = [r for r in results if r[0] == "error"]
    assert errors == []
    assert sum(r[3] for r in results) == 0  # no task died of the fake OOM
    assert sum(r[2] for r in results) > 0  # queues did wait for each other
    assert max(seen) == 12000 and all(booked in (0, 12000) for booked in seen)


def race(base: str, ns: str, go: Any, out: Any, release: Any) -> None:
    """Claim 12000 MiB the moment `go` is set; the winner holds it until `release`, the
    other retries until it gets it."""
    ledger = FileLedger(Path(base), SCOPE, ns)
    go.wait()
    result = ledger.claim([Claim("1.1", 0, 12000)], {0: GPU})
    out.put((ns, bool(result), result.note()))
    if result:
        release.wait()
        ledger.release("1.1")
        return
    while not ledger.claim([Claim("1.1", 0, 12000)], {0: GPU}):
        time.sleep(0.01)
    out.put((ns, True, "later"))


def test_two_queues_claiming_at_once_one_goes_the_other_waits_then_goes(base: Path):
    go, out, release = MP.Event(), MP.Queue(), MP.Event()
    workers = [MP.Process(target=race, args=(str(base), ns, go, out, release))
               for ns in ("home-a", "home-b")]
    for w in workers:
        w.start()
    go.set()
    first = sorted([out.get(timeout=60), out.get(timeout=60)], key=lambda r: not r[1])
    assert [ok for _, ok, _ in first] == [True, False]
    assert "12000MiB on GPU 0 reserved by another meow home of yours" in first[1][2]
    release.set()
    assert out.get(timeout=60) == (first[1][0], True, "later")
    for w in workers:
        w.join(30)


def test_without_the_ledger_the_second_task_dies_of_oom_on_the_shared_fake_gpu(base: Path):
    """Two homes with the same fake GPUs see the same memory: the issue's failure, when
    nothing books memory before the allocation."""
    a = FakeBackend([GPU], base / "home-a", fake_env(base))
    b = FakeBackend([GPU], base / "home-b", fake_env(base))
    first = hold(base, 12000, 60)
    try:
        wait_for(lambda: view(a)[0] == {0: GPU - 12000}, what="the first allocation")
        assert view(b)[1] == {0: [(first.pid, 12000)]}
        second = hold(base, 12000, 60)
        _, err = second.communicate(timeout=30)
        assert second.returncode == 1
        assert b"CUDA out of memory (fake): tried to allocate 12000MiB on fake GPU 0" in err
    finally:
        first.kill()
        first.wait()
    wait_for(lambda: view(b)[0] == {0: GPU}, what="the memory to be free again")
    # Other fake GPUs, or a home that keeps its fake GPUs private, share nothing.
    other = FakeBackend([GPU, GPU], base / "home-c", fake_env(base))
    private = FakeBackend([GPU], base / "home-d", {"MEOW_FAKE_GPUS_STATE": "private"})
    again = hold(base, 1000, 60)
    try:
        wait_for(lambda: view(a)[0] == {0: GPU - 1000}, what="the allocation")
        assert view(other)[0] == {0: GPU, 1: GPU} and view(private)[0] == {0: GPU}
    finally:
        again.kill()
        again.wait()


def test_a_hold_where_the_fake_gpus_are_unknown_lands_on_its_homes_own(base: Path):
    backend = FakeBackend([GPU], base / "home" / "fake-gpus", fake_env(base))
    env = {k: v for k, v in fake_env(base).items() if k != "MEOW_FAKE_GPUS"}
    task = subprocess.Popen([sys.executable, "-m", "meowd.devices.fake", "hold", "--gpu", "0",
                             "--mib", "3000", "--", "sleep", "60"], env=env)
    try:
        wait_for(lambda: view(backend)[1] == {0: [(task.pid, 3000)]}, what="the hold")
    finally:
        task.kill()
        task.wait()


# -- kill -9 -----------------------------------------------------------------------------------
def daemon(base: str, ns: str, spawn_task: bool, out: Any) -> None:
    """A queue that claims 12000 MiB, maybe starts the task, reports, and waits to be killed."""
    ledger = FileLedger(Path(base), SCOPE, ns)
    assert ledger.claim([Claim("5.1", 0, 12000)], {0: GPU})
    pid = None
    if spawn_task:
        pid = subprocess.Popen(["sleep", "600"], start_new_session=True).pid
        assert ledger.bind("5.1", pid)
    out.put(pid)
    time.sleep(600)


@pytest.fixture
def killed_daemon(base: Path, request: pytest.FixtureRequest) -> Iterator[int | None]:
    """A queue killed with SIGKILL after its claim (and its task's start, if asked)."""
    out = MP.Queue()
    proc = MP.Process(target=daemon, args=(str(base), "home-a", request.param, out))
    proc.start()
    task = out.get(timeout=60)
    proc.kill()
    proc.join()
    yield task
    if task is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(task, signal.SIGKILL)


def ledger_files(base: Path) -> list[str]:
    return [p.name for p in base.iterdir() if p.name.startswith(f"meow-ledger-{SCOPE}.u")]


def only_file_of(base: Path, home: str) -> bool:
    """The ledger holds one file, `home`'s (named `<prefix>.<home>.<random>`)."""
    files = ledger_files(base)
    return len(files) == 1 and files[0].startswith(f"meow-ledger-{SCOPE}.u{os.getuid()}.{home}.")


@pytest.mark.parametrize("killed_daemon", [False], indirect=True)
def test_a_daemon_killed_between_claim_and_spawn_leaves_nothing(base: Path, killed_daemon):
    other = FileLedger(base, SCOPE, "home-b")
    assert other.others() == []
    assert other.claim([Claim("1.1", 0, 12000)], {0: GPU})
    assert len(ledger_files(base)) == 2
    other.expire()  # the same user's daemon removes the dead one's file
    assert only_file_of(base, "home-b")


@pytest.mark.parametrize("killed_daemon", [True], indirect=True)
def test_a_killed_daemons_claim_lasts_while_its_task_runs(base: Path, killed_daemon: int):
    task, other = killed_daemon, FileLedger(base, SCOPE, "home-b")
    refused = other.claim([Claim("1.1", 0, 12000)], {0: GPU})
    assert not refused and "12000MiB on GPU 0" in refused.note()
    other.expire()
    assert [c.mib for c in other.others()] == [12000]
    os.kill(task, signal.SIGKILL)
    wait_for(lambda: dead(task), what="the task to end")
    assert other.others() == []
    assert other.claim([Claim("1.1", 0, 12000)], {0: GPU})
    other.expire()
    assert only_file_of(base, "home-b")


@pytest.mark.parametrize("killed_daemon", [True], indirect=True)
def test_a_restarted_daemon_adopts_the_claim_and_releases_it_when_the_task_ends(
        base: Path, killed_daemon: int):
    task, other = killed_daemon, FileLedger(base, SCOPE, "home-b")
    restarted = FileLedger(base, SCOPE, "home-a")  # same home, new daemon process
    assert restarted.adopt([Claim("5.1", 0, 12000)], task)
    restarted.retain(["5.1"])
    assert [c.mib for c in other.others()] == [12000]
    assert not other.claim([Claim("1.1", 0, 12000)], {0: GPU})
    os.kill(task, signal.SIGKILL)
    wait_for(lambda: dead(task), what="the task to end")
    restarted.release("5.1")  # on the task's exit
    assert ledger_files(base) == []
