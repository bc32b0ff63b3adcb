"""Time to re-adopt N running tasks after `kill -9` of meowd.

Starts N tasks that sleep, kills the daemon with SIGKILL, starts a new one and measures
(a) the restore the daemon itself reports (load + re-adopt, from its log) and (b) the
wall time from exec to the first answer listing all N as running.

    python benchmarks/bench_restart.py [N ...]
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

from _harness import BIN, daemon, wait_up

from meowcli.client import Client
from meowd.core.protocol import TaskSpec


def measure(n: int) -> tuple[float, float]:
    with daemon() as (env, paths):
        (paths.state / "config.toml").write_text(f"cpu_slots = {n + 8}\n")
        with Client(paths).connect() as c:
            c.exit()  # restart once so the cpu_slots setting applies
        time.sleep(0.5)
        log = open(paths.state / "restart.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([str(BIN / "meowd")], env=env, stdout=log, stderr=log,
                                start_new_session=True)
        wait_up(paths, tries=1000)
        with Client(paths).connect() as c:
            c.create([TaskSpec("sleep 600", min_devices=0) for _ in range(n)], "/", {})
        _wait_running(paths, n)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        started = time.perf_counter()
        proc = subprocess.Popen([str(BIN / "meowd")], env=env, stdout=log, stderr=log,
                                start_new_session=True)
        _wait_running(paths, n)
        wall = time.perf_counter() - started
        log.close()
        text = (paths.state / "restart.log").read_text()
        restored = float(re.findall(r"running re-adopted\) in ([0-9.]+) ms", text)[-1])
        return restored, wall


def _wait_running(paths, n: int) -> None:
    while True:
        try:
            with Client(paths).connect() as c:
                if sum(t["status"] == "running" for t in c.list()) == n:
                    return
        except Exception:
            pass
        time.sleep(0.01)


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [10, 100, 500]
    print(f"{'running tasks':>14} {'restore (daemon log)':>21} {'kill -9 to all listed':>22}")
    for n in sizes:
        restored, wall = measure(n)
        print(f"{n:>14} {restored:>18.1f} ms {wall * 1000:>19.0f} ms")


if __name__ == "__main__":
    main()
