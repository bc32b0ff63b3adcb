"""The simulator's interface (CSV in, JSON out), its lower bound and its estimate knobs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "benchmarks" / "simulate.py"
GiB = 1024


def _simulator():
    spec = importlib.util.spec_from_file_location("meow_simulate_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["meow_simulate_cli"] = module
    spec.loader.exec_module(module)
    return module


sim = _simulator()

TINY = """submit_s,gpus,mem_mib,runtime_s,time_limit_s,priority,name
0,2,81920,3600,,0,big_1
10,1,40960,600,1800,0,small_1
20,1,40960,1200,,1,small_2
30,2,81920,1800,5400,0,big_2
40,1,20480,300,,0,tiny_1
"""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_a_csv_trace_in_json_out(tmp_path: Path):
    trace = tmp_path / "t.csv"
    trace.write_text(TINY)
    done = run_cli("--trace", str(trace), "--gpus", "2x80GiB", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) == {"lower_bound_h", "policies", "mean_wait_bound_h"}
    assert {"meow", "fifo", "guard", "cattino"} <= set(out["policies"])
    for result in out["policies"].values():
        assert set(result) == {"makespan_h", "mean_wait_h", "max_wait_h", "max_wait_big_h",
                               "gpu_util"}
        assert result["makespan_h"] >= out["lower_bound_h"] - 1e-9
        assert 0 < result["gpu_util"] <= 1
        assert result["max_wait_big_h"] <= result["max_wait_h"]
    # Whole cards count whole, half cards half, the 20 GiB job a quarter: on 2 GPUs,
    # (2 x 3600 + 600 / 2 + 1200 / 2 + 2 x 1800 + 300 / 4) / 2 seconds.
    assert out["lower_bound_h"] == pytest.approx(5887.5 / 3600)


def test_the_text_report_and_bad_input(tmp_path: Path):
    trace = tmp_path / "t.csv"
    trace.write_text(TINY)
    done = run_cli("--trace", str(trace), "--gpus", "2x80GiB", "--policies", "meow,fifo")
    assert done.returncode == 0, done.stderr
    assert "lower bound" in done.stdout and "meow" in done.stdout and "guard" not in done.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("submit_s,gpus\n0,1\n")
    done = run_cli("--trace", str(bad), "--gpus", "2x80GiB", "--json")
    assert done.returncode != 0 and "missing columns" in done.stderr
    done = run_cli("--trace", str(trace), "--gpus", "1x80GiB", "--json")
    assert done.returncode != 0 and "more than --gpus offers" in done.stderr


def test_a_job_stops_at_its_time_limit():
    jobs = [sim.Job(0, 0.0, 0, 1, 10 * GiB, 5000.0, time_limit=1000.0)]
    result = sim.simulate(jobs, [80 * GiB], "meow")
    assert result.makespan == 1000.0
    assert sim.lower_bound(jobs, [80 * GiB]) == 1000.0


def test_the_lower_bound_counts_cards_that_cannot_be_shared():
    # Two 50 GiB jobs cannot share an 80 GiB card: one card needs 2 h, not the memory
    # bound's 1.25 h. Four 20 GiB jobs share it: 1 h of memory-time... and 1 h each.
    whole = [sim.Job(n, 0.0, 0, 1, 50 * GiB, 3600.0) for n in range(2)]
    assert sim.lower_bound(whole, [80 * GiB]) == pytest.approx(7200.0)
    shared = [sim.Job(n, 0.0, 0, 1, 20 * GiB, 3600.0) for n in range(4)]
    assert sim.lower_bound(shared, [80 * GiB]) == pytest.approx(3600.0)
    for jobs in (whole, shared):
        for policy in sim.POLICIES:
            assert sim.simulate(jobs, [80 * GiB], policy).makespan >= \
                sim.lower_bound(jobs, [80 * GiB]) - 1e-6


def test_later_arrivals_raise_the_bound():
    jobs = [sim.Job(0, 0.0, 0, 1, 80 * GiB, 100.0), sim.Job(1, 5000.0, 0, 1, 80 * GiB, 100.0)]
    assert sim.lower_bound(jobs, [80 * GiB]) == pytest.approx(5100.0)


def test_estimates_are_seeded_and_follow_the_knobs():
    _, jobs, _ = sim.mixed_trace()
    a = sim.make_estimates(jobs, sim.Knobs(seed=3))
    assert a == sim.make_estimates(jobs, sim.Knobs(seed=3))
    assert a != sim.make_estimates(jobs, sim.Knobs(seed=4))
    missing = sum(e is None for e in a.values()) / len(a)
    assert 0.15 < missing < 0.25  # --no-estimate 0.2
    for job in jobs:
        e = a[job.id]
        if e is not None:
            assert job.duration / 2 <= e.seconds <= job.duration * 2  # --error 2
    exact = sim.make_estimates(jobs, sim.Knobs(error=1.0, no_estimate=0.0))
    assert all(exact[j.id].seconds == pytest.approx(j.duration) for j in jobs)
    limited = sim.make_estimates(sim.with_limits(jobs, sim.Knobs(limits=3.0)),
                                 sim.Knobs(limits=3.0))
    assert all(limited[j.id] == sim.estimates.from_limit(3 * j.duration) for j in jobs)


def test_every_policy_runs_every_job_and_respects_the_bound():
    _, jobs, totals = sim.flood_trace()
    jobs = jobs[:150]
    bound = sim.lower_bound(jobs, totals)
    for knobs in (sim.Knobs(), sim.Knobs(limits=3.0)):
        for policy in sim.POLICIES:
            result = sim.simulate(jobs, totals, policy, knobs)
            assert len(result.waits) == len(jobs)
            assert result.makespan >= bound - 1e-6


# -- the mean-wait bound: what bounding the widest jobs' waits costs the others ------------
def test_wait_bound_by_hand():
    """A 2-GPU job that may not wait holds both cards for 1000 s: the 1-GPU job that
    arrived with it waits 1000 s, a mean of 500 s over the two."""
    jobs = [sim.Job(0, 0.0, 0, 2, 80 * GiB, 1000.0), sim.Job(1, 0.0, 0, 1, 80 * GiB, 100.0)]
    for in_order in (False, True):
        assert sim.wait_bound(jobs, [80 * GiB] * 2, 0.0, in_order=in_order,
                              step=10.0) == pytest.approx(500.0)
    # Allowed to wait 1000 s, the big job can go second: no bound.
    assert sim.wait_bound(jobs, [80 * GiB] * 2, 1000.0, step=10.0) == 0.0


def test_wait_bound_counts_no_capacity_from_before_the_work_arrived():
    """Idle cards before anyone arrived run nothing: all three arrive at 1000 s, the big
    one may not wait and runs 500 s, so both 1-GPU jobs wait 500 s (a mean of 333 s)."""
    jobs = [sim.Job(0, 1000.0, 0, 2, 80 * GiB, 500.0),
            sim.Job(1, 1000.0, 0, 1, 80 * GiB, 100.0), sim.Job(2, 1000.0, 0, 1, 80 * GiB, 100.0)]
    assert sim.wait_bound(jobs, [80 * GiB] * 2, 0.0, step=10.0) == pytest.approx(1000 / 3)


@pytest.mark.parametrize("policy", ["meow", "conservative", "guard", "cattino", "fifo"])
@pytest.mark.parametrize("limits", [None, 3.0])
def test_wait_bound_holds_for_every_policy(policy: str, limits: float | None):
    """No schedule beats the bound at its own widest-job wait; schedules that start the
    1-GPU jobs in arrival order (all but meow's backfill by estimate) not the in-order one."""
    _, jobs, totals = sim.flood_trace()
    knobs = sim.Knobs(limits=limits)
    result = sim.simulate(jobs, totals, policy, knobs)
    bound = sim.wait_bound(jobs, totals, result.max_wait_big, knobs)
    assert 0 <= bound <= result.mean_wait
    if policy in ("guard", "cattino", "fifo"):
        in_order = sim.wait_bound(jobs, totals, result.max_wait_big, knobs, in_order=True)
        assert bound <= in_order <= result.mean_wait


def test_wait_bound_falls_as_big_jobs_may_wait_longer():
    _, jobs, totals = sim.flood_trace()
    bounds = [sim.wait_bound(jobs, totals, h * 3600.0, in_order=True) for h in (0, 4, 11, 40)]
    assert bounds == sorted(bounds, reverse=True) and bounds[0] > bounds[-1]


def test_wait_bound_below_every_policy_on_random_traces():
    """The bound's argument checked against real schedules on small random traces with
    shared cards, several widths and bursts: never above what a policy achieved at its
    own widest-job wait."""
    import random

    rng = random.Random(7)
    checked = 0
    for _ in range(25):
        gpus = rng.choice([2, 3, 4])
        jobs, t = [], 0.0
        for n in range(rng.randint(6, 16)):
            t += rng.choice([0.0, rng.uniform(0, 900)])
            jobs.append(sim.Job(n, t, rng.choice([0, 0, 1]), rng.randint(1, gpus),
                                rng.choice([10, 30, 50, 70, 80]) * GiB, rng.uniform(100, 5000)))
        totals = [80 * GiB] * gpus
        for policy in sim.POLICIES:
            result = sim.simulate(jobs, totals, policy)
            bound = sim.wait_bound(jobs, totals, result.max_wait_big)
            assert bound <= result.mean_wait + 1e-6, (policy, jobs)
            checked += bound > 0
    assert checked  # some bounds say something


def test_flood_mean_wait_target_cannot_be_met_with_guards_big_wait():
    """The flood trace: no schedule whose 4-GPU jobs wait at most guard's longest has a
    mean wait within 1.1x of fifo's (which lets them starve)."""
    _, jobs, totals = sim.flood_trace()
    fifo = sim.simulate(jobs, totals, "fifo")
    guard = sim.simulate(jobs, totals, "guard")
    assert sim.wait_bound(jobs, totals, guard.max_wait_big) > 1.1 * fifo.mean_wait
