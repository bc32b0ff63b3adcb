"""Properties of placement over random inputs (hypothesis), and the simulator's sanity."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from meowd.core.scheduler import Candidate, DeviceTable, DeviceView, Policy, place

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
@given(devices_st, candidates_st, st.sampled_from(["spread", "pack", "first"]), st.booleans())
def test_never_overcommits_and_uses_distinct_gpus(devices, candidates, fit, guard):
    plan = place(candidates, devices, 2, Policy(starvation_guard=guard, fit=fit), now=100.0)
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


def _simulator():
    path = Path(__file__).parents[2] / "benchmarks" / "simulate.py"
    spec = importlib.util.spec_from_file_location("meow_simulate", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["meow_simulate"] = module
    spec.loader.exec_module(module)
    return module


def test_simulator_guard_bounds_large_waits_in_a_flood():
    sim = _simulator()
    _, jobs, totals = sim.flood_trace()
    meow, fifo = sim.simulate(jobs, totals, "meow"), sim.simulate(jobs, totals, "fifo")
    assert meow.longest_large_wait < fifo.longest_large_wait
    _, memory_bound = sim.bounds(jobs, totals)
    for result in (meow, fifo, sim.simulate(jobs, totals, "cattino")):
        assert result.makespan >= memory_bound * 0.999
        assert len(result.waits) == len(jobs)
