"""Runtime-aware backfill through the real daemon: a blocked 2-GPU task gets a reservation
in time; 1-GPU tasks that end before it backfill, one with a long limit does not."""

from __future__ import annotations

from tests.conftest import MeowEnv, wait_for


def test_short_tasks_backfill_around_a_reservation_and_long_ones_wait(meow_env: MeowEnv):
    m = meow_env.meow
    m("create", "sleep 2", "-n", "first", "-M", "20000", "--time-limit", "3s")
    meow_env.wait_status("first", "running")
    m("create", "sleep 1", "-n", "big", "-c", "2", "-M", "20000", "--time-limit", "1m")
    why = wait_for(lambda: meow_env.tasks()["big"]["why"], what="big's reservation")
    assert why.startswith("starts by ~") and "on GPUs 0,1" in why
    m("create", "sleep 0.3", "-n", "short", "-M", "20000", "--time-limit", "1s")
    m("create", "sleep 0.3", "-n", "long", "-M", "20000", "--time-limit", "1h")
    tasks = {n: meow_env.wait_status(n, "done", timeout=60)
             for n in ("first", "short", "big", "long")}
    assert tasks["short"]["started_at"] < tasks["big"]["started_at"]  # backfilled
    assert tasks["long"]["started_at"] >= tasks["big"]["ended_at"]  # would have delayed big
    # big started as soon as first's GPU was free, not after the long task
    assert tasks["big"]["started_at"] - tasks["first"]["ended_at"] < 2
    assert meow_env.tasks()["long"]["time_limit"] == 3600
