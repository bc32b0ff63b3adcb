"""Properties of placement over random inputs (hypothesis), and the simulator's sanity."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from meowd.core.scheduler import (
    BACKFILL_MODES,
    Candidate,
    DeviceTable,
    DeviceView,
    Policy,
    Running,
    Timeline,
    place,
)

TOTAL = 80 * 1024

devices_st = st.lists(
    st.tuples(st.integers(0, TOTAL), st.integers(0, 3), st.integers(0, 20_000)),
    min_size=1, max_size=24,
).map(lambda rows: [DeviceView(i, TOTAL, min(free, TOTAL - others), tasks, others)
                    for i, (free, tasks, others) in enumerate(rows)])

candidates_st = st.lists(
    st.tuples(st.integers(-2, 2), st.integers(0, 4), st.sampled_from([0, 1, 4, 16, 32, 64])),
    max_size=30,
).map(lambda rows: [Candidate(n + 1, prio, float(n), gpus, gib * 1024)
                    for n, (prio, gpus, gib) in enumerate(rows)])


@settings(max_examples=300, deadline=None)
@given(devices_st, candidates_st, st.sampled_from(["spread", "pack", "first"]), st.booleans(),
       st.sampled_from(BACKFILL_MODES))
def test_never_overcommits_and_uses_distinct_gpus(devices, candidates, fit, guard, backfill):
    policy = Policy(starvation_guard=guard, fit=fit, backfill=backfill)
    plan = place(candidates, devices, 2, policy, now=100.0)
    free = {d.index: d.free_mib for d in devices}
    for p in plan.placements:
        c = next(c for c in candidates if c.task_id == p.task_id)
        assert len(set(p.devices)) == len(p.devices) == c.min_devices
        for index, mib in zip(p.devices, p.reserved_mib, strict=True):
            free[index] -= mib
    assert all(f >= 0 for f in free.values())
    if plan.hold is not None:
        assert plan.hold.task_id not in {p.task_id for p in plan.placements}


@settings(max_examples=300, deadline=None)
@given(devices_st, st.integers(1, 4), st.sampled_from([1, 8, 20, 40, 80]),
       st.sampled_from(["spread", "pack"]))
def test_indexed_and_scanning_paths_agree(devices, gpus, gib, fit):
    # A MiB request goes through the table's sorted indexes, the same request written as
    # a ratio of the (uniform) total goes through the linear scan: same choice.
    as_mib = Candidate(1, 0, 0.0, gpus, gib * 1024)
    as_ratio = Candidate(1, 0, 0.0, gpus, gib * 1024 / TOTAL)
    policy = Policy(starvation_guard=False, fit=fit)
    assert place([as_mib], devices, 0, policy) == place([as_ratio], devices, 0, policy)


@settings(max_examples=200, deadline=None)
@given(devices_st, devices_st, candidates_st)
def test_an_updated_table_equals_a_fresh_one(before, after, candidates):
    table = DeviceTable(before[: len(after)] + after[len(before):])
    for view in after:
        table.update(view)
    assert place(candidates, table, 2, now=50.0) == place(candidates, after, 2, now=50.0)


# A box whose memory is all accounted for by running tasks (each on one or two GPUs), with
# known or unknown ends; and queued tasks with or without estimates.
@st.composite
def box_st(draw):
    n = draw(st.integers(1, 8))
    room = [TOTAL - draw(st.sampled_from([0, 0, 0, 8 * 1024])) for _ in range(n)]
    used = [0] * n
    running: dict[int, Running] = {}
    for key in range(draw(st.integers(0, 3 * n))):
        first = draw(st.integers(0, n - 1))
        gpus = (first,) if n == 1 or draw(st.booleans()) else (first, (first + 1) % n)
        mib = draw(st.sampled_from([4, 16, 32, 64])) * 1024
        if all(used[i] + mib <= room[i] for i in gpus):
            for i in gpus:
                used[i] += mib
            end = draw(st.one_of(st.none(), st.floats(0, 5000)))
            running[key] = Running(gpus, (mib,) * len(gpus), end)
    devices = [DeviceView(i, TOTAL, room[i] - used[i], sum(i in r.devices for r in
                                                            running.values()), TOTAL - room[i])
               for i in range(n)]
    queue = [Candidate(n_ + 1, draw(st.integers(0, 1)), float(n_), draw(st.integers(1, 3)),
                       draw(st.sampled_from([4, 16, 32, 64, 80])) * 1024,
                       draw(st.one_of(st.none(), st.floats(1, 5000))))
             for n_ in range(draw(st.integers(1, 12)))]
    return devices, running, queue


@settings(max_examples=400, deadline=None)
@given(box_st(), st.sampled_from(["easy", "conservative"]),
       st.sampled_from(["spread", "pack", "first"]))
def test_backfill_never_delays_the_first_reservation_when_estimates_hold(box, backfill, fit):
    """If every estimate is exact, the first reservation's GPUs have its memory free at
    its expected start, whatever this pass started (tasks with no estimate run for good,
    and so do running tasks with no estimate)."""
    devices, running, queue = box
    now = 100.0
    plan = place(queue, devices, 0, Policy(backfill=backfill, fit=fit), now=now,
                 running=running)
    if not plan.reservations or plan.reservations[0].start is None:
        return
    first = plan.reservations[0]
    reserved = next(c for c in queue if c.task_id == first.task_id)
    start = first.start
    assert start >= now
    free = {d.index: d.free_mib for d in devices}
    for r in running.values():
        if r.ends_at is not None and max(r.ends_at, now) <= start:
            for i, mib in zip(r.devices, r.mib, strict=True):
                free[i] += mib
    for p in plan.placements:
        c = next(c for c in queue if c.task_id == p.task_id)
        if c.estimate_s is None or now + c.estimate_s > start:
            for i, mib in zip(p.devices, p.reserved_mib, strict=True):
                free[i] -= mib
    assert len(first.devices) == reserved.min_devices
    assert all(free[i] >= reserved.memory for i in first.devices)


@settings(max_examples=200, deadline=None)
@given(box_st(), st.sampled_from(BACKFILL_MODES))
def test_a_kept_timeline_places_like_a_list_of_running_tasks(box, backfill):
    devices, running, queue = box
    kept = Timeline()
    for key, task in running.items():
        kept.add(key, Running(task.devices, task.mib, 1.0))
        kept.add(key, task)
    policy = Policy(backfill=backfill)
    assert place(queue, devices, 0, policy, now=100.0, running=kept) == \
        place(queue, devices, 0, policy, now=100.0, running=list(running.values()))


def _simulator():
    path = Path(__file__).parents[2] / "benchmarks" / "simulate.py"
    spec = importlib.util.spec_from_file_location("meow_simulate", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["meow_simulate"] = module
    spec.loader.exec_module(module)
    return module


def test_simulator_reservations_bound_large_waits_in_a_flood():
    sim = _simulator()
    _, jobs, totals = sim.flood_trace()
    knobs = sim.Knobs()
    fifo = sim.simulate(jobs, totals, "fifo", knobs)
    for policy in ("meow", "guard"):
        assert sim.simulate(jobs, totals, policy, knobs).max_wait_big < fifo.max_wait_big / 2
    bound = sim.lower_bound(jobs, totals, knobs)
    for policy in sim.POLICIES:
        result = sim.simulate(jobs, totals, policy, knobs)
        assert result.makespan >= bound * 0.999
        assert len(result.waits) == len(jobs)
