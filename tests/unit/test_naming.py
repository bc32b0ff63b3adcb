"""Fullnames for new tasks under each `override_exist_tasks` policy."""

from __future__ import annotations

import pytest

from meowd.core.errors import Conflict
from meowd.core.naming import assign_fullnames, random_name
from meowd.core.protocol import TaskSpec

EXISTING = {"train", "train_1", "g/abcde"}


def spec(name=None, group=None):
    return TaskSpec("true", name=name, group=group)


def names(specs, policy="forbid", make=None):
    kwargs = {"make_name": make} if make else {}
    return assign_fullnames(specs, EXISTING, policy, lambda n: "id 1, done", **kwargs)


def test_forbid_says_what_is_in_the_way():
    with pytest.raises(Conflict, match=r"a task named 'train' exists \(id 1, done\)"):
        names([spec("train")])


def test_rename_skips_taken_suffixes_and_allow_replaces():
    assert names([spec("train"), spec("train", "g")], "rename") == (["train_2", "g/train"], [])
    assert names([spec("train")], "allow") == (["train"], ["train"])


def test_a_name_twice_in_one_request_is_refused_whatever_the_policy():
    for policy in ("forbid", "rename", "allow"):
        with pytest.raises(Conflict, match="given twice"):
            names([spec("x"), spec("x")], policy)


def test_default_names_avoid_existing_and_explicit_fullnames():
    proposals = iter(["abcde", "fresh", "other"])
    # g/abcde exists, "g/fresh" is given explicitly later in the request
    result, _ = names([spec(group="g"), spec("fresh", "g")], make=lambda: next(proposals))
    assert result == ["g/other", "g/fresh"]


def test_random_names_are_five_characters_and_never_digits_only():
    for _ in range(200):
        name = random_name()
        assert len(name) == 5 and not name.isdigit()
