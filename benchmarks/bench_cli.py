"""Budget: `meow create "true"` against a running daemon, median wall time within 2x of
`python -c "import socket, msgpack"`; and submit-to-start latency on an idle daemon."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from statistics import median

from _harness import BIN, Client, daemon

RUNS = 40


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    with daemon() as (env, paths):
        base = [wall([sys.executable, "-c", "import socket, msgpack"], env) for _ in range(RUNS)]
        create = [wall([str(BIN / "meow"), "create", "true", "-c", "0"], env)
                  for _ in range(RUNS)]
        b, c = median(base), median(create)
        print(f"python -c 'import socket, msgpack'  median {b * 1e3:6.1f} ms")
        print(f"meow create true (daemon running)   median {c * 1e3:6.1f} ms  "
              f"= {c / b:.2f}x (budget 2x)")

        from meowd.core.protocol import TaskSpec

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
