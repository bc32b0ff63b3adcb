"""Budget (issue 16): every frequent `meow` command (and `watch`), against a running daemon with
`--finished` finished tasks, within 1.3x of `python -c "import socket, msgpack"` in the
same venv (median wall time of interleaved calls); and submit-to-start latency on an
idle daemon.

    python benchmarks/bench_cli.py [--runs 40] [--finished 200]

Python's own start is the floor and depends on the venv (its `.pth` files run on every
start): both that floor and `python -S -c pass` (no site at all) are printed. meow's own
modules are compiled first (`compileall`, as `pip install` does for a wheel): an editable
install under PYTHONDONTWRITEBYTECODE=1 would otherwise compile them on every call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from statistics import median

from _harness import BIN, Client, compile_meow, daemon

BUDGET = 1.3
DEVNULL = os.open(os.devnull, os.O_WRONLY)


def wall(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds `cmd` takes, spawned without a shell, its output discarded."""
    t = time.perf_counter()
    pid = os.posix_spawn(cmd[0], cmd, env, file_actions=[
        (os.POSIX_SPAWN_DUP2, DEVNULL, 1), (os.POSIX_SPAWN_DUP2, DEVNULL, 2)])
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {os.waitstatus_to_exitcode(status)}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="calls per command (40)")
    parser.add_argument("--finished", type=int, default=200,
                        help="finished tasks in the queue (200)")
    args = parser.parse_args()
    compile_meow()
    py, meow = sys.executable, str(BIN / "meow")
    with daemon() as (env, paths):
        from meowd.core.protocol import TaskSpec, WaitRequest

        with Client(paths, timeout=600) as client:
            made = client.create([TaskSpec("true", None, 0, 0) for _ in range(args.finished)],
                                 "/", {})
            if made:
                client.call(WaitRequest(targets=tuple(str(t["id"]) for t in made)))
        first = "1" if args.finished else "nothing"
        cases = {
            "floor": [py, "-c", "import socket, msgpack"],
            "python -S -c pass": [py, "-S", "-c", "pass"],
            "create true -c 0": [meow, "create", "true", "-c", "0"],
            "create (options)": [meow, "create", "true", "-n", "x", "-p", "1", "-c", "0",
                                 "-M", "20GiB", "--time-limit", "2h", "--retries", "1",
                                 "--", "a b"],
            "list": [meow, "list"],
            "list --json": [meow, "list", "--json"],
            "show": [meow, "show", first],
            "kill": [meow, "kill", first],
            "cancel": [meow, "cancel", first],
            "wait": [meow, "wait", first],
            "watch": [meow, "watch", first],
            "test": [meow, "test"],
        }
        times: dict[str, list[float]] = {key: [] for key in cases}
        for cmd in cases.values():  # warm the page cache
            wall(cmd, env)
        for i in range(args.runs):  # interleaved: drifting load hits every row alike
            for key, cmd in cases.items():
                if key == "create (options)":
                    cmd = [*cmd[:4], f"x{i}", *cmd[5:]]
                times[key].append(wall(cmd, env))
        floor = median(times["floor"])
        print(f"median of {args.runs} calls, {args.finished} finished tasks queued; floor "
              f"`python -c 'import socket, msgpack'` {floor * 1e3:.1f} ms "
              f"({sys.executable})")
        for key, values in times.items():
            if key == "floor":
                continue
            m = median(values)
            mark = "" if key.startswith("python") else \
                "  ok" if m <= BUDGET * floor else f"  OVER {BUDGET}x"
            print(f"  {key:20s} {m * 1e3:6.1f} ms  {m / floor:5.2f}x{mark}")

        latencies = []
        with Client(paths) as client:
            for i in range(50):
                sent = time.time()
                (created,) = client.create([TaskSpec("true", f"lat{i}", 0, 1, 1000)], "/", {})
                task = client.wait(str(created["id"]))
                latencies.append(task["started_at"] - sent)
        print(f"submit-to-start latency (idle daemon, 50 tasks): median "
              f"{median(latencies) * 1e3:.2f} ms, max {max(latencies) * 1e3:.2f} ms, "
              f"mean {statistics.mean(latencies) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
