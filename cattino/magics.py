"""Magic strings: `${var}` and `${resolver:arg1,arg2}`, resolved to a fixed point.

Unknown variables stay as they are, so resolution can happen in stages. Resolution
happens in `meow create` (the user's own process); the daemon never evaluates them.
Built-in variables: task_name, fullname, run_dir; constant fullpath (fullname with
the OS path separator). Built-in resolvers: env (an environment variable), and any
registered with `cattino.register_resolver`.

A secret (`meow create --secret NAME`) is never expanded: `${env:NAME}` would write it
into the task's command line, which every user on the machine reads in `ps`. The task
has NAME in its environment; it reads it there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping

from meowd.core.errors import BadRequest

_MAGIC = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^${}]*))?\}")

_resolvers: dict[str, Callable[..., object]] = {
    "env": lambda name, default="": os.environ.get(name, default),
}


def register_resolver(name: str, func: Callable[..., object]) -> None:
    """`${name:a,b}` then calls func("a", "b") when a task is created."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"invalid resolver name {name!r}")
    _resolvers[name] = func


class SecretInCommand(BadRequest):
    """`${env:NAME}` names a secret: expanding it would show it to every user in `ps`."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"${{env:{name}}} would write secret {name} into the command line, which every "
            f"user on this machine can read (ps); the task has {name} in its environment: "
            "read it there instead")
        self.name = name


def secret_expansions(text: str, secret_names: Iterable[str]) -> list[str]:
    """The secrets that `${env:NAME}` in `text` names, in order (pure; no resolution)."""
    secrets = {n.strip() for n in secret_names} - {""}
    found = (m.group(2).split(",")[0].strip() for m in _MAGIC.finditer(text)
             if m.group(1) == "env" and m.group(2) is not None)
    return list(dict.fromkeys(name for name in found if name in secrets))


def resolve(text: str, variables: Mapping[str, str], max_rounds: int = 32,
            secret_names: Iterable[str] = ()) -> str:
    """Substitute known variables and resolvers until nothing changes. `${env:NAME}` for
    a name in `secret_names` raises SecretInCommand, in whichever round it appears."""
    secrets = [n for n in secret_names if n]
    values = dict(variables)
    if "fullname" in values and "fullpath" not in values:
        values["fullpath"] = values["fullname"].replace("/", os.sep)

    def one(match: re.Match[str]) -> str:
        name, args = match.group(1), match.group(2)
        if args is None:
            return values.get(name, match.group(0))
        func = _resolvers.get(name)
        if func is None:
            return match.group(0)
        parts = [a.strip() for a in args.split(",")] if args else []
        return str(func(*parts))

    for _ in range(max_rounds):
        for name in secret_expansions(text, secrets):
            raise SecretInCommand(name)
        new = _MAGIC.sub(one, text)
        if new == text:
            return new
        text = new
    return text
