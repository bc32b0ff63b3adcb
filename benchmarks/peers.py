"""meow against task-spooler (`tsp`), side by side in one run, as ratios (issue 16).

    python benchmarks/peers.py [--quick] [--repeat N] [--tasks N] [--slots 2,8] [--cpu-repeat N]

Installs task-spooler when it is missing (`apt-get install -y task-spooler`, as root;
otherwise it says so and measures meow alone), then prints, with the load average:

  drain    N `true` tasks queued behind a gate, then released: tasks/s from the release
           to the last end (both sides seen by a waiting client; meow's own first-start ->
           last-end records are printed too). meow runs each slot count two ways:
           `gpu`  fake GPUs (`2x80GiB`, `8x80GiB`), each task `-c 1 -M 0.6`: one per GPU,
                  the issue's target ("2 GPU slots");
           `cpu`  `-c 0` with `cpu_slots` 2 / 8: the same slot semantics as `tsp -S`.
           tsp holds at most ~1000 queued jobs (TS_MAXCONN, select()), so its first 900
           are queued behind the gate and the rest are submitted by a shell loop while it
           drains (each tsp job is a waiting client process; that is how tsp queues).
  submit   one CLI call: `meow create true -c 0` vs `tsp true` (median wall time)
  list     with 1000 finished tasks: `meow list`, `meow list --json` vs `tsp -l`
  start    submit -> start latency, p50/p95, of a task that records its own start time
           (`date +%s.%N > file`), one at a time on an idle queue: meow through the
           socket API and through the CLI, tsp through its CLI
  cli      other frequent meow commands (show, kill, cancel, wait, watch, test) against
           `python -c "import socket, msgpack"` (and `python -S -c pass`); meow's modules
           are compiled first, as an installed meow has them (benchmarks/_harness.py)
  targets  issue 16's targets, met or missed, in this run

Every figure is a median: drains over `--repeat` repeats (3; the meow `cpu` variant over
`--cpu-repeat`, 1), CLI calls over 10 interleaved calls. meow and tsp alternate within
each repeat, each trial on a fresh daemon / tsp server (own MEOW_HOME, own TS_SOCKET and
TMPDIR). Ratios are meow / tsp for rates (higher is better for meow) and for times (lower
is better). Where cgroup v2 is writable, each drain trial runs in a cgroup of its own
and the table adds CPU ms per task of everything it started (daemon, tasks, tsp clients):
on a shared machine that figure is far steadier than wall-clock rates. `--quick`: 500
tasks, one repeat, 200 finished tasks, fewer calls (about 30 s).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from _harness import BIN, Client, compile_meow, stop, wait_up

from meowd.core.paths import resolve_paths
from meowd.core.protocol import TaskSpec, WaitRequest
from meowd.executors import cgroups

PY = sys.executable
CLK = os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie nobody reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wall(cmd: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> float:
    t = time.perf_counter()
    rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL).returncode
    dt = time.perf_counter() - t
    if rc not in ok:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}")
    return dt


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def release(fifo: Path) -> None:
    """Every gate task blocked opening the fifo for reading wakes and reads EOF."""
    fd = os.open(fifo, os.O_WRONLY)
    os.close(fd)


class CpuMeter:
    """CPU time of everything a trial starts (daemon or tsp server, tasks, tsp clients),
    read from a cgroup v2 of its own (`cpu.stat` usage_usec counts descendants). On a
    shared machine this is steadier than wall time: 2 cores / (CPU ms per task) is the
    most any queue can drain. None where cgroup v2 is not writable."""

    def __init__(self) -> None:
        self.root: Path | None = None
        mount, own = cgroups._mount(), cgroups._own_cgroup()
        if mount is None or own is None:
            return
        root = mount / own.lstrip("/") / f"meow-peers-{os.getpid()}"
        try:
            root.mkdir()
            (root / "cpu.stat").read_text()
        except OSError:
            return
        self.root = root
        self._n = 0

    def group(self) -> Path | None:
        if self.root is None:
            return None
        self._n += 1
        group = self.root / f"trial-{self._n}"
        group.mkdir()
        return group

    @staticmethod
    def inside(group: Path | None, argv: list[str]) -> list[str]:
        """`argv` run as a member of `group` (it joins, then execs)."""
        if group is None:
            return argv
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group), *argv]

    @staticmethod
    def seconds(group: Path | None) -> float:
        if group is None:
            return float("nan")
        for line in (group / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
        return float("nan")

    @staticmethod
    def remove(group: Path | None) -> None:
        """Remove the trial's cgroups (meowd leaves its empty meow.tasks/ folders)."""
        if group is None:
            return
        for _ in range(100):  # stragglers (tsp clients) may take a moment to exit
            try:
                for sub in sorted(group.rglob("*"), key=lambda p: -len(p.parts)):
                    if sub.is_dir():
                        sub.rmdir()
                group.rmdir()
                return
            except OSError:
                time.sleep(0.05)

    def close(self) -> None:
        if self.root is not None:
            with contextlib.suppress(OSError):
                self.root.rmdir()


METER: CpuMeter | None = None


# -- task-spooler --------------------------------------------------------------------------
def find_tsp() -> str | None:
    """task-spooler's client: `tsp` (Debian), or `ts` where that is task-spooler (not
    moreutils' timestamper)."""
    if shutil.which("tsp"):
        return "tsp"
    if shutil.which("ts"):
        out = subprocess.run(["ts", "-h"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                             timeout=5)
        if "spooler" in (out.stdout + out.stderr).lower():
            return "ts"
    return None


def ensure_tsp() -> str | None:
    found = find_tsp()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print("task-spooler is not installed and cannot be installed here (needs root and "
              "apt-get: apt-get install task-spooler); measuring meow alone")
        return None
    print("installing task-spooler (apt-get install -y task-spooler)...", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
             "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
    if subprocess.run(["apt-get", "install", "-y", "task-spooler"], **quiet).returncode:
        subprocess.run(["apt-get", "update"], **quiet)
        subprocess.run(["apt-get", "install", "-y", "task-spooler"], **quiet)
    found = find_tsp()
    if not found:
        print("could not install task-spooler; measuring meow alone")
    return found


class Tsp:
    """One isolated task-spooler server: its own socket, output directory and slots."""

    def __init__(self, exe: str, slots: int, group: Path | None = None) -> None:
        self.exe = exe
        self.group = group
        self.dir = Path(tempfile.mkdtemp(prefix="tsp-peers-"))
        self.env = {**os.environ, "TS_SOCKET": str(self.dir / "socket"),
                    "TMPDIR": str(self.dir), "TS_MAXFINISHED": "1000"}
        subprocess.run(CpuMeter.inside(group, [exe, "-S", str(slots)]), env=self.env,
                       check=True, capture_output=True)
        self.server = self._server_pid()

    def _server_pid(self) -> int | None:
        """After the first call returns, the only process with our socket is the server."""
        mark = f"TS_SOCKET={self.env['TS_SOCKET']}".encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if mark in (entry / "environ").read_bytes().split(b"\0"):
                        return int(entry.name)
                except OSError:
                    continue
        return None

    def run(self, *args: str) -> str:
        return subprocess.run([self.exe, *args], env=self.env, check=True, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL).stdout

    def submit(self, *cmd: str) -> int:
        return int(self.run(*cmd).strip())

    def close(self) -> None:
        subprocess.run([self.exe, "-K"], env=self.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        for _ in range(100):  # the server may still write socket.error as it goes
            if not self.server or not alive(self.server):
                break
            time.sleep(0.02)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def tsp_server(exe: str, slots: int, group: Path | None = None):
    t = Tsp(exe, slots, group)
    try:
        yield t
    finally:
        t.close()


# -- meow ----------------------------------------------------------------------------------
@contextmanager
def meowd(fake_gpus: str, group: Path | None = None, **settings: object):
    """A throwaway meowd with its own MEOW_HOME and config (as benchmarks/_harness.py)."""
    home = Path(tempfile.mkdtemp(prefix="meow-peers-"))
    (home / "config.toml").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    env = {**os.environ, "MEOW_HOME": str(home), "MEOW_FAKE_GPUS": fake_gpus}
    with open(home / "daemon.stderr", "wb") as log:
        proc = subprocess.Popen(CpuMeter.inside(group, [str(BIN / "meowd")]), env=env,
                                stdout=subprocess.DEVNULL,
                                stderr=log, start_new_session=True)
    paths = resolve_paths(env)
    wait_up(paths)
    try:
        yield env, paths, proc
    finally:
        stop(paths, proc, home)


# -- (a) drain -----------------------------------------------------------------------------
def drain_meow(n: int, slots: int, mode: str) -> dict[str, float]:
    if mode == "gpu":
        fake, settings, need, mem = f"{slots}x80GiB", {}, 1, 0.6
    else:
        fake, settings, need, mem = "1x80GiB", {"cpu_slots": slots}, 0, 0
    group = METER.group() if METER else None
    try:
        with meowd(fake, group, **settings) as (_env, paths, proc):
            fifo = paths.state / "gate"
            os.mkfifo(fifo)
            with Client(paths, timeout=600) as client:
                gates = [TaskSpec(f"read x < {fifo}", f"gate{i}", 10, need, mem)
                         for i in range(slots)]
                client.create(gates, "/", dict(os.environ))
                _until(lambda: sum(t["status"] == "running" for t in client.list()) == slots)
                all0, cpu0 = CpuMeter.seconds(group), cpu_seconds(proc.pid)
                made = client.create([TaskSpec("true", None, 0, need, mem) for _ in range(n)],
                                     "/", dict(os.environ))
                ids = [str(t["id"]) for t in made]
                t0 = time.time()
                release(fifo)
                wait_all(client, paths, ids, slots)
                t1 = time.time()
                cpu, total = cpu_seconds(proc.pid) - cpu0, CpuMeter.seconds(group) - all0
            with sqlite3.connect(paths.database) as db:
                done, first, last = db.execute(
                    "SELECT sum(status = 'done'), min(started_at), max(ended_at) FROM tasks "
                    "WHERE name NOT LIKE 'gate%'").fetchone()
            if done != n:
                raise RuntimeError(f"meow: only {done} of {n} tasks done")
    finally:
        CpuMeter.remove(group)
    return {"rate": n / (t1 - t0), "own_rate": n / (last - first),
            "cpu_ms": cpu * 1e3 / n, "all_ms": total * 1e3 / n}


def drain_tsp(exe: str, n: int, slots: int) -> dict[str, float]:
    pre = min(n, 900)
    group = METER.group() if METER else None
    try:
        with tsp_server(exe, slots, group) as ts:
            fifo = ts.dir / "gate"
            os.mkfifo(fifo)
            for _ in range(slots):
                ts.submit("sh", "-c", f"read x < {fifo}")
            # Each queued job is a tsp client process that runs the job when told to:
            # the submitting loops run in the trial's cgroup, so those count too.
            all0, cpu0 = CpuMeter.seconds(group), cpu_seconds(ts.server or 0)
            loop = f"for i in $(seq {pre}); do {exe} true; done"
            subprocess.run(CpuMeter.inside(group, ["sh", "-c", loop]), env=ts.env, check=True,
                           stdout=subprocess.DEVNULL)
            loop = f"for i in $(seq {n - pre}); do {exe} true; done"
            rest = subprocess.Popen(CpuMeter.inside(group, ["sh", "-c", loop]), env=ts.env,
                                    stdout=subprocess.PIPE, text=True)
            # Jobs 0..slots-1 are the gates; the pre-queued ones end with job slots+pre-1.
            pre_waiters = [subprocess.Popen([exe, "-w", str(slots + pre - 1 - i)], env=ts.env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                           for i in range(min(slots, pre))]
            t0 = time.time()
            release(fifo)
            for waiter in pre_waiters:
                waiter.wait()
            t_pre = time.time()
            out = rest.communicate()[0].split()
            last_ids = out[-slots:] if out else [str(slots + pre - 1 - i) for i in range(slots)]
            for job in last_ids:
                ts.run("-w", job)
            t1 = time.time()
            cpu = (cpu_seconds(ts.server) - cpu0) if ts.server else float("nan")
            total = CpuMeter.seconds(group) - all0
    finally:
        CpuMeter.remove(group)
    return {"rate": n / (t1 - t0), "pre_rate": pre / (t_pre - t0), "cpu_ms": cpu * 1e3 / n,
            "all_ms": total * 1e3 / n}


def wait_all(client: Client, paths, ids: list[str], slots: int) -> None:
    """Until every task has ended: wait on the last `slots` (they start last), then on
    any straggler the database still shows active. (A `wait` or `list` reply carries every
    task it names, and the client refuses replies over 1 MiB: about 2000 tasks.)"""
    client.call(WaitRequest(targets=tuple(ids[-slots:])))
    while True:
        with sqlite3.connect(paths.database) as db:
            active = [str(row[0]) for row in db.execute(
                "SELECT id FROM tasks WHERE status IN ('waiting', 'running') "
                "AND name NOT LIKE 'gate%' ORDER BY id LIMIT 50")]
        if not active:
            return
        client.call(WaitRequest(targets=tuple(active)))


def _until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark setup timed out")
        time.sleep(0.01)


# -- (b)-(e) on one idle pair with 1000 finished tasks -------------------------------------
def idle_figures(exe: str | None, finished: int, calls: int, latency_n: int) -> dict:
    res: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        res.setdefault(key, []).append(value)

    with meowd("2x80GiB", cpu_slots=2) as (env, paths, _proc), \
            (tsp_server(exe, 2) if exe else _nothing()) as ts:
        with Client(paths, timeout=600) as client:
            made = client.create([TaskSpec("true", None, 0, 0) for _ in range(finished)], "/",
                                 dict(os.environ))
            wait_all(client, paths, [str(t["id"]) for t in made], 2)
        if ts is not None:
            subprocess.run(["sh", "-c", f"for i in $(seq {finished}); do {exe} true; done"],
                           env=ts.env, check=True, stdout=subprocess.DEVNULL)
            ts.run("-w")  # the last job
            time.sleep(0.2)
        meow = str(BIN / "meow")
        compile_meow()
        # Warm the page cache for both sides before timing anything.
        wall([PY, "-c", "import socket, msgpack"], env)
        wall([meow, "list"], env)
        first = str(min(t["id"] for t in Client(paths).connect().list()))
        for _ in range(calls):  # interleaved, so drifting load hits every row alike
            add("floor", wall([PY, "-c", "import socket, msgpack"], env))
            add("floor_S", wall([PY, "-S", "-c", "pass"], env))
            add("meow create", wall([meow, "create", "true", "-c", "0"], env))
            add("meow list", wall([meow, "list"], env))
            add("meow list --json", wall([meow, "list", "--json"], env))
            add("meow show", wall([meow, "show", first], env))
            add("meow kill", wall([meow, "kill", first], env, ok=(0, 1)))
            add("meow cancel", wall([meow, "cancel", first], env, ok=(0, 1)))
            add("meow wait", wall([meow, "wait", first], env, ok=(0, 1)))
            add("meow watch", wall([meow, "watch", first], env, ok=(0, 1)))
            add("meow test", wall([meow, "test"], env))
            if ts is not None:
                add("tsp true", wall([exe, "true"], ts.env))
                add("tsp -l", wall([exe, "-l"], ts.env))
        # (d) submit -> start, one at a time on the idle queue.
        stamp = paths.state / "started"
        cmd = f"date +%s.%N > {stamp}"
        with Client(paths, timeout=60) as client:
            for _ in range(latency_n):
                for way in ("api", "cli", "tsp"):
                    if way == "tsp" and ts is None:
                        continue
                    stamp.unlink(missing_ok=True)
                    if way == "api":
                        sent = time.time()
                        (task,) = client.create([TaskSpec(cmd, None, 0, 0)], "/",
                                                dict(os.environ))
                        client.wait(str(task["id"]))
                    elif way == "cli":
                        sent = time.time()
                        subprocess.run([meow, "create", cmd, "-c", "0"], env=env, check=True,
                                       stdout=subprocess.DEVNULL)
                        _until(lambda: stamp.exists() and stamp.stat().st_size > 0)
                    else:
                        sent = time.time()
                        job = ts.submit("sh", "-c", cmd)
                        ts.run("-w", str(job))
                    _until(lambda: stamp.exists() and stamp.stat().st_size > 0)
                    add(f"start {way}", float(stamp.read_text()) - sent)
                    time.sleep(0.01)
    return res


@contextmanager
def _nothing():
    yield None


# -- the table -----------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repeat")
    parser.add_argument("--repeat", type=int, default=None, help="drain repeats (default 3)")
    parser.add_argument("--tasks", type=int, default=None, help="drain size (default 2000)")
    parser.add_argument("--slots", default="2,8", help="slot counts (default 2,8)")
    parser.add_argument("--cpu-repeat", type=int, default=1,
                        help="repeats of the meow cpu-slot variant (default 1)")
    args = parser.parse_args()

    started = time.monotonic()
    global METER
    METER = CpuMeter()
    try:
        report(args, started)
    finally:
        METER.close()


def report(args: argparse.Namespace, started: float) -> None:
    n = args.tasks or (500 if args.quick else 2000)
    repeat = args.repeat or (1 if args.quick else 3)
    finished, calls, latency_n = (200, 5, 10) if args.quick else (1000, 10, 20)
    slot_counts = [int(s) for s in args.slots.split(",")]
    cpu_repeat = args.cpu_repeat
    exe = ensure_tsp()
    print(f"meow vs task-spooler ({exe or 'absent'}); {os.cpu_count()} CPUs; "
          f"load average at start {loadavg()}", flush=True)

    drains: dict[str, list[dict[str, float]]] = {}
    loads: list[str] = []
    for r in range(repeat):
        for slots in slot_counts:
            runs = [("meow gpu", lambda s=slots: drain_meow(n, s, "gpu"))]
            if exe:
                runs.append(("tsp", lambda s=slots: drain_tsp(exe, n, s)))
            if r < cpu_repeat:
                runs.append(("meow cpu", lambda s=slots: drain_meow(n, s, "cpu")))
            for name, fn in (runs if r % 2 == 0 else runs[::-1]):
                drains.setdefault(f"{name} {slots}", []).append(fn())
        loads.append(loadavg())
        print(f"  drain repeat {r + 1}/{repeat} done ({time.monotonic() - started:.0f} s, "
              f"load {loads[-1]})", flush=True)

    idle = idle_figures(exe, finished, calls, latency_n)
    loads.append(loadavg())

    def med(key: str, field: str = "rate") -> float:
        return statistics.median(d[field] for d in drains[key])

    pre = min(n, 900)
    print(f"\n(a) drain: {n} `true` tasks behind a gate, released at once; tasks/s from the "
          f"release to the last end; median of {repeat} (meow cpu: of {min(cpu_repeat, repeat)})")
    print(f"{'slots':>5} {'meow gpu':>9} {'meow cpu':>9} {'tsp':>6} {f'tsp 1st{pre}':>11}"
          f" {'gpu/tsp':>8} {'cpu/tsp':>8} {f'gpu/1st{pre}':>10}")
    for slots in slot_counts:
        g, c = med(f"meow gpu {slots}"), med(f"meow cpu {slots}")
        row = f"{slots:5d} {g:9.0f} {c:9.0f}"
        if exe:
            t, tp = med(f"tsp {slots}"), med(f"tsp {slots}", "pre_rate")
            row += f" {t:6.0f} {tp:11.0f} {g / t:7.2f}x {c / t:7.2f}x {g / tp:9.2f}x"
        print(row)
    print("\n  CPU ms per task over the whole sweep (submit + drain; daemon, tasks and, for "
          "tsp, the client\n  process each job runs under) and the daemon's / tsp server's "
          "own share:")
    print(f"{'slots':>5} {'meow gpu':>9} {'meow cpu':>9} {'tsp':>6} {'gpu/tsp':>8}   "
          f"{'meowd gpu':>9} {'meowd cpu':>9} {'tsp server':>10}")
    for slots in slot_counts:
        ga, ca = med(f"meow gpu {slots}", "all_ms"), med(f"meow cpu {slots}", "all_ms")
        gd, cd = med(f"meow gpu {slots}", "cpu_ms"), med(f"meow cpu {slots}", "cpu_ms")
        row = f"{slots:5d} {ga:9.2f} {ca:9.2f}"
        if exe:
            ta, td = med(f"tsp {slots}", "all_ms"), med(f"tsp {slots}", "cpu_ms")
            row += f" {ta:6.2f} {ga / ta:7.2f}x   {gd:9.2f} {cd:9.2f} {td:10.2f}"
        else:
            row += f" {'-':>6} {'-':>8}   {gd:9.2f} {cd:9.2f}"
        print(row)
    print(f"  meow gpu: fake GPUs, -c 1 -M 0.6 (one task per GPU: the issue's target); meow "
          f"cpu: -c 0, cpu_slots = slots (tsp's slot semantics).\n  tsp 1st{pre}: the "
          f"jobs queued before the release (tsp keeps ~1000 waiting clients at most; the rest "
          f"are submitted while it drains).\n  Per repeat (tasks/s, release -> last end; "
          f"meow's own first start -> last end in brackets):")
    for key, runs in drains.items():
        print(f"    {key:12s} " + "  ".join(
            f"{d['rate']:5.0f}" + (f" [{d['own_rate']:.0f}]" if "own_rate" in d else "")
            + (f" [1st {d['pre_rate']:.0f}]" if "pre_rate" in d else "") for d in runs))

    def m(key: str) -> float:
        return statistics.median(idle[key]) * 1e3

    floor = m("floor")
    print(f"\n(b,c,e) one CLI call, median of {calls} (ms); {finished} finished tasks in each "
          f"queue; Python floor `python -c 'import socket, msgpack'` {floor:.1f} ms, "
          f"`python -S -c pass` {m('floor_S'):.1f} ms")
    print(f"{'command':28s} {'meow ms':>8} {'tsp ms':>7} {'meow/tsp':>9} {'meow/floor':>10}")
    pairs = [("meow create", "tsp true", "create true -c 0 | tsp true"),
             ("meow list", "tsp -l", "list | tsp -l"),
             ("meow list --json", "tsp -l", "list --json | tsp -l")]
    for key, peer, label in pairs:
        if exe:
            print(f"{label:28s} {m(key):8.1f} {m(peer):7.1f} {m(key) / m(peer):8.1f}x "
                  f"{m(key) / floor:9.2f}x")
        else:
            print(f"{label:28s} {m(key):8.1f} {'-':>7} {'-':>9} {m(key) / floor:9.2f}x")
    for key in ("meow show", "meow kill", "meow cancel", "meow wait", "meow watch", "meow test"):
        print(f"{key.removeprefix('meow ') + ' (meow only)':28s} {m(key):8.1f} {'':7s} "
              f"{'':9s} {m(key) / floor:9.2f}x")

    print(f"\n(d) submit -> start latency, {latency_n} tasks one at a time on an idle queue (ms)")
    print(f"{'way':28s} {'p50':>8} {'p95':>7} {'p95/tsp':>9}")
    tsp95 = pct(idle["start tsp"], 0.95) * 1e3 if exe else None
    for way, label in (("api", "meow (socket API)"), ("cli", "meow create (CLI)"),
                       ("tsp", "tsp (CLI)")):
        key = f"start {way}"
        if key not in idle:
            continue
        p50, p95 = statistics.median(idle[key]) * 1e3, pct(idle[key], 0.95) * 1e3
        ratio = f"{p95 / tsp95:8.1f}x" if tsp95 else f"{'-':>9}"
        print(f"{label:28s} {p50:8.2f} {p95:7.2f} {ratio}")
    print("\nissue 16 targets (this run):")
    marks = []
    if exe:
        for slots, want in ((2, 1.0), (8, 1.5)):
            if slots in slot_counts:
                got = med(f"meow gpu {slots}") / med(f"tsp {slots}")
                marks.append((f"drain, {slots} GPU slots, meow/tsp >= {want}", f"{got:.2f}x",
                              got >= want))
    p95 = pct(idle["start api"], 0.95) * 1e3
    marks.append(("submit -> start p95 <= 5 ms (socket API)", f"{p95:.1f} ms", p95 <= 5))
    for key in ("meow create", "meow list", "meow show", "meow kill", "meow cancel",
                "meow wait", "meow test"):
        r = m(key) / floor
        marks.append((f"`{key}` <= 1.3x the Python floor", f"{r:.2f}x", r <= 1.3))
    for what, got, ok in marks:
        print(f"  {'met   ' if ok else 'MISSED'} {what:44s} {got}")
    print(f"\nload average after each drain repeat: {' | '.join(loads[:-1])}; at the end "
          f"{loads[-1]}; total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
