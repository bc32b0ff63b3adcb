"""Discrete-event simulator: meow's real placement code on a virtual clock.

Each pass goes through the daemon's own pipeline: the fake device backend reports
per-process GPU memory (a running task holds exactly what it reserved), `account()`
turns that into free memory, `estimates.expected_end()` says when each running task is
expected to end (raising an estimate a task outlives), and `place()` picks what starts.
Only the clock is fake.

Policies compared on the same traces, with the same estimates:
  meow          the default: runtime-aware (EASY) backfill, spread then tightest fit
  conservative  meow with Policy(backfill="conservative"): the first 8 blocked tasks
                keep their reservations
  guard         the previous default: held GPUs drain, runtimes ignored
  cattino       strict head-of-line in priority order, first fit by GPU index
  fifo          arrival order (priorities ignored), first fit, backfill, no reservation

Estimates are what real life gives (the knobs): a time limit when the trace has one (or
`--limits F`: every task gets F x its runtime, as users who play safe do); else a
history estimate off by up to `--error` either way (log-uniform: half are too short);
else, for a `--no-estimate` fraction of tasks, none. A task that reaches its time limit
is stopped there. Seeded: every policy sees the same estimates.

Durations do not stretch when tasks share a GPU (the model knows memory, not compute).
The lower bound is honest for any schedule: max over t of (t - first arrival) + the work
arriving from t on / GPUs, where a task's work on a GPU is counted with a dual-feasible
weight of its memory share (a task over half a card cannot share it with another), and
never less than any task's arrival + runtime. A second bound (`wait_bound`) says what
bounding the widest jobs' waits costs the others: the least mean wait of any schedule
whose widest jobs wait no longer than a given policy's (guard's in the report; per
policy in --json as mean_wait_bound_h), for any order and for arrival order.

    python benchmarks/simulate.py            # five traces; history estimates and 3x limits
    python benchmarks/simulate.py --scale    # also 100,000 tasks on 1,000 GPUs (meow)
    python benchmarks/simulate.py --frontier # meow with reservations delayed 0..10 h
    python benchmarks/simulate.py --trace FILE.csv --gpus 8x80GiB --json
      (CSV header: submit_s,gpus,mem_mib,runtime_s,time_limit_s,priority,name;
       time_limit_s, priority and name may be empty)
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import random
import sys
import time
from bisect import bisect_right, insort
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import accumulate

from meowd.core import estimates
from meowd.core.estimates import Estimate
from meowd.core.scheduler import (
    Candidate,
    DeviceTable,
    DeviceView,
    Policy,
    Running,
    Timeline,
    WaitQueue,
    account,
    place,
)
from meowd.core.settings import parse_fake_gpus
from meowd.devices.fake import FakeBackend

GiB = 1024
CSV_FIELDS = ("submit_s", "gpus", "mem_mib", "runtime_s", "time_limit_s", "priority", "name")


@dataclass(frozen=True)
class Job:
    id: int
    arrival: float
    priority: int
    gpus: int
    mib: int
    duration: float
    time_limit: float | None = None
    name: str = ""

    @property
    def runtime(self) -> float:
        """What it really runs: stopped at its time limit."""
        return self.duration if self.time_limit is None else min(self.duration, self.time_limit)


@dataclass(frozen=True)
class Knobs:
    error: float = 2.0
    """History estimates are runtime x error**u, u uniform in [-1, 1]."""
    no_estimate: float = 0.2
    """Fraction of tasks without a time limit that have no history either."""
    limits: float | None = None
    """Give every task without a time limit one of `limits` x its runtime."""
    seed: int = 0

    def describe(self) -> str:
        if self.limits is not None:
            return f"time limits {self.limits:g}x the runtime"
        return (f"history estimates off by up to {self.error:g}x, "
                f"{self.no_estimate:.0%} of tasks with none")


@dataclass
class Result:
    makespan: float = 0.0
    mean_wait: float = 0.0
    max_wait: float = 0.0
    max_wait_big: float | None = None
    gpu_util: float = 0.0
    mem_util: float = 0.0
    passes: int = 0
    wall: float = 0.0
    waits: dict[int, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, float | None]:
        h = 3600
        return {"makespan_h": self.makespan / h, "mean_wait_h": self.mean_wait / h,
                "max_wait_h": self.max_wait / h,
                "max_wait_big_h": None if self.max_wait_big is None else self.max_wait_big / h,
                "gpu_util": self.gpu_util}


POLICIES: dict[str, Policy] = {
    "meow": Policy(),
    "conservative": Policy(backfill="conservative"),
    "guard": Policy(backfill="guard"),
    "cattino": Policy(starvation_guard=False, fit="first", head_of_line=True),
    "fifo": Policy(starvation_guard=False, fit="first"),
}
USES_ESTIMATES = {"easy", "conservative"}


def with_limits(jobs: list[Job], knobs: Knobs) -> list[Job]:
    if knobs.limits is None:
        return jobs
    return [j if j.time_limit is not None else replace(j, time_limit=knobs.limits * j.duration)
            for j in jobs]


def make_estimates(jobs: list[Job], knobs: Knobs) -> dict[int, Estimate | None]:
    """Each job's estimate at submission, seeded (draws never depend on the policy)."""
    rng = random.Random(knobs.seed)
    out: dict[int, Estimate | None] = {}
    for job in jobs:
        u, missing = rng.uniform(-1, 1), rng.random() < knobs.no_estimate
        if job.time_limit is not None:
            out[job.id] = estimates.from_limit(job.time_limit)
        elif missing:
            out[job.id] = None
        else:
            out[job.id] = Estimate(job.duration * knobs.error ** u, "history")
    return out


def simulate(jobs: list[Job], totals: list[int], policy_name: str,
             knobs: Knobs = Knobs()) -> Result:
    policy = POLICIES[policy_name]
    jobs = with_limits(jobs, knobs)
    ests = make_estimates(jobs, knobs)
    uses_estimates = policy.mode in USES_ESTIMATES
    ignore_priority = policy_name == "fifo"
    backend = FakeBackend(totals, holds_dir=None)
    reservations: list[dict[int, int]] = [{} for _ in totals]
    table = DeviceTable([DeviceView(i, t, t) for i, t in enumerate(totals)])
    timeline = Timeline()
    tasks_on = [0] * len(totals)

    def refresh(index: int) -> None:
        info = backend.device(index)
        usage = {p.pid: p.used_mib for p in info.processes}
        u = account(index, info.total_mib, info.used_mib, usage, reservations[index])
        table.update(DeviceView(index, u.total, u.free, len(u.task_ids), u.used_by_others))

    by_id = {job.id: job for job in jobs}
    queue = WaitQueue()
    # (time, kind, job id); kind: 0 = end, 1 = arrival.
    events: list[tuple[float, int, int]] = [(job.arrival, 1, job.id) for job in jobs]
    heapq.heapify(events)
    placed_on: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    started_at: dict[int, float] = {}
    result = Result()
    mem_time = busy_time = 0.0
    reserved_now = busy_now = 0
    last = finished = jobs[0].arrival if jobs else 0.0
    start_wall = time.perf_counter()
    while events:
        now = events[0][0]
        mem_time += reserved_now * (now - last)
        busy_time += busy_now * (now - last)
        last = now
        while events and events[0][0] == now:  # everything at this instant, then one pass
            _, kind, job_id = heapq.heappop(events)
            job = by_id[job_id]
            if kind == 1:
                queue.add(Candidate(job.id, 0 if ignore_priority else job.priority,
                                    job.arrival, job.gpus, job.mib,
                                    _seconds(ests[job.id]) if uses_estimates else None))
            else:
                finished = now
                devices, reserved = placed_on.pop(job_id)
                timeline.discard(job_id)
                for index, mib in zip(devices, reserved, strict=True):
                    backend.release(job_id, index)
                    del reservations[index][job_id]
                    reserved_now -= mib
                    tasks_on[index] -= 1
                    busy_now -= tasks_on[index] == 0
                    refresh(index)
        if not queue:
            continue
        while timeline.ends and timeline.ends[0][0] <= now:
            # It outlived its estimate: raised, as the daemon does at each pass.
            job_id = timeline.ends[0][3]
            end = estimates.expected_end(started_at[job_id], ests[job_id], now)
            timeline.add(job_id, Running(*placed_on[job_id], end))
        plan = place(queue, table, 0, policy, now=now, running=timeline)
        result.passes += 1
        for p in plan.placements:
            job = by_id[p.task_id]
            queue.discard(job.id)
            placed_on[job.id] = (p.devices, p.reserved_mib)
            started_at[job.id] = now
            result.waits[job.id] = now - job.arrival
            for index, mib in zip(p.devices, p.reserved_mib, strict=True):
                reservations[index][job.id] = mib
                backend.hold(job.id, index, mib)  # the task allocates what it asked for
                reserved_now += mib
                busy_now += tasks_on[index] == 0
                tasks_on[index] += 1
                refresh(index)
            heapq.heappush(events, (now + job.runtime, 0, job.id))
            end = estimates.expected_end(now, ests[job.id], now) if uses_estimates else None
            timeline.add(job.id, Running(p.devices, p.reserved_mib, end))
    result.wall = time.perf_counter() - start_wall
    if len(result.waits) != len(jobs):
        raise RuntimeError(f"{policy_name}: {len(jobs) - len(result.waits)} jobs never started")
    t0 = min(job.arrival for job in jobs)
    result.makespan = finished - t0
    result.mean_wait = sum(result.waits.values()) / len(jobs)
    result.max_wait = max(result.waits.values())
    if result.makespan:
        result.mem_util = mem_time / (sum(totals) * result.makespan)
        result.gpu_util = busy_time / (len(totals) * result.makespan)
    widest = max(j.gpus for j in jobs)
    result.max_wait_big = max(result.waits[j.id] for j in jobs if j.gpus == widest)
    return result


def _seconds(estimate: Estimate | None) -> float | None:
    return None if estimate is None else estimate.seconds


def lower_bound(jobs: list[Job], totals: list[int], knobs: Knobs = Knobs()) -> float:
    """A makespan no schedule can beat (see the module docstring)."""
    jobs = with_limits(jobs, knobs)
    t0 = min(job.arrival for job in jobs)
    best = max(j.arrival + j.runtime for j in jobs) - t0
    gpus, biggest = len(totals), max(totals)
    shares = [min(1.0, j.mib / biggest) for j in jobs]
    # f(x) = 1 above 1 - eps, x in [eps, 1 - eps], 0 below eps: any set of tasks that
    # fits on one card weighs at most 1. eps = 0 is the plain memory bound.
    epsilons = {0.0} | {min(0.5, 1 - x + 1e-9) for x in shares if x > 0.5}
    order = sorted(range(len(jobs)), key=lambda n: jobs[n].arrival, reverse=True)
    for eps in epsilons:
        work = 0.0
        for n in order:
            x, job = shares[n], jobs[n]
            weight = 1.0 if x > 1 - eps else (x if x >= eps else 0.0)
            work += job.gpus * job.runtime * weight
            best = max(best, job.arrival - t0 + work / gpus)
    return best


def _weights(jobs: list[Job], totals: list[int]) -> list[tuple[float, Callable[[Job], float]]]:
    """The dual-feasible memory weights of `lower_bound`: for each eps, f(share), for the
    eps that weigh some of these jobs whole (each f is a valid weight; these matter)."""
    biggest = max(totals)
    shares = [min(1.0, j.mib / biggest) for j in jobs]
    epsilons = {0.0} | {min(0.5, 1 - x + 1e-9) for x in shares if x > 0.5}

    def weight(eps: float) -> Callable[[Job], float]:
        def f(job: Job) -> float:
            x = min(1.0, job.mib / biggest)
            return 1.0 if x > 1 - eps else (x if x >= eps else 0.0)
        return f
    return [(eps, weight(eps)) for eps in sorted(epsilons)]


def wait_bound(jobs: list[Job], totals: list[int], big_wait: float,
               knobs: Knobs = Knobs(), in_order: bool = False, step: float = 15.0) -> float:
    """A mean wait no schedule can beat if none of its widest ("big") jobs waits longer
    than `big_wait` seconds: the price of bounding big jobs' waits, paid by the others.

    Honest for any schedule, clairvoyant ones included:
    - weigh a task's use of one GPU with f(its memory share) as in `lower_bound`: what
      runs on one card at one instant weighs at most 1, so GPUs per second in all;
    - a big job that arrived at a started in [a, a + big_wait]: by time t it has run at
      least min(runtime, t - a - big_wait) and at most min(runtime, t - a);
    - the other tasks that ended by T ran, for any s <= T, at most what they could have
      run by s (from their arrivals) plus GPUs x (T - s) less the big work that must
      fall in [s, T]. At most the count of their smallest works that fit in that (any
      order of arrival) ended, and at most (GPUs - the big jobs that must be running
      then) / (least weight) run;
    - whoever arrived and has not started waits: the mean wait is at least the integral
      of (arrived - could have started), over all tasks, on a `step` grid by its lower
      envelope.

    `in_order`: only for schedules that start the other tasks in arrival order (FIFO,
    as a lab expects within a priority): the first m have started, at most that many
    of them run, so the rest ended: the smallest works of the first m, less that many,
    fit."""
    jobs = with_limits(jobs, knobs)
    widest = max(j.gpus for j in jobs)
    bigs = [j for j in jobs if j.gpus == widest]
    small = [j for j in jobs if j.gpus != widest]
    if not small:
        return 0.0
    t0, gpus = min(j.arrival for j in jobs), len(totals)
    best = 0.0
    for _, f in _weights(small, totals):
        least = min(j.gpus * f(j) for j in small)
        if least == 0:
            continue  # tasks that weigh nothing could all run at once: no bound
        arrivals = sorted(j.arrival for j in small)
        queue = [j.gpus * f(j) * j.runtime for j in sorted(small, key=lambda j: j.arrival)]
        first: list[float] = []  # the works of the first m started, sorted
        first_sum = 0.0
        ends = sorted((j.arrival + j.runtime, j.gpus * f(j) * j.runtime) for j in small)
        big = sorted((j.arrival + big_wait, j.runtime, j.gpus * f(j)) for j in bigs)
        last = max(max(s + p for s, p, _ in big), arrivals[-1])
        works: list[float] = []
        sums: list[float] = []
        waiting = 0.0
        t, n_arrived, n_ends, n_big = t0, 0, 0, 0
        active: list[tuple[float, float, float]] = []  # big jobs that must have started
        big_ended = 0.0  # the work of those that must have ended
        came = sorted((j.arrival, j.runtime, j.gpus * f(j)) for j in bigs)
        arrived_big: list[tuple[float, float, float]] = []  # big jobs that may have started
        big_arrived_done, n_came, slack = 0.0, 0, -gpus * t0
        by_arrival = sorted((j.arrival, j.runtime, j.gpus * f(j)) for j in small)
        small_running: list[tuple[float, float, float]] = []  # may still be running
        small_ended = 0.0  # the work of those that may have ended
        while True:
            while n_arrived < len(arrivals) and arrivals[n_arrived] <= t:
                small_running.append(by_arrival[n_arrived])
                n_arrived += 1
            while n_came < len(came) and came[n_came][0] <= t:
                arrived_big.append(came[n_came])
                n_came += 1
            big_arrived_done += sum(w * p for a, p, w in arrived_big if t - a >= p)
            arrived_big = [b for b in arrived_big if t - b[0] < b[1]]
            later = t + step
            if n_ends < len(ends) and ends[n_ends][0] <= later:
                while n_ends < len(ends) and ends[n_ends][0] <= later:
                    insort(works, ends[n_ends][1])
                    n_ends += 1
                sums = list(accumulate(works))
            while n_big < len(big) and big[n_big][0] <= t:
                active.append(big[n_big])
                n_big += 1
            big_ended += sum(w * p for s, p, w in active if t - s >= p)
            active = [b for b in active if t - b[0] < b[1]]
            big_done = big_ended + sum(w * (t - s) for s, _, w in active)
            # Work on the others by `later`: what had arrived by some s <= t, plus
            # GPUs x (later - s) less the big work that must fall in between.
            big_most = big_arrived_done + sum(w * min(p, t - a) for a, p, w in arrived_big)
            small_ended += sum(w * p for a, p, w in small_running if t - a >= p)
            small_running = [j for j in small_running if t - j[0] < j[1]]
            small_most = small_ended + sum(w * (t - a) for a, _, w in small_running)
            slack = min(slack, small_most - gpus * t + big_most)
            capacity = gpus * later - big_done + slack
            # Big jobs that run all through [t, later) whatever their start leave less
            # room for running others.
            forced = sum(w for s, p, w in active if s - big_wait + p >= later)
            most = max(0, int((gpus - forced) / least + 1e-9))
            done = bisect_right(sums, capacity)
            queued = n_arrived - min(len(arrivals), done + most)
            if in_order:  # both hold
                while len(first) < n_arrived:
                    work = queue[len(first)]
                    longest = sum(sorted([*first[-most:], work])[-most:]) if most else 0.0
                    if first_sum + work - longest > capacity:
                        break
                    insort(first, work)
                    first_sum += work
                queued = max(queued, n_arrived - len(first))
            waiting += max(0.0, queued) * step
            if t >= last and queued <= 0:
                break
            t = later
        best = max(best, waiting / len(jobs))
    return best


# -- traces ---------------------------------------------------------------------------------
Trace = tuple[str, list[Job], list[int]]


def sweep_trace(seed: int = 1) -> Trace:
    """Hyper-parameter sweeps: bursts of 50 small 1-GPU jobs, 8 x 80 GiB."""
    rng = random.Random(seed)
    jobs, t, n = [], 0.0, 0
    for burst in range(40):
        t += rng.expovariate(1 / 900)
        mib = rng.choice([8, 12, 16, 20]) * GiB
        for i in range(50):
            jobs.append(Job(n, t, 0, 1, mib, rng.uniform(300, 1800), name=f"sweep{burst}_{i}"))
            n += 1
    return "sweep of small jobs", jobs, [80 * GiB] * 8


def mixed_trace(seed: int = 2) -> Trace:
    """A steady mix: 80% 1-GPU jobs (20-40 GiB), 20% 4-GPU jobs (60-75 GiB), 8 x 80 GiB."""
    rng = random.Random(seed)
    jobs, t = [], 0.0
    for n in range(1500):
        t += rng.expovariate(1 / 550)
        if rng.random() < 0.8:
            jobs.append(Job(n, t, 0, 1, rng.randint(20, 40) * GiB, rng.uniform(600, 3600),
                            name=f"small_{n}"))
        else:
            jobs.append(Job(n, t, 0, 4, rng.randint(60, 75) * GiB, rng.uniform(1800, 7200),
                            name=f"big_{n}"))
    return "mix of 1- and 4-GPU jobs", jobs, [80 * GiB] * 8


def heavy_tail_trace(seed: int = 3, n_jobs: int = 2000, gpus: int = 16,
                     interval: float = 25) -> Trace:
    """Pareto durations, 1/2/4/8-GPU jobs, four priority levels."""
    rng = random.Random(seed)
    jobs, t = [], 0.0
    for n in range(n_jobs):
        t += rng.expovariate(1 / interval)
        width = rng.choices([1, 2, 4, 8], weights=[60, 20, 15, 5])[0]
        mib = rng.choice([10, 24, 40, 70]) * GiB
        duration = min(60 * 60 * 24, 120 * rng.paretovariate(1.3))
        priority = rng.choices([0, 1, 2, 5], weights=[70, 15, 10, 5])[0]
        jobs.append(Job(n, t, priority, width, mib, duration, name=f"w{width}_{n}"))
    return "heavy-tailed mix with priorities", jobs, [80 * GiB] * gpus


def flood_trace(seed: int = 5) -> Trace:
    """A steady flood of whole-card 1-GPU jobs keeps every GPU busy; now and then a 4-GPU
    job arrives. Without a guard it needs four cards to be free at the same moment."""
    rng = random.Random(seed)
    jobs, t, n = [], 0.0, 0
    while t < 48 * 3600:
        t += rng.expovariate(1 / 240)
        jobs.append(Job(n, t, 0, 1, 50 * GiB, rng.uniform(900, 2700), name=f"one_{n}"))
        n += 1
        if n % 30 == 0:
            jobs.append(Job(n, t, 0, 4, 70 * GiB, 3600, name=f"four_{n}"))
            n += 1
    return "flood of 1-GPU jobs with some 4-GPU jobs", jobs, [80 * GiB] * 8


def lab_limits_trace(seed: int = 6) -> Trace:
    """Nine days of a lab on one 8 x 80 GiB box, GPU-time about 90% of it: 1/2/4/8-GPU
    jobs, log-normal runtimes (median 1 h), every job with a user-given time limit 3x
    its runtime."""
    rng = random.Random(seed)
    jobs, t = [], 0.0
    for n in range(400):
        t += rng.expovariate(1 / 2000)
        width = rng.choices([1, 2, 4, 8], weights=[55, 20, 15, 10])[0]
        mib = rng.choice([16, 24, 40, 60, 78]) * GiB
        duration = min(48 * 3600, 3600 * rng.lognormvariate(0, 1.0))
        priority = rng.choices([0, 1], weights=[90, 10])[0]
        jobs.append(Job(n, t, priority, width, mib, duration, time_limit=3 * duration,
                        name=f"lab{width}_{n}"))
    return "lab, time limits 3x the runtime", jobs, [80 * GiB] * 8


def scale_trace(seed: int = 4) -> Trace:
    """100,000 tasks on 1,000 GPUs: the heavy-tailed mix, arriving faster."""
    _, jobs, totals = heavy_tail_trace(seed, n_jobs=100_000, gpus=1000, interval=0.3)
    return "100,000 tasks on 1,000 GPUs", jobs, totals


TRACES = (sweep_trace, mixed_trace, heavy_tail_trace, flood_trace, lab_limits_trace)


def load_trace(path: str, totals: list[int]) -> Trace:
    """A CSV trace (header `CSV_FIELDS`; time_limit_s, priority and name may be empty)."""
    jobs = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"submit_s", "gpus", "mem_mib", "runtime_s"} - set(reader.fieldnames or ())
        if missing:
            raise SystemExit(f"{path}: missing columns {', '.join(sorted(missing))} "
                             f"(header: {','.join(CSV_FIELDS)})")
        for n, row in enumerate(reader):
            limit = (row.get("time_limit_s") or "").strip()
            jobs.append(Job(n, float(row["submit_s"]), int(row.get("priority") or 0),
                            int(row["gpus"]), int(row["mem_mib"]), float(row["runtime_s"]),
                            float(limit) if limit else None, row.get("name") or ""))
    if not jobs:
        raise SystemExit(f"{path}: no tasks")
    if any(j.gpus < 1 for j in jobs):
        raise SystemExit(f"{path}: every task needs gpus >= 1")
    if any(j.gpus > len(totals) or j.mib > max(totals) for j in jobs):
        raise SystemExit(f"{path}: a task needs more than --gpus offers")
    return path, jobs, totals


# -- report ---------------------------------------------------------------------------------
def run(trace: Trace, policies: list[str], knobs: Knobs) -> tuple[float, dict[str, Result]]:
    _, jobs, totals = trace
    return lower_bound(jobs, totals, knobs), {p: simulate(jobs, totals, p, knobs)
                                              for p in policies}


def hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.2f}h"


def report(trace: Trace, policies: list[str], knobs: Knobs) -> None:
    name, jobs, totals = trace
    bound, results = run(trace, policies, knobs)
    widest = max(j.gpus for j in jobs)
    print(f"\n{name}: {len(jobs)} jobs on {len(totals)} GPUs; {knobs.describe()}")
    print(f"  {'policy':<12} {'makespan':>9} {'mean wait':>10} {'max wait':>9} "
          f"{f'max {widest}-GPU':>10} {'GPU util':>9} {'mem util':>9} {'passes':>7} "
          f"{'wall':>7}")
    for policy, r in results.items():
        print(f"  {policy:<12} {hours(r.makespan):>9} {hours(r.mean_wait):>10} "
              f"{hours(r.max_wait):>9} {hours(r.max_wait_big):>10} {r.gpu_util:>8.1%} "
              f"{r.mem_util:>8.1%} {r.passes:>7} {r.wall:>6.2f}s")
    print(f"  lower bound: makespan >= {hours(bound)}")
    if "guard" in results:
        w = results["guard"].max_wait_big or 0.0
        print(f"  lower bound: mean wait >= {hours(wait_bound(jobs, totals, w, knobs))} "
              f"(any order), >= {hours(wait_bound(jobs, totals, w, knobs, in_order=True))} "
              f"(the others in arrival order) if no {widest}-GPU job waits over guard's "
              f"{hours(w)}")


FRONTIER_H = (0, 1, 2, 4, 6, 8, 10)


def frontier(trace: Trace, knobs: Knobs) -> None:
    """One family of policies, meow with `reserve_after` from 0 to 10 h: a big task
    that waits longer before it gets its reservation lets others pass for longer. Each
    point is marked with the targets it meets: makespan <= 1.01x fifo's (M), mean wait
    <= 1.1x fifo's (W), widest tasks' longest wait <= guard's (B)."""
    name, jobs, totals = trace
    fifo, guard = (simulate(jobs, totals, p, knobs) for p in ("fifo", "guard"))
    print(f"\n{name}; {knobs.describe()}: makespan / mean wait / widest wait, targets "
          f"<= {hours(1.01 * fifo.makespan)} / {hours(1.1 * fifo.mean_wait)} / "
          f"{hours(guard.max_wait_big)}")
    for h in FRONTIER_H:
        key = f"reserve_after={h}h"
        POLICIES[key] = Policy(reserve_after=h * 3600.0)
        try:
            r = simulate(jobs, totals, key, knobs)
        finally:
            del POLICIES[key]
        met = "".join(c if ok else "." for c, ok in (
            ("M", r.makespan <= 1.01 * fifo.makespan), ("W", r.mean_wait <= 1.1 * fifo.mean_wait),
            ("B", (r.max_wait_big or 0) <= (guard.max_wait_big or 0))))
        print(f"  reserve_after {h:>2}h {hours(r.makespan):>9} {hours(r.mean_wait):>7} "
              f"{hours(r.max_wait_big):>7}  {met}")


def as_json(trace: Trace, policies: list[str], knobs: Knobs) -> dict:
    bound, results = run(trace, policies, knobs)
    _, jobs, totals = trace
    return {"lower_bound_h": bound / 3600,
            "policies": {p: r.to_json() for p, r in results.items()},
            "mean_wait_bound_h": {p: wait_bound(jobs, totals, r.max_wait_big or 0.0, knobs) / 3600
                                  for p, r in results.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", help="a CSV trace instead of the built-in ones")
    parser.add_argument("--gpus", default="8x80GiB", help="with --trace: e.g. 8x80GiB")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--error", type=float, default=Knobs.error,
                        help="history estimates are off by up to this factor either way")
    parser.add_argument("--no-estimate", type=float, default=Knobs.no_estimate,
                        help="fraction of tasks (without a time limit) with no estimate")
    parser.add_argument("--limits", type=float, default=None,
                        help="give every task without a time limit one of F x its runtime")
    parser.add_argument("--seed", type=int, default=Knobs.seed)
    parser.add_argument("--policies", default=",".join(POLICIES),
                        help=f"comma-separated, of {', '.join(POLICIES)}")
    parser.add_argument("--frontier", action="store_true",
                        help="instead: meow with reserve_after 0..10 h against the targets")
    parser.add_argument("--scale", action="store_true",
                        help="also run 100,000 tasks on 1,000 GPUs with meow's policy")
    args = parser.parse_args(argv)
    policies = args.policies.split(",")
    if unknown := set(policies) - set(POLICIES):
        parser.error(f"unknown policies: {', '.join(sorted(unknown))}")
    if args.error < 1 or not 0 <= args.no_estimate <= 1:
        parser.error("--error must be >= 1 and --no-estimate in [0, 1]")
    knobs = Knobs(args.error, args.no_estimate, args.limits, args.seed)
    if args.trace:
        trace = load_trace(args.trace, parse_fake_gpus(args.gpus))
        if args.json:
            json.dump(as_json(trace, policies, knobs), sys.stdout, indent=1)
            print()
        else:
            report(trace, policies, knobs)
        return
    variants = [knobs] if args.limits is not None else [knobs, replace(knobs, limits=3.0)]
    traces = [make() for make in TRACES]
    if args.frontier:
        for k in variants:
            for trace in traces:
                frontier(trace, k)
        return
    if args.json:
        out = {name: {k.describe(): as_json((name, jobs, totals), policies, k)
                      for k in variants} for name, jobs, totals in traces}
        json.dump(out, sys.stdout, indent=1)
        print()
    else:
        for k in variants:
            for trace in traces:
                report(trace, policies, k)
    if args.scale:
        report(scale_trace(), ["meow"], knobs)


if __name__ == "__main__":
    main()
