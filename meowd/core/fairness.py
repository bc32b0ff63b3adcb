"""Fairness between users who wait for the same GPUs: who goes first. Pure.

Each meowd publishes in the machine-wide ledger the task its queue would start next (a
`Demand`). Before a daemon claims memory for one of its own tasks it asks `yields_to`: does
another user come before me under the policy, and would my claim take the memory their
next task needs right now? If so, it waits and that user's daemon claims first.

Policies (`POLICIES`):
- `fcfs` (the default): no yielding; whichever daemon claims first gets the memory, as
  before the ledger existed.
- `round_robin`: users take turns. The user served least recently (the oldest newest
  claim; a user with no live claim counts as never served) goes first; ties go to the
  demand that has waited longest.
- `equal_share`: the user holding the fewest MiB in live claims goes first; ties as in
  round_robin.

Priorities order tasks inside one user's queue; they are not compared across users (a
user can give any task priority 10**9, so comparing them would make the policy a race to
the biggest number). A demand that does not fit even in the memory free now does not stop
anyone (nothing would run meanwhile); the policy only settles who takes memory that
several users' next tasks could use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

POLICIES = ("fcfs", "round_robin", "equal_share")


@dataclass(frozen=True)
class Demand:
    """The next task a queue would start: `devices` GPUs with `mib` MiB free each."""

    devices: int
    mib: int
    since: float
    """When it began waiting (seconds since the epoch)."""
    visible: tuple[int, ...] | None = None
    """The GPUs it may use (None: any)."""


@dataclass(frozen=True)
class UserState:
    """One user as the ledger sees them: their first waiting task and what they hold."""

    uid: int
    demand: Demand | None
    held_mib: int = 0
    """MiB in the user's live claims, on all GPUs."""
    last_grant: float = 0.0
    """When the user's newest live claim was made (0: they hold none)."""


def fits(demand: Demand, free: Mapping[int, int]) -> bool:
    """Whether `demand` fits in `free` (GPU index -> MiB free) now."""
    if demand.devices <= 0:
        return True
    usable = (d for d in free if demand.visible is None or d in demand.visible)
    return sum(1 for d in usable if free[d] >= demand.mib) >= demand.devices


def _key(user: UserState, policy: str) -> tuple[float, ...]:
    since = user.demand.since if user.demand else float("inf")
    if policy == "equal_share":
        return (user.held_mib, user.last_grant, since, user.uid)
    return (user.last_grant, since, user.uid)


def order(users: Sequence[UserState], policy: str) -> list[UserState]:
    """Users with a demand, first in line first. `fcfs` keeps them in demand age order."""
    waiting = [u for u in users if u.demand is not None]
    if policy == "fcfs":
        return sorted(waiting, key=lambda u: (u.demand.since, u.uid))  # type: ignore[union-attr]
    return sorted(waiting, key=lambda u: _key(u, policy))


def yields_to(me: UserState, claim: Mapping[int, int], free: Mapping[int, int],
              others: Sequence[UserState], policy: str) -> UserState | None:
    """The user `me` must let go first, or None to claim now.

    `claim` is what `me` wants (GPU -> MiB), `free` the memory free on each GPU before it
    (everyone's claims counted), `others` the other users. `me` yields to a user ahead of
    it in `order` whose demand fits in `free` now but would no longer fit after the claim.
    """
    if policy == "fcfs":
        return None
    if policy not in POLICIES:
        raise ValueError(f"unknown fairness policy {policy!r} (known: {', '.join(POLICIES)})")
    after = {d: mib - claim.get(d, 0) for d, mib in free.items()}
    mine = me if me.demand is not None else UserState(me.uid, Demand(0, 0, float("inf")),
                                                        me.held_mib, me.last_grant)
    for user in order([*others, mine], policy):
        if user.uid == me.uid:
            return None
        demand = user.demand
        assert demand is not None
        if fits(demand, free) and not fits(demand, after):
            return user
    return None
