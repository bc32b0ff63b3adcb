"""Submitting many tasks: per-task cost must stay flat as the queue grows, one creating
environment is stored once, and 10,000 tasks go in one call."""

from __future__ import annotations

import os
import sqlite3
import time

from _harness import Client, daemon

from meowd.core.protocol import TaskSpec


def main() -> None:
    with daemon("4x24GiB") as (_env, paths):
        with Client(paths, timeout=300) as client:
            # Fill every GPU so the queued tasks stay queued (we measure submission only).
            client.create([TaskSpec("sleep 600", f"hold{i}", 0, 1, 20000) for i in range(4)],
                          "/", dict(os.environ))
            print("batch  tasks-in-queue  ms/batch  us/task")
            for batch in range(10):
                specs = [TaskSpec("python train.py", None, 0, 1, 20000) for _ in range(1000)]
                t = time.perf_counter()
                client.create(specs, "/", dict(os.environ))
                dt = time.perf_counter() - t
                print(f"{batch:5d}  {(batch + 1) * 1000:14d}  {dt * 1e3:8.1f}  {dt * 1e3:7.1f}")
            specs = [TaskSpec("python train.py", None, 0, 1, 20000) for _ in range(10_000)]
            t = time.perf_counter()
            client.create(specs, "/", dict(os.environ))
            dt = time.perf_counter() - t
            print(f"10,000 tasks in one call (queue 10,000 -> 20,000): {dt * 1e3:.0f} ms "
                  f"({dt * 1e6 / 10_000:.0f} us/task)")
            t = time.perf_counter()
            n = len(client.list())
            dt = time.perf_counter() - t
            print(f"meow list of {n} tasks over the socket: {dt * 1e3:.0f} ms")
        db = sqlite3.connect(paths.database)
        envs = db.execute("SELECT count(*) FROM envs").fetchone()[0]
        size = os.path.getsize(paths.database) + os.path.getsize(str(paths.database) + "-wal")
        print(f"environments stored: {envs} for {n} tasks; database + WAL: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
