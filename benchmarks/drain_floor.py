"""What one task of a drain costs at least, part by part, without meowd around it (issue 16).

    python benchmarks/drain_floor.py [--n 500]

A drain's rate is bounded two ways. Per slot, a task's turn is at least its process chain
(how long from the spawn to the reaped exit). On meowd's one event-loop thread, every task
needs at least the I/O that its guarantees ask for: the start recorded before the spawn and
the end after it (SQLite, as the store writes them), the GPU memory claimed machine-wide
before the spawn and moved to the task after it (the ledger's files), its cgroup made and
removed, its exit watched through a pidfd. This prints each part's median (the real
functions, not copies of them), their sum, and the rates those sums allow, beside
task-spooler's child (fork + exec of the command, nothing else).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meowd.core.models import Task, TaskStatus
from meowd.executors import cgroups
from meowd.executors.local import WRAPPER
from meowd.ledger import Claim, FileLedger
from meowd.store import Attempt, Store


def median_ms(step: Callable[[int], None], n: int) -> float:
    times = []
    for i in range(n):
        t = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def spawn_and_reap(argv: list[str]) -> Callable[[int], None]:
    def step(_: int) -> None:
        pid = os.posix_spawn(argv[0], argv, os.environ, setsid=True)
        fd = os.pidfd_open(pid)
        os.waitpid(pid, 0)
        os.close(fd)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="repeats of each part")
    n = parser.parse_args().n
    work = Path(tempfile.mkdtemp(prefix="meow-floor-"))
    exit_file = str(work / "attempt-1.exit")
    chain = {
        "child: fork + exec `true` (task-spooler's)": spawn_and_reap(["/bin/true"]),
        "child: meow's wrapper running `true`": spawn_and_reap(
            ["/bin/sh", "-c", WRAPPER, "meow-task", "true", exit_file, "/", "", "022"]),
    }
    chain_ms = {name: median_ms(step, n) for name, step in chain.items()}

    store = Store(work / "meow.db")
    tasks = [Task(i, f"t{i}", f"t{i}", "true", "/", "0" * 64) for i in range(1, n + 1)]
    store.insert_tasks(tasks)

    def attempt(i: int) -> Attempt:
        return Attempt(i + 1, 1, None, None, [0], time.time(), "o", "e", exit_file)

    def record_start(i: int) -> None:
        with store.transaction():
            tasks[i].status = TaskStatus.RUNNING
            store.insert_attempt(attempt(i))
            store.update_task(tasks[i])

    def record_pid(i: int) -> None:
        a = attempt(i)
        a.pid, a.create_time = os.getpid(), time.time()
        with store.transaction():
            store.attempt_started(a)

    def record_end(i: int) -> None:
        with store.transaction():
            tasks[i].status = TaskStatus.DONE
            a = attempt(i)
            a.ended_at, a.exit_code = time.time(), 0
            store.insert_attempt(a)
            store.update_task(tasks[i])

    ledger_dir = work / "ledger"
    ledger_dir.mkdir(mode=0o1777)
    ledger = FileLedger(ledger_dir, "floor", "ns")
    holder = subprocess.Popen(["sleep", "600"])

    claim_s: list[float] = []
    bind_s: list[float] = []

    def ledger_turn(i: int) -> None:
        """Claim, then move the claim to the task; then release it (a bound claim dies
        with its task, which this has none of), untimed."""
        t0 = time.perf_counter()
        ledger.claim_each([[Claim(f"{i}.1", i % 2, 1000)]], {0: 80_000, 1: 80_000}, {})
        t1 = time.perf_counter()
        ledger.bind_all({f"{i}.1": holder.pid})
        claim_s.append(t1 - t0)
        bind_s.append(time.perf_counter() - t1)
        ledger.release(f"{i}.1")

    group = cgroups.Cgroups.detect("floor-bench")

    def cgroup(i: int) -> None:
        assert group is not None
        made = group.create(f"task-{i}-1")
        cgroups.remove(made)

    parts: dict[str, Callable[[int], None]] = {
        "SQLite: record the start (attempt + task, one commit)": record_start,
        "SQLite: record the pid (one commit)": record_pid,
        "SQLite: record the end (attempt + task, one commit)": record_end,
    }
    if group is not None:
        parts["cgroup: mkdir + rmdir"] = cgroup
    loop_ms = {name: median_ms(step, n) for name, step in parts.items()}
    for i in range(n):
        ledger_turn(i)
    loop_ms["ledger: claim before the spawn"] = statistics.median(claim_s) * 1e3
    loop_ms["ledger: move the claim to the task"] = statistics.median(bind_s) * 1e3
    holder.kill()

    print(f"one task's parts, median of {n} ({os.cpu_count()} CPUs; {time.strftime('%F %T')})")
    for name, ms in chain_ms.items():
        print(f"  {ms:7.3f} ms  {name}")
    for name, ms in loop_ms.items():
        print(f"  {ms:7.3f} ms  {name}")
    floor = sum(loop_ms.values())
    # Between one task's exit and the next one's spawn on that slot: the end recorded,
    # the claim, the start recorded, the cgroup. The pid and the claim's move come after
    # the spawn, while the child runs.
    between = floor - loop_ms["SQLite: record the pid (one commit)"] \
        - loop_ms["ledger: move the claim to the task"]
    tsp_child = chain_ms["child: fork + exec `true` (task-spooler's)"]
    meow_child = chain_ms["child: meow's wrapper running `true`"]
    print(f"\n  {floor:7.3f} ms  on meowd's loop per task, I/O only (no Python around it)")
    print(f"  {between:7.3f} ms  of it between a slot's exit and its next spawn")
    print(f"  so at most {1e3 / floor:.0f} tasks/s through one loop thread, and per slot one "
          f"task per {meow_child + between:.3f} ms (its child, then that I/O):")
    for slots in (2, 8):
        bound = min(slots * 1e3 / (meow_child + between), 1e3 / floor)
        print(f"  {slots} slots: at most {bound:6.0f} tasks/s if meowd's Python took no time "
              f"(task-spooler's children alone: {slots * 1e3 / tsp_child:.0f})")


if __name__ == "__main__":
    main()
