"""Fairness between users waiting for the same GPUs (meowd/core/fairness.py), table-driven."""

from __future__ import annotations

import pytest

from meowd.core.fairness import Demand, UserState, fits, order, yields_to

ME = 1000
FREE = {0: 16000, 1: 16000}


def user(uid: int, mib: int | None, since: float = 0.0, held: int = 0, granted: float = 0.0,
         devices: int = 1, visible: tuple[int, ...] | None = None) -> UserState:
    demand = None if mib is None else Demand(devices, mib, since, visible)
    return UserState(uid, demand, held, granted)


@pytest.mark.parametrize("demand, free, expected", [
    (Demand(1, 16000, 0), FREE, True),
    (Demand(1, 16001, 0), FREE, False),
    (Demand(2, 16000, 0), FREE, True),
    (Demand(2, 8000, 0), {0: 16000, 1: 7000}, False),
    (Demand(1, 8000, 0, visible=(1,)), {0: 16000, 1: 7000}, False),
    (Demand(0, 0, 0), {}, True),
])
def test_fits(demand: Demand, free: dict[int, int], expected: bool):
    assert fits(demand, free) is expected


@pytest.mark.parametrize("policy, me, others, claim, expected", [
    # fcfs never yields.
    ("fcfs", user(ME, 8000, held=8000, granted=5), [user(2, 12000)], {0: 8000}, None),
    # round_robin: bob holds nothing, so he was served less recently than me: I yield ...
    ("round_robin", user(ME, 8000, held=8000, granted=5), [user(2, 12000)], {0: 8000}, 2),
    # ... unless my claim leaves his next task room ...
    ("round_robin", user(ME, 8000, held=8000, granted=5), [user(2, 12000)], {0: 4000}, None),
    # ... or his task does not fit even now (nothing would run meanwhile) ...
    ("round_robin", user(ME, 8000, held=8000, granted=5), [user(2, 20000)], {0: 8000}, None),
    # ... or I was served longer ago than him.
    ("round_robin", user(ME, 8000, held=8000, granted=5), [user(2, 12000, granted=9)],
     {0: 8000}, None),
    # Equal service: the older demand goes first.
    ("round_robin", user(ME, 8000, since=3), [user(2, 16000, since=4)], {0: 8000}, None),
    ("round_robin", user(ME, 8000, since=5), [user(2, 16000, since=4)], {0: 8000}, 2),
    # equal_share: who holds less goes first, however recently served.
    ("equal_share", user(ME, 8000, held=4000), [user(2, 12000, held=2000, granted=9)],
     {0: 8000}, 2),
    ("equal_share", user(ME, 8000, held=1000), [user(2, 12000, held=2000)], {0: 8000}, None),
    # Users with nothing waiting are nobody to yield to.
    ("equal_share", user(ME, 8000, held=4000), [user(2, None)], {0: 8000}, None),
])
def test_yields_to(policy: str, me: UserState, others: list[UserState], claim: dict[int, int],
                   expected: int | None):
    rival = yields_to(me, claim, {0: 16000}, others, policy)
    assert (rival.uid if rival else None) == expected


def test_a_claim_on_any_gpu_a_multi_gpu_demand_needs_takes_it_away():
    bob = user(2, 9000, devices=2, since=-1)
    assert yields_to(user(ME, 100), {1: 8000}, FREE, [bob], "round_robin") == bob
    assert yields_to(user(ME, 100), {1: 7000}, FREE, [bob], "round_robin") is None
    only_gpu_0 = user(2, 9000, visible=(0,))
    assert yields_to(user(ME, 100), {1: 16000}, FREE, [only_gpu_0], "round_robin") is None


def test_order_takes_turns_between_users():
    users = [user(1, 100, since=1, granted=30), user(2, 100, since=2, granted=10),
             user(3, 100, since=3, granted=20), user(4, None)]
    assert [u.uid for u in order(users, "round_robin")] == [2, 3, 1]
    assert [u.uid for u in order(users, "fcfs")] == [1, 2, 3]


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown fairness policy"):
        yields_to(user(ME, 1), {0: 1}, FREE, [user(2, 1)], "lottery")
