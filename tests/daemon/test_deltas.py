"""`meow top`'s subscription sends only what changed: a delta merged into the last state
equals the daemon's whole state."""

from __future__ import annotations

from meowcli.top import merge_state
from meowd.core.protocol import CreateRequest, SubscribeRequest, TaskSpec
from tests.conftest import MeowEnv


def _comparable(state: dict) -> list[tuple]:
    return [(t["id"], t["fullname"], t["status"], t["why"]) for t in state["tasks"]]


def test_deltas_carry_only_changed_tasks_and_merge_to_the_full_state(meow_env: MeowEnv):
    meow_env.meow("set", "cpu_slots", "32")  # every task runs at once
    with meow_env.client() as c:
        c.call(CreateRequest(tuple(TaskSpec("sleep 30", name=f"bg{i}", min_devices=0)
                                   for i in range(20)), "/tmp", {}))
    sub = meow_env.client()
    sub.timeout = 20  # a missing push fails the test instead of hanging it
    sub.send(SubscribeRequest(max_rate=100, deltas=True))
    state = sub.receive()
    assert "since" not in state and len(state["tasks"]) == 20
    with meow_env.client() as c:
        c.call(CreateRequest((TaskSpec("true", name="new", min_devices=0),), "/tmp", {}))
    seen_new = False
    while not seen_new or any(t["fullname"] == "new" and t["status"] != "done"
                              for t in state["tasks"]):
        pushed = sub.receive()
        assert "since" in pushed  # a delta, never the whole state again
        # the new task, and running tasks whose sampled usage moved: never all of them
        assert len(pushed["tasks"]) < len(state["tasks"])
        state = merge_state(state, pushed)
        seen_new = seen_new or any(t["fullname"] == "new" for t in pushed["tasks"])
    meow_env.meow("remove", "bg3")
    while any(t["fullname"] == "bg3" for t in state["tasks"]):
        pushed = sub.receive()
        state = merge_state(state, pushed)
    with meow_env.client() as c:
        assert _comparable(state) == _comparable(_fresh(c))
    sub.close()
    meow_env.kill_leftovers()


def _fresh(c) -> dict:
    c.send(SubscribeRequest())
    return c.receive()


def test_a_subscriber_without_deltas_gets_whole_states(meow_env: MeowEnv):
    sub = meow_env.client()
    sub.send(SubscribeRequest(max_rate=100))
    assert "since" not in sub.receive()
    meow_env.meow("create", "true", "-n", "x", "-c", "0")
    assert "since" not in sub.receive()
    sub.close()
