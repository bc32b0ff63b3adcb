"""100,000 queued tasks (issue 16): daemon memory, `meow list`, submit and `meow top`.

    python benchmarks/bench_scale.py [--tasks N] [--calls K]

A throwaway meowd with four fake 24 GiB GPUs, each filled by a running `sleep` that
reserves 20 GiB, so every task queued after them (`-M 20000`) waits: all slots busy,
a long queue behind them, as a task-spooler user sees it. The tasks are queued over the
socket in creates of 5,000. Then it prints, as medians of K calls of the real CLI:

  rss       the daemon's resident memory with N tasks waiting (and after the lists)
  list      `meow list --json`, `meow list` (the bounded table) and `meow list --all`
  create    one `meow create` with an empty queue and with N waiting (CLI wall time, and
            the create request alone over the socket)
  top       with one `meow top` subscriber (deltas) open: the time its first full state
            takes, then `ping` (`meow test`) and `show` over the socket, each after a
            create that the subscriber is pushed; against the same requests without one;
            then the same requests while GPU 0 is freed and drains the queue (every start
            and end pushed)
  targets   issue 16's scale targets, met or missed, in this run
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path

from _harness import BIN, Client, daemon

from meowd.core.protocol import PingRequest, ShowRequest, SubscribeRequest, TaskSpec

GPUS = "4x24GiB"
QUEUED_MIB = 20000
BATCH = 5000
DRAIN_S = 5.0


def rss_mib(pid: int) -> tuple[float, float]:
    """(resident now, peak) of a process, MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cli(env: dict[str, str], *args: str) -> tuple[float, int, bytes]:
    """Wall time, exit status and stdout of one `meow` call."""
    started = time.perf_counter()
    proc = subprocess.run([str(BIN / "meow"), *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
    return time.perf_counter() - started, proc.returncode, proc.stdout


def median_cli(env: dict[str, str], calls: int, *args: str) -> float | None:
    """Median seconds of `calls` calls; None when the command fails (an older meow)."""
    times = []
    for _ in range(calls):
        dt, rc, _out = cli(env, *args)
        if rc != 0:
            return None
        times.append(dt)
    return statistics.median(times)


def create_figures(env: dict[str, str], client: Client, calls: int) -> tuple[float, float]:
    """(CLI `meow create`, the create request alone) median seconds; each adds a task."""
    cli_times = [cli(env, "create", "python train.py", "-M", str(QUEUED_MIB))[0]
                 for _ in range(calls)]
    socket_times = []
    for _ in range(calls * 4):
        started = time.perf_counter()
        client.create([TaskSpec("python train.py", requires_memory_per_device=QUEUED_MIB)],
                      "/", {"PATH": "/usr/bin"})
        socket_times.append(time.perf_counter() - started)
    return statistics.median(cli_times), statistics.median(socket_times)


def request_latency(client: Client, rounds: int, target: str) -> list[float]:
    """Seconds per `ping` and per `show`, each right after a create (a change to push)."""
    times = []
    for _ in range(rounds):
        client.create([TaskSpec("python train.py", requires_memory_per_device=QUEUED_MIB)],
                      "/", {"PATH": "/usr/bin"})
        for request in (PingRequest(), ShowRequest(target)):
            started = time.perf_counter()
            client.call(request)
            times.append(time.perf_counter() - started)
        time.sleep(0.05)  # the subscriber is pushed this change meanwhile
    return times


def drain_latency(client: Client, seconds: float) -> list[float]:
    """Seconds per `ping` and per `show` while tasks start and end."""
    times = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        for request in (PingRequest(), ShowRequest("hold1")):
            started = time.perf_counter()
            client.call(request)
            times.append(time.perf_counter() - started)
        time.sleep(0.02)
    return times


class Subscriber:
    """One `meow top`'s subscription (deltas), drained by a thread as the TUI does."""

    def __init__(self, paths) -> None:
        self.client = Client(paths, timeout=None).connect()
        started = time.perf_counter()
        self.client.send(SubscribeRequest(deltas=True))
        first = self.client.receive()
        self.first_state = time.perf_counter() - started
        self.first_tasks = len(first["tasks"])
        self.pushes = self.fulls = 0
        self.largest = 0
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            while True:
                pushed = self.client.receive()
                self.pushes += 1
                self.fulls += "since" not in pushed
                self.largest = max(self.largest, len(pushed["tasks"]))
        except Exception:
            return

    def close(self) -> None:
        self.client.close()


def ms(seconds: float | None) -> str:
    return "   n/a" if seconds is None else f"{seconds * 1e3:6.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    n, calls = args.tasks, args.calls
    # A ledger of its own: fake GPUs of one spec are shared machine-wide by default, and
    # another meowd's tasks on them would keep the holds below from starting.
    os.environ["MEOW_LEDGER"] = "private"
    with daemon(GPUS) as (env, paths), Client(paths, timeout=600) as client:
        pid = client.ping()["pid"]
        client.create([TaskSpec("sleep 3600", f"hold{i}", 0, 1, QUEUED_MIB) for i in range(4)],
                      "/", {"PATH": "/usr/bin"})
        print(f"meowd pid {pid}, {GPUS} fake GPUs, each held by a running sleep; "
              f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        rss_empty = rss_mib(pid)[0]
        create_empty = create_figures(env, client, calls)
        started = time.perf_counter()
        queued = 0
        while queued < n:
            size = min(BATCH, n - queued)
            client.create([TaskSpec(f"python train.py --seed {queued + i}", None, 0, 1,
                                    QUEUED_MIB) for i in range(size)], "/", {"PATH": "/usr/bin"})
            queued += size
        fill = time.perf_counter() - started
        print(f"queued {n} tasks in {fill:.1f} s ({fill * 1e6 / max(n, 1):.0f} us/task)")
        rss, peak = rss_mib(pid)
        create_full = create_figures(env, client, calls)
        list_json = median_cli(env, calls, "list", "--json")
        list_table = median_cli(env, calls, "list")
        list_all = median_cli(env, calls, "list", "--all")
        lines = cli(env, "list")[2].count(b"\n")
        rss_listed = rss_mib(pid)[0]
        baseline = request_latency(client, 20, "hold0")
        sub = Subscriber(paths)
        with_sub = request_latency(client, 50, "hold0")
        # GPU 0 freed: queued tasks start and end one after another (each fails at once:
        # no train.py), every start and end is pushed to the subscriber.
        client.kill("hold0", False, force=True)
        before = sub.pushes, sub.fulls
        draining = drain_latency(client, DRAIN_S)
        drained = (sub.pushes - before[0], sub.fulls - before[1])
        ended = sum(t["status"] == "failed" for t in client.list())
        time.sleep(0.5)
        sub.close()

        print(f"\nrss        empty queue {rss_empty:6.0f} MiB; {n} waiting {rss:6.0f} MiB "
              f"(peak {peak:.0f} MiB); after the list calls {rss_listed:.0f} MiB")
        print(f"list       --json {ms(list_json)} ms   table {ms(list_table)} ms "
              f"({lines} lines)   --all {ms(list_all)} ms")
        print(f"create     CLI: empty {ms(create_empty[0])} ms, {n} waiting "
              f"{ms(create_full[0])} ms ({create_full[0] / create_empty[0]:.2f}x);  "
              f"request alone: {create_empty[1] * 1e3:.2f} ms -> {create_full[1] * 1e3:.2f} ms "
              f"({create_full[1] / create_empty[1]:.2f}x)")
        p = lambda xs, q: sorted(xs)[min(len(xs) - 1, int(len(xs) * q))] * 1e3  # noqa: E731
        print(f"top        first full state to a subscriber: {sub.first_state * 1e3:.0f} ms "
              f"({sub.first_tasks} tasks); then {sub.pushes} pushes, the largest with "
              f"{sub.largest} tasks")
        print(f"           ping/show after a create, no subscriber: median "
              f"{statistics.median(baseline) * 1e3:.2f} ms, p95 {p(baseline, 0.95):.2f} ms; "
              f"one subscriber: median {statistics.median(with_sub) * 1e3:.2f} ms, "
              f"p95 {p(with_sub, 0.95):.2f} ms, max {max(with_sub) * 1e3:.2f} ms")
        print(f"           while GPU 0 drains the queue ({ended} tasks ended in "
              f"{DRAIN_S:.0f} s; {drained[0]} pushes, {drained[1]} of them full states): "
              f"median {statistics.median(draining) * 1e3:.2f} ms, "
              f"p95 {p(draining, 0.95):.2f} ms, max {max(draining) * 1e3:.2f} ms")

        def row(what: str, value: str, met: bool | None) -> None:
            verdict = "n/a" if met is None else "met" if met else "MISSED"
            print(f"  {what:<46} {value:>18}  {verdict}")

        print(f"\nissue 16 targets ({n} waiting tasks)")
        row("daemon RSS <= 150 MiB", f"{rss:.0f} MiB", rss <= 150)
        row("meow list --json <= 1 s", f"{ms(list_json).strip()} ms",
            None if list_json is None else list_json <= 1)
        row("meow list (bounded table) < 300 ms", f"{ms(list_table).strip()} ms",
            None if list_table is None else list_table < 0.3)
        ratio = create_full[1] / create_empty[1]
        row("create flat from 0 to N queued (<= 1.2x)", f"{ratio:.2f}x", ratio <= 1.2)
        p95 = p(with_sub, 0.95)
        row("requests with one subscriber open < 5 ms (p95)", f"{p95:.2f} ms", p95 < 5)


if __name__ == "__main__":
    main()
