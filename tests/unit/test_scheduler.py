"""Table-driven tests of the pure placement function and the memory accounting."""

import pytest

from meowd.core.scheduler import Candidate, DeviceView, account, can_ever_fit, place

GiB = 1024


def dev(index, free, total=24 * GiB, tasks=0):
    return DeviceView(index, total, free, tasks)


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
     {2: (0,)}),
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
    ("then the GPU with more free memory",
     [cand(1, 1, 1000)], [dev(0, 10 * GiB), dev(1, 20 * GiB)], 4, {1: (1,)}),
    ("cpu tasks limited by slots",
     [cand(1, 0), cand(2, 0), cand(3, 0)], [], 2, {1: (), 2: ()}),
    ("zero memory still needs a GPU",
     [cand(1, 1, 0)], [], 4, {}),
]


@pytest.mark.parametrize(("candidates", "devices", "slots", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_place(candidates, devices, slots, expected):
    placements = place(candidates, devices, slots)
    assert {p.task_id: p.devices for p in placements} == expected


def test_reservations_follow_ratio():
    (p,) = place([cand(1, 1, 0.25)], [dev(0, 80 * GiB, total=80 * GiB)], 0)
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
