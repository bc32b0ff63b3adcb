"""`meow list`'s bounded view (issue 16): every running task, the next waiting ones, the
latest finished ones and a footer counting the rest; `--all` and `--json` show every
task, and the compact reply says exactly what the per-task maps said."""

from __future__ import annotations

import json

import pytest

from meowcli.render import compact_reply, list_facts, task_maps
from meowd.core.listing import RECENT_FINISHED, RECENT_WAITING, bounded, footer
from meowd.core.protocol import ListRequest, TaskSpec
from tests.conftest import MeowEnv, wait_for

ENV = {"PATH": "/usr/bin:/bin"}
EXTRA_WAITING, EXTRA_FINISHED = 7, 10


def fill(meow_env: MeowEnv) -> None:
    """One running task holding the only GPU, finished tasks, and waiting ones behind."""
    finished = RECENT_FINISHED + EXTRA_FINISHED
    with meow_env.client() as c:
        c.create([TaskSpec("sleep 120", "hold", 0, 1, 20000)], "/", ENV)
        c.create([TaskSpec(f"exit {i % 2}", f"f{i}", min_devices=0) for i in range(finished)],
                 "/", ENV)
        # The last five are younger but of a higher priority: they start first.
        c.create([TaskSpec("true", f"w{i}", 5 if i >= RECENT_WAITING else 0, 1, 20000)
                  for i in range(RECENT_WAITING + EXTRA_WAITING)], "/", ENV)
    wait_for(lambda: sum(t["status"] in ("done", "failed") for t in meow_env.tasks().values())
             == finished and meow_env.status("hold") == "running", 30, "tasks to end")


def ids(table: str) -> list[int]:
    return [int(line.split()[0]) for line in table.splitlines()[1:] if line[:1].isdigit()]


@pytest.mark.fake_gpus("1x24GiB")
def test_bounded_view_all_and_json(meow_env: MeowEnv):
    fill(meow_env)
    tasks = json.loads(meow_env.meow("list", "--json").stdout)
    assert len(tasks) == 1 + RECENT_FINISHED + EXTRA_FINISHED + RECENT_WAITING + EXTRA_WAITING
    by_start = sorted((t for t in tasks if t["status"] == "waiting"),
                      key=lambda t: (-t["priority"], t["created_at"], t["id"]))
    by_end = sorted((t for t in tasks if t["status"] in ("done", "failed")),
                    key=lambda t: (t["ended_at"], t["id"]))
    expected = sorted([meow_env.tasks()["hold"]["id"]]
                      + [t["id"] for t in by_start[:RECENT_WAITING]]
                      + [t["id"] for t in by_end[-RECENT_FINISHED:]])

    table = meow_env.meow("list").stdout
    assert ids(table) == expected
    assert {t["fullname"] for t in by_start[:5]} == {f"w{i}" for i in range(RECENT_WAITING,
                                                                          RECENT_WAITING + 5)}
    assert table.splitlines()[-1] == (
        f"... {EXTRA_WAITING} more waiting and {EXTRA_FINISHED} more finished tasks not "
        "shown: meow list --all shows every task")
    def steady(text: str) -> list[str]:  # the running task's runtime ticks
        return [line for line in text.splitlines() if " running " not in line]

    slow = meow_env.meow("list", env_extra={"MEOW_SLOW_CLI": "1"}).stdout
    assert steady(slow) == steady(table)  # typer's command says the same

    everything = meow_env.meow("list", "--all").stdout
    assert ids(everything) == sorted(t["id"] for t in tasks)
    assert "meow list --all" not in everything
    assert steady(meow_env.meow("list", "--all", env_extra={"MEOW_SLOW_CLI": "1"}).stdout) \
        == steady(everything)

    # A filter or names pick from every task; the table of what they picked is bounded too.
    waiting = meow_env.meow("list", "--filter", "status==waiting").stdout
    assert ids(waiting) == sorted(t["id"] for t in by_start[:RECENT_WAITING])
    assert waiting.splitlines()[-1] == (f"... {EXTRA_WAITING} more waiting tasks not shown: "
                                        "meow list --all shows every task")
    assert len(ids(meow_env.meow("list", "--filter", "status==waiting", "--all").stdout)) == \
        RECENT_WAITING + EXTRA_WAITING
    assert ids(meow_env.meow("list", "hold", "f3").stdout) == sorted(
        t["id"] for t in tasks if t["fullname"] in ("hold", "f3"))
    assert len(json.loads(meow_env.meow("list", "--filter", "status==waiting", "--json")
                          .stdout)) == RECENT_WAITING + EXTRA_WAITING


@pytest.mark.fake_gpus("1x24GiB")
def test_compact_reply_says_what_the_maps_said(meow_env: MeowEnv):
    """Rows and columns are `public` of each task, value for value, secrets masked."""
    fill(meow_env)
    meow_env.meow("create", "echo $TOKEN", "-n", "secret", "-M", "20000", "--secret",
                  "TOKEN=hunter2", "--time-limit", "1h", "--after", "w3")
    with meow_env.client() as c:
        def same() -> bool:
            # Usage samples change running tasks' maps at any time: only a CLI call between
            # two equal listings has one answer to compare with.
            maps = c.call(ListRequest())
            cli = json.loads(meow_env.meow("list", "--json").stdout)
            return (maps == task_maps(c.listing(recent=False)) == c.call(ListRequest())
                    and (maps, cli))
        maps, cli = wait_for(same, 20, "two listings without a change between them")
    assert cli == maps
    secret = next(t for t in maps if t["fullname"] == "secret")
    assert "hunter2" not in json.dumps(maps) and secret["estimate"] and secret["why"]


@pytest.mark.fake_gpus("1x24GiB")
def test_daemon_view_is_the_bounded_rule(meow_env: MeowEnv):
    """meowd picks the next waiting tasks from its wait queue, or, when some wait for a
    predecessor, from every waiting task: either way what `bounded` picks."""
    fill(meow_env)
    with meow_env.client() as c:
        for round_ in range(2):
            view = c.listing(recent=True)
            every = c.list()
            chosen, omitted = bounded(every, list_facts)
            assert [t["id"] for t in task_maps(view)] == [t["id"] for t in chosen]
            assert view["omitted"] == omitted and view["total"] == len(every)
            # A meowd from before columns (still running after an upgrade): a map per
            # task, bounded by the client alike.
            old = compact_reply(c.call(ListRequest()), recent=True)
            assert [t["id"] for t in task_maps(old)] == [t["id"] for t in chosen]
            assert old["omitted"] == omitted
            if round_ == 0:  # blocked tasks, of a higher priority than any ready one
                c.create([TaskSpec("true", f"after{i}", 9, 1, 20000, after=("w1",))
                          for i in range(3)], "/", ENV)


def test_bounded_rule_and_footer():
    facts = {"r": (1, "running", 0, 1.0, None), "old": (2, "done", 0, 2.0, 50.0),
             "new": (3, "failed", 0, 3.0, 60.0), "c": (4, "cancelled", 0, 4.0, None),
             "w1": (5, "waiting", 0, 5.0, None), "w2": (6, "waiting", 3, 6.0, None),
             "w3": (7, "waiting", 0, 7.0, None)}
    shown, omitted = bounded(facts, facts.__getitem__, waiting=2, finished=2)
    assert shown == ["r", "old", "new", "w1", "w2"]  # the cancelled one ended first
    assert omitted == {"waiting": 1, "finished": 1}
    assert bounded(facts, facts.__getitem__)[1] == {"waiting": 0, "finished": 0}
    assert footer({"waiting": 0, "finished": 0}) is None
    assert footer({"waiting": 1234, "finished": 0}) == (
        "... 1,234 more waiting tasks not shown: meow list --all shows every task")
