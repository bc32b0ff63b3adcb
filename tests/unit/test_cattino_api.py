"""The authoring API and the CLI-side expansion, without a daemon."""

from __future__ import annotations

import datetime as dt

import pytest

from cattino.magics import register_resolver, resolve
from cattino.tasks import DeviceRequiredTask, ProcTask, TaskGraph, TaskGroup
from meowcli.expand import multirun, split_params
from meowcli.filters import parse_filter
from meowcli.timeparse import parse_when
from meowd.core.errors import BadRequest


def test_group_fullnames_and_edges():
    a, b, c = (ProcTask("true", task_name=n) for n in "abc")
    inner = TaskGroup([b, c], "sequential", "inner")
    outer = TaskGroup([a, inner], "sequential", "outer")
    assert [t.fullname for t in outer.all_tasks] == ["outer/a", "outer/inner/b", "outer/inner/c"]
    # a -> (every leaf of inner), and inner's own b -> c
    assert {(u.name, v.name) for u, v in outer.edges()} == {("a", "b"), ("a", "c"), ("b", "c")}


def test_default_names_and_from_name_task_pairs():
    t = ProcTask("true")
    assert len(t.name) == 5 and TaskGroup([t]).name == f"group_of_{t.name}"
    x, y = ProcTask("true", task_name="x"), ProcTask("true", task_name="y")
    group = TaskGroup.from_name_task_pairs([("g1/g2", x), ("g1", y)], group_name="top")
    assert sorted(t.fullname for t in group.all_tasks) == ["top/g1/g2/x", "top/g1/y"]


@pytest.mark.parametrize(("build", "message"), [
    (lambda: ProcTask("true", task_name="a/b"), "valid file name"),
    (lambda: ProcTask("true", task_name="backend"), "reserved"),
    (lambda: ProcTask(42), "command string or a callable"),
    (lambda: DeviceRequiredTask(requires_memory_per_device=1.5), "(0, 1]"),
    (lambda: DeviceRequiredTask(min_devices=-1), "min_devices"),
    (lambda: TaskGroup([ProcTask("true", task_name="d"), ProcTask("true", task_name="d")]),
     "duplicate task fullname"),
    (lambda: TaskGroup([], "parallel", "empty"), "at least one task"),
    (lambda: TaskGroup([ProcTask("true")], "random"), "execute_strategy"),
])
def test_bad_tasks_are_refused_with_a_clear_error(build, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        build()


def test_a_graph_cycle_names_its_path():
    a, b, c = (ProcTask("true", task_name=n) for n in "abc")
    g = TaskGraph()
    g.add_edges_from([(a, b), (b, c), (c, b)])
    with pytest.raises(ValueError, match="cycle in group 'g': b -> c -> b"):
        TaskGroup(a, g, "g")


def test_magic_strings_resolve_to_a_fixed_point():
    register_resolver("twice", lambda x: x * 2)
    values = {"task_name": "t", "fullname": "g/t", "outer": "${task_name}"}
    assert resolve("${outer}-${fullpath}-${twice:ab}-${nope}-${nope:x}", values) \
        == "t-g/t-abab-${nope}-${nope:x}"


@pytest.mark.parametrize(("args", "expected"), [
    (["a", "b"], [["a", "b"]]),
    (["[1,2]"], [["1"], ["2"]]),
    (["--lr=[0.1,0.2]", "x", "[a,b]"],
     [["--lr=0.1", "x", "a"], ["--lr=0.1", "x", "b"], ["--lr=0.2", "x", "a"],
      ["--lr=0.2", "x", "b"]]),
    (["k=[[1,2],'c,d']"], [["k=[1,2]"], ["k='c,d'"]]),
])
def test_multirun(args, expected):
    assert multirun(args) == expected


def test_split_params_refuses_unbalanced_input():
    with pytest.raises(BadRequest, match="unbalanced"):
        split_params("a,[b")


TASKS = [
    {"fullname": "sweep-1", "status": "running", "priority": 2, "exit_code": None},
    {"fullname": "sweep-2", "status": "failed", "priority": 0, "exit_code": 3},
    {"fullname": "eval", "status": "done", "priority": 1, "exit_code": 0},
]


@pytest.mark.parametrize(("expr", "names"), [
    ("status==running", ["sweep-1"]),
    ("status!=done, priority>=1", ["sweep-1"]),
    ("name~^sweep and exit_code==3".replace("name", "fullname"), ["sweep-2"]),
    ("task.priority < 2", ["sweep-2", "eval"]),
    ('task.status == "Done"', ["eval"]),
])
def test_filters(expr, names):
    keep = parse_filter(expr)
    assert [t["fullname"] for t in TASKS if keep(t)] == names


@pytest.mark.parametrize("expr", ["status=", "priority >> 1", ""])
def test_bad_filters(expr):
    with pytest.raises(BadRequest):
        parse_filter(expr)


def test_unknown_filter_field_says_which_exist():
    with pytest.raises(BadRequest, match="unknown field 'colour'"):
        parse_filter("colour==red")(TASKS[0])


def test_partial_dates_mean_the_end_of_their_period():
    end_of_nov = dt.datetime(2026, 11, 30, 23, 59, 59).timestamp()
    assert end_of_nov < parse_when("2026-11") < end_of_nov + 1
    assert parse_when("2026-11-24 10") == pytest.approx(
        dt.datetime(2026, 11, 24, 10, 59, 59).timestamp() + 0.999999)
    with pytest.raises(BadRequest, match="bad time"):
        parse_when("someday")
