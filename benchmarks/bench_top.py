"""`meow top`: time from an event (a task created) to the screen showing it.

Two measurements against a throwaway daemon:
- push: a `subscribe` connection receiving the state that contains the new task;
- screen: a headless `meow top` (Textual, the real app and its real daemon source)
  showing the task's row in its table.

    python benchmarks/bench_top.py [ROUNDS]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

from _harness import daemon

from meowcli.client import Client
from meowd.core.protocol import SubscribeRequest, TaskSpec


def push_latency(paths, rounds: int) -> list[float]:
    sub = Client(paths, timeout=10).connect()
    sub.send(SubscribeRequest())
    sub.receive()
    times = []
    with Client(paths).connect() as client:
        for n in range(rounds):
            name = f"push{n}"
            started = time.perf_counter()
            client.create([TaskSpec("true", name=name, min_devices=0)], "/", {})
            while not any(t["fullname"] == name for t in sub.receive()["tasks"]):
                pass
            times.append(time.perf_counter() - started)
    sub.close()
    return times


async def screen_latency(paths, rounds: int) -> list[float]:
    from meowcli.top import MeowTop

    app = MeowTop()
    times = []
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause(0.5)
        with Client(paths).connect() as client:
            for n in range(rounds):
                started = time.perf_counter()
                created = client.create([TaskSpec("true", name=f"screen{n}", min_devices=0)],
                                        "/", {})
                key = f"task:{created[0]['id']}"
                table = app.query_one("#tasks")
                while key not in {row.key.value for row in table.ordered_rows}:
                    await pilot.pause(0.005)
                times.append(time.perf_counter() - started)
    return times


def report(what: str, times: list[float]) -> None:
    ms = [t * 1000 for t in times]
    print(f"{what:<34} median {statistics.median(ms):6.1f} ms   max {max(ms):6.1f} ms   "
          f"(n={len(ms)}; target < 1000 ms)")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with daemon() as (env, paths):
        os.environ["MEOW_HOME"] = env["MEOW_HOME"]
        report("create -> pushed state", push_latency(paths, rounds))
        report("create -> row on meow top's screen", asyncio.run(screen_latency(paths, rounds)))


if __name__ == "__main__":
    main()
