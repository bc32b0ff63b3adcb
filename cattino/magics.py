"""Magic strings: `${var}` and `${resolver:arg1,arg2}`, resolved to a fixed point.

Unknown variables stay as they are, so resolution can happen in stages. Resolution
happens in `meow create` (the user's own process); the daemon never evaluates them.
Built-in variables: task_name, fullname, run_dir; constant fullpath (fullname with
the OS path separator). Built-in resolvers: env (an environment variable), and any
registered with `cattino.register_resolver`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

_MAGIC = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^${}]*))?\}")

_resolvers: dict[str, Callable[..., object]] = {
    "env": lambda name, default="": os.environ.get(name, default),
}


def register_resolver(name: str, func: Callable[..., object]) -> None:
    """`${name:a,b}` then calls func("a", "b") when a task is created."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"invalid resolver name {name!r}")
    _resolvers[name] = func


def resolve(text: str, variables: Mapping[str, str], max_rounds: int = 32) -> str:
    """Substitute known variables and resolvers until nothing changes."""
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
        new = _MAGIC.sub(one, text)
        if new == text:
            return new
        text = new
    return text
