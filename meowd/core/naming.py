"""Fullnames for new tasks: defaults, groups, and `override_exist_tasks`. Pure."""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Container, Sequence

from meowd.core.errors import Conflict
from meowd.core.protocol import TaskSpec

_CHARS = string.ascii_lowercase + string.digits
_NAMES = random.Random()  # default names need no secrecy; `secrets` cost 40 us a name


def random_name() -> str:
    """Cattino's default: 5 letters and digits (never all digits: that reads as an id)."""
    while True:
        name = "".join(_NAMES.choices(_CHARS, k=5))
        if not name.isdigit():
            return name


def assign_fullnames(
    specs: Sequence[TaskSpec],
    existing: Container[str],
    policy: str,
    describe: Callable[[str], str],
    make_name: Callable[[], str] = random_name,
) -> tuple[list[str], list[str]]:
    """Each spec's fullname, and the existing fullnames that `allow` replaces.

    forbid: an existing fullname is a Conflict; rename: `name_1`, `name_2`...;
    allow: the existing task is replaced. A name given twice in one request is always
    a Conflict. `describe(fullname)` says what the existing task is, for the message.
    """
    explicit = {(s.group + "/" if s.group else "") + s.name for s in specs if s.name}
    taken: set[str] = set()
    names: list[str] = []
    replaced: list[str] = []
    for spec in specs:
        prefix = spec.group + "/" if spec.group else ""
        if spec.name is None:
            name = prefix + make_name()
            while name in existing or name in explicit or name in taken:
                name = prefix + make_name()
        else:
            name = prefix + spec.name
            if name in taken:
                raise Conflict(f"the name {name!r} is given twice in this request")
            if name in existing:
                if policy == "rename":
                    n = 1
                    while f"{name}_{n}" in existing or f"{name}_{n}" in taken:
                        n += 1
                    name = f"{name}_{n}"
                elif policy == "allow":
                    replaced.append(name)
                else:
                    raise Conflict(
                        f"a task named {name!r} exists ({describe(name)}); remove it, choose "
                        "another name with -n, or `meow set override_exist_tasks rename`"
                    )
        taken.add(name)
        names.append(name)
    return names, replaced
