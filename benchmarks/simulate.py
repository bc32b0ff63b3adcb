"""Discrete-event simulator: meow's real placement code on a virtual clock.

Each pass goes through the daemon's own pipeline: the fake device backend reports
per-process GPU memory (a running task holds exactly what it reserved), `account()`
turns that into free memory, and `place()` picks what starts. Only the clock is fake.

Policies compared on the same traces:
  meow       the default: backfill, starvation guard, spread then tightest fit
  meow-pack  the same with tightest fit first (Policy(fit="pack"))
  cattino    strict head-of-line in priority order, first fit by GPU index
  fifo       arrival order (priorities ignored), first fit, backfill, no guard

Durations do not stretch when tasks share a GPU (the model knows memory, not compute),
so "GPU-time / GPUs" is a bound only when a card runs one task at a time; the memory
bound (GPU-memory-time / total GPU memory) holds regardless.

    python benchmarks/simulate.py            # the three traces, side by side
    python benchmarks/simulate.py --scale    # also 100,000 tasks on 1,000 GPUs (meow)
"""

from __future__ import annotations

import argparse
import heapq
import random
import time
from dataclasses import dataclass, field

from meowd.core.scheduler import (
    Candidate,
    DeviceTable,
    DeviceView,
    Policy,
    WaitQueue,
    account,
    place,
)
from meowd.devices.fake import FakeBackend

GiB = 1024


@dataclass(frozen=True)
class Job:
    id: int
    arrival: float
    priority: int
    gpus: int
    mib: int
    duration: float


@dataclass
class Result:
    makespan: float = 0.0
    mean_wait: float = 0.0
    utilization: float = 0.0
    longest_large_wait: float | None = None
    passes: int = 0
    wall: float = 0.0
    waits: dict[int, float] = field(default_factory=dict)


POLICIES: dict[str, Policy] = {
    "meow": Policy(),
    "meow-pack": Policy(fit="pack"),
    "cattino": Policy(starvation_guard=False, fit="first", head_of_line=True),
    "fifo": Policy(starvation_guard=False, fit="first"),
}


def simulate(jobs: list[Job], totals: list[int], policy_name: str) -> Result:
    policy = POLICIES[policy_name]
    ignore_priority = policy_name == "fifo"
    backend = FakeBackend(totals, holds_dir=None)
    reservations: list[dict[int, int]] = [{} for _ in totals]
    table = DeviceTable([DeviceView(i, t, t) for i, t in enumerate(totals)])

    def refresh(index: int) -> None:
        info = backend.device(index)
        usage = {p.pid: p.used_mib for p in info.processes}
        u = account(index, info.total_mib, info.used_mib, usage, reservations[index])
        table.update(DeviceView(index, u.total, u.free, len(u.task_ids), u.used_by_others))

    by_id = {job.id: job for job in jobs}
    queue = WaitQueue()
    events: list[tuple[float, int, int]] = [(job.arrival, 1, job.id) for job in jobs]
    heapq.heapify(events)  # (time, kind: 0 = end before 1 = arrival, job id)
    placed_on: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    result = Result()
    mem_time = 0.0
    reserved_now = 0
    last = jobs[0].arrival if jobs else 0.0
    start_wall = time.perf_counter()
    while events:
        now = events[0][0]
        mem_time += reserved_now * (now - last)
        last = now
        while events and events[0][0] == now:  # everything at this instant, then one pass
            _, kind, job_id = heapq.heappop(events)
            job = by_id[job_id]
            if kind == 1:
                queue.add(Candidate(job.id, 0 if ignore_priority else job.priority,
                                    job.arrival, job.gpus, job.mib))
            else:
                devices, reserved = placed_on.pop(job_id)
                for index, mib in zip(devices, reserved, strict=True):
                    backend.release(job_id, index)
                    del reservations[index][job_id]
                    reserved_now -= mib
                    refresh(index)
        if not queue:
            continue
        plan = place(queue, table, 0, policy, now=now)
        result.passes += 1
        for p in plan.placements:
            job = by_id[p.task_id]
            queue.discard(job.id)
            placed_on[job.id] = (p.devices, p.reserved_mib)
            result.waits[job.id] = now - job.arrival
            for index, mib in zip(p.devices, p.reserved_mib, strict=True):
                reservations[index][job.id] = mib
                backend.hold(job.id, index, mib)  # the task allocates what it asked for
                reserved_now += mib
                refresh(index)
            heapq.heappush(events, (now + job.duration, 0, job.id))
    result.wall = time.perf_counter() - start_wall
    if len(result.waits) != len(jobs):
        raise RuntimeError(f"{policy_name}: {len(jobs) - len(result.waits)} jobs never started")
    t0 = min(job.arrival for job in jobs)
    result.makespan = last - t0
    result.mean_wait = sum(result.waits.values()) / len(jobs)
    result.utilization = mem_time / (sum(totals) * result.makespan) if result.makespan else 0.0
    large = [result.waits[j.id] for j in jobs if j.gpus >= 4]
    result.longest_large_wait = max(large) if large else None
    return result


def bounds(jobs: list[Job], totals: list[int]) -> tuple[float, float]:
    """(GPU-time / GPUs, max(memory-time / total memory, longest single job))."""
    t0 = min(job.arrival for job in jobs)
    gpu_time = sum(j.gpus * j.duration for j in jobs) / len(totals)
    mem = sum(j.gpus * j.mib * j.duration for j in jobs) / sum(totals)
    critical = max(j.arrival + j.duration for j in jobs) - t0
    return gpu_time, max(mem, critical)


# -- traces ---------------------------------------------------------------------------------
def sweep_trace(seed: int = 1) -> tuple[str, list[Job], list[int]]:
    """Hyper-parameter sweeps: bursts of 50 small 1-GPU jobs, 8 x 80 GiB."""
    rng = random.Random(seed)
    jobs, t, n = [], 0.0, 0
    for _ in range(40):
        t += rng.expovariate(1 / 900)
        mib = rng.choice([8, 12, 16, 20]) * GiB
        for _ in range(50):
            jobs.append(Job(n, t, 0, 1, mib, rng.uniform(300, 1800)))
            n += 1
    return "sweep of small jobs", jobs, [80 * GiB] * 8


def mixed_trace(seed: int = 2) -> tuple[str, list[Job], list[int]]:
    """A steady mix: 80% 1-GPU jobs (20-40 GiB), 20% 4-GPU jobs (60-75 GiB), 8 x 80 GiB."""
    rng = random.Random(seed)
    jobs, t = [], 0.0
    for n in range(1500):
        t += rng.expovariate(1 / 550)
        if rng.random() < 0.8:
            jobs.append(Job(n, t, 0, 1, rng.randint(20, 40) * GiB, rng.uniform(600, 3600)))
        else:
            jobs.append(Job(n, t, 0, 4, rng.randint(60, 75) * GiB, rng.uniform(1800, 7200)))
    return "mix of 1- and 4-GPU jobs", jobs, [80 * GiB] * 8


def heavy_tail_trace(seed: int = 3, n_jobs: int = 2000, gpus: int = 16,
                     interval: float = 25) -> tuple[str, list[Job], list[int]]:
    """Pareto durations, 1/2/4/8-GPU jobs, four priority levels."""
    rng = random.Random(seed)
    jobs, t = [], 0.0
    for n in range(n_jobs):
        t += rng.expovariate(1 / interval)
        width = rng.choices([1, 2, 4, 8], weights=[60, 20, 15, 5])[0]
        mib = rng.choice([10, 24, 40, 70]) * GiB
        duration = min(60 * 60 * 24, 120 * rng.paretovariate(1.3))
        priority = rng.choices([0, 1, 2, 5], weights=[70, 15, 10, 5])[0]
        jobs.append(Job(n, t, priority, width, mib, duration))
    return "heavy-tailed mix with priorities", jobs, [80 * GiB] * gpus


def flood_trace(seed: int = 5) -> tuple[str, list[Job], list[int]]:
    """A steady flood of whole-card 1-GPU jobs keeps every GPU busy; now and then a 4-GPU
    job arrives. Without a guard it needs four cards to be free at the same moment."""
    rng = random.Random(seed)
    jobs, t, n = [], 0.0, 0
    while t < 48 * 3600:
        t += rng.expovariate(1 / 240)
        jobs.append(Job(n, t, 0, 1, 50 * GiB, rng.uniform(900, 2700)))
        n += 1
        if n % 30 == 0:
            jobs.append(Job(n, t, 0, 4, 70 * GiB, 3600))
            n += 1
    return "flood of 1-GPU jobs with some 4-GPU jobs", jobs, [80 * GiB] * 8


def scale_trace(seed: int = 4) -> tuple[str, list[Job], list[int]]:
    """100,000 tasks on 1,000 GPUs: the heavy-tailed mix, arriving faster."""
    _, jobs, totals = heavy_tail_trace(seed, n_jobs=100_000, gpus=1000, interval=0.3)
    return "100,000 tasks on 1,000 GPUs", jobs, totals


# -- report ---------------------------------------------------------------------------------
def hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.2f}h"


def report(trace: tuple[str, list[Job], list[int]], policies: list[str]) -> None:
    name, jobs, totals = trace
    gpu_bound, mem_bound = bounds(jobs, totals)
    print(f"\n{name}: {len(jobs)} jobs on {len(totals)} GPUs")
    print(f"  {'policy':<10} {'makespan':>9} {'mean wait':>10} {'mem util':>9} "
          f"{'max wait 4+GPU':>15} {'passes':>7} {'wall':>7}")
    for policy in policies:
        r = simulate(jobs, totals, policy)
        print(f"  {policy:<10} {hours(r.makespan):>9} {hours(r.mean_wait):>10} "
              f"{r.utilization:>8.1%} {hours(r.longest_large_wait):>15} {r.passes:>7} "
              f"{r.wall:>6.2f}s")
    print(f"  lower bound: makespan >= {hours(mem_bound)} (GPU-memory-time / total memory, "
          f"or the longest job); GPU-time / GPUs = {hours(gpu_bound)}"
          + (" (not a bound here: small jobs share cards)" if gpu_bound > mem_bound * 1.001
             and any(j.mib * 2 <= totals[0] for j in jobs) else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", action="store_true",
                        help="also run 100,000 tasks on 1,000 GPUs with meow's policy")
    args = parser.parse_args()
    for trace in (sweep_trace(), mixed_trace(), heavy_tail_trace(), flood_trace()):
        report(trace, list(POLICIES))
    if args.scale:
        report(scale_trace(), ["meow"])


if __name__ == "__main__":
    main()
