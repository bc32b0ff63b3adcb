"""Table-driven tests of the pure placement function and the memory accounting."""

import pytest

from meowd.core.scheduler import (
    Candidate,
    DeviceView,
    Hold,
    Policy,
    WaitQueue,
    account,
    can_ever_fit,
    place,
)

GiB = 1024


def dev(index, free, total=24 * GiB, tasks=0, others=0):
    return DeviceView(index, total, free, tasks, others)


def cand(task_id, gpus=1, mem=0, prio=0, created=None):
    return Candidate(task_id, prio, float(task_id if created is None else created), gpus, mem)


CASES = [
    # (description, candidates, devices, cpu slots, expected {task: devices})
    ("one fits", [cand(1, 1, 20000)], [dev(0, 24 * GiB)], 4, {1: (0,)}),
    ("does not fit", [cand(1, 1, 30000)], [dev(0, 24 * GiB)], 4, {}),
    ("two tasks spread over two GPUs",
     [cand(1, 1, 1000), cand(2, 1, 1000)], [dev(0, 24 * GiB), dev(1, 24 * GiB)], 4,
     {1: (0,), 2: (1,)}),
    ("third waits for memory",
     [cand(1, 1, 20000), cand(2, 1, 20000), cand(3, 1, 20000)],
     [dev(0, 24 * GiB), dev(1, 24 * GiB)], 4, {1: (0,), 2: (1,)}),
    ("no head-of-line blocking: big head skipped, small one behind it starts",
     [cand(1, 2, 20000), cand(2, 1, 4000)], [dev(0, 24 * GiB), dev(1, 10 * GiB)], 4,
     {2: (1,)}),
    ("priority before age",
     [cand(1, 1, 20000), cand(2, 1, 20000, prio=5)], [dev(0, 24 * GiB)], 4, {2: (0,)}),
    ("older first at equal priority",
     [cand(2, 1, 20000, created=1.0), cand(1, 1, 20000, created=2.0)], [dev(0, 24 * GiB)], 4,
     {2: (0,)}),
    ("multi-GPU task gets distinct GPUs",
     [cand(1, 2, 20000)], [dev(0, 24 * GiB), dev(1, 24 * GiB), dev(2, 10 * GiB)], 4,
     {1: (0, 1)}),
    ("ratio resolves per device total",
     [cand(1, 1, 0.5)], [dev(0, 30 * GiB, total=80 * GiB), dev(1, 13 * GiB, total=24 * GiB)], 4,
     {1: (1,)}),
    ("prefers the GPU with fewer meow tasks",
     [cand(1, 1, 1000)], [dev(0, 20 * GiB, tasks=1), dev(1, 10 * GiB, tasks=0)], 4, {1: (1,)}),
    ("then the tightest fit, leaving the larger remainder whole",
     [cand(1, 1, 1000)], [dev(0, 20 * GiB), dev(1, 10 * GiB)], 4, {1: (1,)}),
    ("multi-GPU: least fragmented remainder among equally busy GPUs",
     [cand(1, 2, 25 * GiB)],
     [dev(i, f * GiB, total=80 * GiB, tasks=1) for i, f in enumerate([30, 60, 40, 70])], 4,
     {1: (0, 2)}),
    ("idle GPUs before sharing a card, even if the fit is looser",
     [cand(1, 1, 10 * GiB)],
     [dev(0, 12 * GiB, total=80 * GiB, tasks=1), dev(1, 80 * GiB, total=80 * GiB)], 4,
     {1: (1,)}),
    ("equal GPUs: lowest index wins",
     [cand(1, 2, 1000)], [dev(i, 24 * GiB) for i in range(4)], 4, {1: (0, 1)}),
    ("cpu tasks limited by slots",
     [cand(1, 0), cand(2, 0), cand(3, 0)], [], 2, {1: (), 2: ()}),
    ("zero memory still needs a GPU",
     [cand(1, 1, 0)], [], 4, {}),
]


@pytest.mark.parametrize(("candidates", "devices", "slots", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_place(candidates, devices, slots, expected):
    plan = place(candidates, devices, slots, Policy(starvation_guard=False))
    assert {p.task_id: p.devices for p in plan.placements} == expected


def test_reservations_follow_ratio():
    (p,) = place([cand(1, 1, 0.25)], [dev(0, 80 * GiB, total=80 * GiB)], 0).placements
    assert p.reserved_mib == (20 * GiB,)


def test_placement_is_deterministic_and_order_independent():
    cands = [cand(i, 1 + i % 2, 3000 * (i % 5)) for i in range(1, 40)]
    devs = [dev(i, 24 * GiB) for i in range(4)]
    assert place(cands, devs, 3) == place(list(reversed(cands)), devs, 3)


def test_can_ever_fit():
    assert can_ever_fit(2, 20000, [24576, 24576])
    assert not can_ever_fit(3, 20000, [24576, 24576])
    assert not can_ever_fit(1, 30000, [24576])
    assert can_ever_fit(1, 1.0, [24576])
    assert can_ever_fit(0, 10**9, [])


def test_accounting_formula():
    # 24 GiB card: another user holds 4000, task 1 reserved 10000 and uses 6000,
    # task 2 reserved 5000 and uses nothing yet.
    u = account(0, 24576, nvml_used_mib=4000 + 6000, task_usage={1: 6000},
                task_reservations={1: 10000, 2: 5000})
    assert (u.used_by_meow, u.used_by_others, u.reserved) == (6000, 4000, 4000 + 5000)
    # free = NVML free + meow usage - reservations
    assert u.free == (24576 - 10000) + 6000 - 15000


def test_accounting_task_over_its_reservation_never_frees_memory():
    u = account(0, 24576, nvml_used_mib=20000, task_usage={1: 20000},
                task_reservations={1: 10000})
    assert u.free == 4576


def started(plan):
    return {p.task_id: p.devices for p in plan.placements}


# (description, policy, candidates, devices, now, expected placements, expected hold)
GUARD_CASES = [
    ("the blocked 2-GPU task holds the two GPUs closest to free; small tasks backfill "
     "only on the others",
     Policy(), [cand(1, 2, 20 * GiB), cand(2, 1, 6 * GiB), cand(3, 1, 6 * GiB)],
     [dev(0, 10 * GiB, tasks=1), dev(1, 12 * GiB, tasks=1), dev(2, 8 * GiB, tasks=1)], 100.0,
     {2: (2,)}, Hold(1, (0, 1))),
    ("a small task still backfills on a held GPU where it leaves the held task's share",
     Policy(), [cand(1, 2, 20 * GiB), cand(2, 1, 2 * GiB)],
     [dev(0, 23 * GiB, tasks=1), dev(1, 10 * GiB, tasks=1)], 100.0,
     {2: (0,)}, Hold(1, (0, 1))),
    ("without the guard the small tasks overtake it on every GPU",
     Policy(starvation_guard=False), [cand(1, 2, 20 * GiB), cand(2, 1, 6 * GiB),
                                      cand(3, 1, 6 * GiB)],
     [dev(0, 10 * GiB, tasks=1), dev(1, 12 * GiB, tasks=1), dev(2, 8 * GiB, tasks=1)], 100.0,
     {2: (2,), 3: (0,)}, None),
    ("no hold before reserve_after has passed",
     Policy(reserve_after=600), [cand(1, 2, 20 * GiB, created=0), cand(2, 1, 4 * GiB)],
     [dev(0, 10 * GiB, tasks=1), dev(1, 12 * GiB, tasks=1)], 100.0,
     {2: (0,)}, None),
    ("no hold on GPUs whose memory is taken by processes outside meow",
     Policy(), [cand(1, 1, 20 * GiB), cand(2, 1, 4 * GiB)],
     [dev(0, 10 * GiB, others=14 * GiB)], 100.0,
     {2: (0,)}, None),
    ("only one task holds GPUs at a time",
     Policy(), [cand(1, 1, 20 * GiB), cand(2, 1, 20 * GiB, prio=-1), cand(3, 1, 4 * GiB)],
     [dev(0, 10 * GiB, tasks=1), dev(1, 5 * GiB, tasks=1)], 100.0,
     {3: (1,)}, Hold(1, (0,))),
    ("a higher priority task that fits starts before the hold is decided",
     Policy(), [cand(1, 2, 20 * GiB), cand(2, 1, 4 * GiB, prio=9)],
     [dev(0, 10 * GiB, tasks=1), dev(1, 12 * GiB, tasks=1)], 100.0,
     {2: (0,)}, Hold(1, (0, 1))),
    ("Cattino's head-of-line: nothing passes the blocked head",
     Policy(starvation_guard=False, head_of_line=True),
     [cand(1, 2, 20 * GiB), cand(2, 1, 4 * GiB)],
     [dev(0, 10 * GiB, tasks=1), dev(1, 12 * GiB, tasks=1)], 100.0, {}, None),
    ("pack puts the tightest fit before idle GPUs",
     Policy(fit="pack"), [cand(1, 1, 10 * GiB)],
     [dev(0, 12 * GiB, total=80 * GiB, tasks=1), dev(1, 80 * GiB, total=80 * GiB)], 0.0,
     {1: (0,)}, None),
    ("first-fit takes the lowest indices",
     Policy(fit="first"), [cand(1, 1, 1 * GiB)], [dev(0, 2 * GiB, tasks=3), dev(1, 24 * GiB)],
     0.0, {1: (0,)}, None),
]


@pytest.mark.parametrize(("policy", "candidates", "devices", "now", "expected", "hold"),
                         [c[1:] for c in GUARD_CASES], ids=[c[0] for c in GUARD_CASES])
def test_starvation_guard_and_policies(policy, candidates, devices, now, expected, hold):
    plan = place(candidates, devices, 4, policy, now=now)
    assert started(plan) == expected
    assert plan.hold == hold


def test_the_held_task_starts_once_its_gpus_drain():
    queue = WaitQueue([cand(1, 2, 20 * GiB), cand(2, 1, 6 * GiB)])
    busy = [dev(0, 10 * GiB, tasks=1), dev(1, 12 * GiB, tasks=1)]
    plan = place(queue, busy, 4, now=100)
    assert started(plan) == {} and plan.hold == Hold(1, (0, 1))
    drained = [dev(0, 24 * GiB), dev(1, 24 * GiB)]
    plan = place(queue, drained, 4, now=200)
    assert started(plan) == {1: (0, 1)} and plan.hold.task_id == 2


@pytest.mark.parametrize("visible", [frozenset({1, 3}), frozenset({3})])
def test_visible_devices_restrict_placement(visible):
    devices = [dev(i, 24 * GiB) for i in range(4)]
    plan = place([cand(1, 1, 20 * GiB), cand(2, 1, 20 * GiB)], devices, 4, visible=visible)
    used = {i for p in plan.placements for i in p.devices}
    assert used and used <= visible
    assert len(plan.placements) == len(visible)


def test_ratio_request_resolves_per_device_in_a_mixed_box():
    devices = [dev(0, 40 * GiB, total=80 * GiB), dev(1, 20 * GiB, total=24 * GiB)]
    plan = place([cand(1, 2, 0.5)], devices, 4)
    assert plan.placements[0].reserved_mib == (40 * GiB, 12 * GiB)


def test_wait_queue_keeps_queue_order_per_shape():
    queue = WaitQueue()
    for c in [cand(3, 1, 100), cand(1, 1, 100), cand(2, 2, 100), cand(4, 1, 100, prio=5)]:
        queue.add(c)
    assert [c.task_id for c in queue] == [4, 1, 2, 3]
    assert queue.discard(1) and not queue.discard(1)
    queue.add(cand(4, 1, 100, prio=-5))  # re-adding replaces (a priority change)
    assert [c.task_id for c in queue] == [2, 3, 4]
    assert len(queue) == 3 and 2 in queue and 1 not in queue


def test_a_shape_that_failed_once_is_not_scanned_again():
    # 10,000 waiting tasks of one shape that cannot fit: the pass looks at one of them.
    queue = WaitQueue(cand(i, 1, 30 * GiB) for i in range(1, 10_001))
    queue.add(cand(20_000, 1, 1 * GiB))
    plan = place(queue, [dev(0, 24 * GiB)], 4, Policy(starvation_guard=False))
    assert started(plan) == {20_000: (0,)}


def test_one_mib_and_a_whole_gpu_are_different_shapes():
    # 1 == 1.0 in Python; a queue keyed on that would let a failing "whole GPU" request
    # hide a 1 MiB request behind it.
    plan = place([cand(1, 1, 1.0), cand(2, 1, 1)], [dev(0, 10 * GiB)], 0,
                 Policy(starvation_guard=False))
    assert started(plan) == {2: (0,)}


def test_usage_attribution_records_peaks_and_flags_over_use():
    from meowd.core.models import Task
    from meowd.core.usage import attribute, over_memory, record

    owners = {100: 1, 101: 1, 200: 2}
    usage = attribute([(0, [(100, 3000), (101, 1000), (999, 5000)]), (1, [(200, 700)])],
                      owners.get)
    assert usage == {0: {1: 4000}, 1: {2: 700}}  # pid 999 is another user's
    task = Task(1, "t", "t", "c", "/", "h", devices=(0,), reserved_mib=(2000,))
    assert record(task.usage, 500, 1.5, {0: 4000}) is True
    assert record(task.usage, 400, 1.0, {0: 1000}) is False  # below the peaks
    assert (task.usage.gpu_peak_mib, task.usage.rss_peak_mib, task.usage.cpu_seconds) == \
        ({0: 4000}, 500, 1.5)
    assert over_memory(task) is None  # live 1000 of the 2000 asked
    record(task.usage, 400, 2.0, {0: 2500})
    assert over_memory(task) == "uses 2500MiB on GPU 0, over the 2000MiB it asked for"


# -- reservations in time ------------------------------------------------------------------
from meowd.core.scheduler import Reservation, Running, Timeline  # noqa: E402

EASY = Policy(backfill="easy")
CONSERVATIVE = Policy(backfill="conservative", depth=4)
GUARD = Policy(backfill="guard")
BIG = 80 * GiB


def big(index, free, tasks=1):
    return DeviceView(index, BIG, free, tasks)


def est(task_id, gpus, mem, estimate, prio=0):
    """Created long ago (`reserve_after` has passed), older for a lower id."""
    return Candidate(task_id, prio, task_id - 1000.0, gpus, mem, estimate)


def test_candidate_positional_construction_still_works():
    c = Candidate(1, 0, 0.0, 1, 100)
    assert c.estimate_s is None and c.bucket == (1, 100, False, None)


@pytest.mark.parametrize("policy", [EASY, CONSERVATIVE])
def test_reservation_on_the_gpus_that_free_up_first(policy):
    devices = [big(i, 0) for i in range(4)]
    running = [Running((i,), (BIG,), end) for i, end in enumerate([100, 300, 200, 400])]
    plan = place([est(1, 2, BIG, 50)], devices, 0, policy, running=running)
    assert plan.placements == []
    assert plan.reservations == [Reservation(1, (0, 2), 200)]
    assert plan.hold == Hold(1, (0, 2))


# (description, queue after the blocked 2 x 80 GiB task 1, expected starts). GPU 0 is
# idle, GPU 1 runs a task until t=500: task 1 starts at 500 on both.
BACKFILL_CASES = [
    ("a task that ends before the reserved start backfills on a reserved GPU",
     [est(2, 1, 40 * GiB, 400)], {2: (0,)}),
    ("one that would still run then does not", [est(3, 1, 40 * GiB, 600)], {}),
    ("nor one with no estimate", [est(4, 1, 40 * GiB, None)], {}),
    ("a short task behind a long one of its shape still passes",
     [est(5, 1, 40 * GiB, 10_000), est(6, 1, 40 * GiB, 300)], {6: (0,)}),
    ("... also within one estimate bin (256-512 s)",
     [est(7, 1, 40 * GiB, 510), est(8, 1, 40 * GiB, 300)], {8: (0,)}),
    ("two short ones share the idle GPU", [est(9, 1, 40 * GiB, 400), est(10, 1, 40 * GiB, 450)],
     {9: (0,), 10: (0,)}),
]


@pytest.mark.parametrize("policy", [EASY, CONSERVATIVE])
@pytest.mark.parametrize(("queue", "expected"), [c[1:] for c in BACKFILL_CASES],
                         ids=[c[0] for c in BACKFILL_CASES])
def test_backfill_only_where_it_does_not_delay_the_reservation(policy, queue, expected):
    devices = [big(0, BIG, tasks=0), big(1, 0)]
    running = [Running((1,), (BIG,), 500.0)]
    plan = place([est(1, 2, BIG, 1000), *queue], devices, 0, policy, running=running)
    assert started(plan) == expected
    assert plan.reservations[0] == Reservation(1, (0, 1), 500.0)


@pytest.mark.parametrize("policy", [EASY, CONSERVATIVE])
def test_tasks_without_estimates_backfill_where_they_leave_the_reservation_its_memory(policy):
    # Task 1 needs 60 of 80 GiB on both GPUs at t=500: 20 GiB stay usable for good.
    devices = [big(0, BIG, tasks=0), big(1, 0)]
    running = [Running((1,), (BIG,), 500.0)]
    queue = [est(1, 2, 60 * GiB, 1000), est(2, 1, 20 * GiB, None), est(3, 1, 20 * GiB, None)]
    plan = place(queue, devices, 0, policy, running=running)
    assert started(plan) == {2: (0,)}


def test_a_reservation_waiting_on_a_task_with_no_estimate_holds_its_gpus():
    # No known end: the start is unknown, and the task may end any moment, so not even a
    # one-second task may take the memory the reserved task needs.
    devices = [big(0, 10 * GiB)]
    running = [Running((0,), (70 * GiB,), None)]
    queue = [est(1, 1, 70 * GiB, 100), est(2, 1, 10 * GiB, 1), est(3, 1, 5 * GiB, 1)]
    for policy in (EASY, CONSERVATIVE):
        plan = place(queue, devices, 0, policy, now=10.0, running=running)
        assert plan.reservations == [Reservation(1, (0,), None)]
        assert started(plan) == {}


def test_without_runtimes_easy_holds_like_the_guard():
    queue = [cand(1, 2, 20 * GiB), cand(2, 1, 6 * GiB), cand(3, 1, 6 * GiB)]
    devices = [dev(0, 10 * GiB, tasks=1), dev(1, 12 * GiB, tasks=1), dev(2, 8 * GiB, tasks=1)]
    easy = place(queue, devices, 4, EASY, now=100.0)
    guard = place(queue, devices, 4, GUARD, now=100.0)
    assert started(easy) == started(guard) == {2: (2,)}
    assert easy.hold == guard.hold == Hold(1, (0, 1))
    assert guard.reservations == [Reservation(1, (0, 1), None)]


def test_an_overdue_end_counts_as_now():
    devices = [big(0, 0)]
    plan = place([est(1, 1, BIG, 10)], devices, 0, EASY, now=100.0,
                 running=[Running((0,), (BIG,), 50.0)])
    assert plan.reservations == [Reservation(1, (0,), 100.0)]


def test_conservative_protects_every_blocked_task_easy_only_the_first():
    # GPU 0: 40 GiB free, a 40 GiB task ends at 100. GPU 1: the same, ending at 1000.
    devices = [big(0, 40 * GiB), big(1, 40 * GiB)]
    running = [Running((0,), (40 * GiB,), 100.0), Running((1,), (40 * GiB,), 1000.0)]
    queue = [est(1, 1, BIG, 1000), est(2, 1, BIG, 100), est(3, 1, 40 * GiB, 5000)]
    easy = place(queue, devices, 0, EASY, running=running)
    assert easy.reservations == [Reservation(1, (0,), 100.0)]
    assert started(easy) == {3: (1,)}  # it delays task 2, which EASY does not protect
    cons = place(queue, devices, 0, CONSERVATIVE, running=running)
    assert cons.reservations == [Reservation(1, (0,), 100.0), Reservation(2, (1,), 1000.0)]
    assert started(cons) == {}


def test_conservative_depth_limits_the_reservations():
    devices = [big(0, 0)]
    running = [Running((0,), (BIG,), 100.0)]
    queue = [est(i, 1, BIG, 100) for i in range(1, 6)]
    plan = place(queue, devices, 0, Policy(backfill="conservative", depth=3), running=running)
    assert [(r.task_id, r.start) for r in plan.reservations] == [(1, 100), (2, 200), (3, 300)]


def test_no_reservation_without_the_guard_or_before_reserve_after():
    devices = [big(0, 0)]
    running = [Running((0,), (BIG,), 100.0)]
    assert place([est(1, 1, BIG, 1)], devices, 0, Policy(starvation_guard=False),
                 running=running).reservations == []
    young = Candidate(1, 0, 0.0, 1, BIG, 1.0)
    assert place([young], devices, 0, Policy(reserve_after=60), now=30.0,
                 running=running).reservations == []


def test_head_of_line_still_says_when_the_head_starts():
    devices = [big(0, 0), big(1, 40 * GiB)]
    running = [Running((0,), (BIG,), 100.0)]
    plan = place([est(1, 1, BIG, 10), est(2, 1, 10 * GiB, 1)], devices, 0,
                 Policy(head_of_line=True), running=running)
    assert started(plan) == {} and plan.reservations == [Reservation(1, (0,), 100.0)]


def test_running_tasks_on_hidden_gpus_are_ignored():
    devices = [big(0, 0), big(1, 0)]
    running = [Running((0,), (BIG,), 100.0), Running((1,), (BIG,), 50.0)]
    plan = place([est(1, 1, BIG, 10)], devices, 0, EASY, running=running,
                 visible=frozenset({0}))
    assert plan.reservations == [Reservation(1, (0,), 100.0)]


def test_a_timeline_kept_up_to_date_equals_a_fresh_one():
    tasks = {1: Running((0,), (10,), 5.0), 2: Running((0, 1), (20, 20), None),
             3: Running((1,), (30,), 7.0), 4: Running((2,), (5,), 5.0)}
    kept = Timeline()
    for key, task in tasks.items():
        kept.add(key, task)
    kept.add(3, Running((1,), (30,), 70.0))  # an estimate raised
    kept.discard(4)
    kept.discard(99)
    fresh = Timeline({1: tasks[1], 2: tasks[2], 3: Running((1,), (30,), 70.0)})
    assert kept.ends == fresh.ends
    assert {i: ends for i, ends in kept.per_device.items() if ends} == fresh.per_device
    assert kept.unknown == fresh.unknown == {0: 20, 1: 20}
    assert len(kept) == 3


def test_conservative_reserves_for_the_first_blocked_tasks_of_a_shape_only():
    queue = WaitQueue(est(i, 1, BIG, 100) for i in range(1, 10_001))
    queue.add(est(20_000, 1, 10 * GiB, None))
    devices = [big(0, 10 * GiB), big(1, 0)]
    running = [Running((0,), (70 * GiB,), 100.0), Running((1,), (BIG,), 150.0)]
    plan = place(queue, devices, 0, Policy(backfill="conservative", depth=3), running=running)
    assert [(r.task_id, r.devices, r.start) for r in plan.reservations] == \
        [(1, (0,), 100.0), (2, (1,), 150.0), (3, (0,), 200.0)]
    assert started(plan) == {}  # 10 GiB on GPU 0 for good would delay task 3


@pytest.mark.parametrize("policy", [EASY, CONSERVATIVE])
def test_a_zero_estimate_backfills_where_memory_is_free_now(policy):
    # History of runs that ended at once gives a zero estimate. GPU 1 is claimed from now
    # (its task is overdue): a zero-length task there must be judged on the memory free
    # at its start, not crash on an empty time range.
    devices = [big(0, 0), big(1, BIG, tasks=0)]
    running = [Running((0,), (BIG,), 50.0)]
    queue = [est(1, 2, 70 * GiB, 100), est(2, 1, 20 * GiB, 0.0), est(3, 1, 20 * GiB, 0.0)]
    plan = place(queue, devices, 0, policy, now=100.0, running=running)
    assert plan.reservations[0] == Reservation(1, (0, 1), 100.0)
    # 80 GiB free on GPU 1 now, 70 of it claimed from now on: neither fits without
    # taking the reserved task's memory at the instant it may start.
    assert started(plan) == {}
    # With 60 GiB claimed, 20 GiB on GPU 1 stay free for good: there it starts.
    roomy = [est(1, 2, 60 * GiB, 100), est(2, 1, 20 * GiB, 0.0)]
    assert started(place(roomy, devices, 0, policy, now=100.0, running=running)) == {2: (1,)}
