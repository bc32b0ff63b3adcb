"""`meow list --filter`: a small filter language evaluated here, over listed data.

    status==running            priority>1           name~^sweep-
    status!=done, priority>=2  task.status == "running" and task.priority > 0

Clauses are joined by `,` or `and` (all must hold). Operators: == != > >= < <= and ~
(regular expression search). Numbers compare as numbers. Fields are task attributes as
`meow list --json` shows them; `task.` in front is accepted for Cattino filters. Nothing
is evaluated as code, here or in the daemon.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from meowd.core.errors import BadRequest

_CLAUSE = re.compile(
    r"^\s*(?:task\.)?(?P<field>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>==|!=|>=|<=|>|<|~)\s*"
    r"(?P<value>.*?)\s*$"
)
_SPLIT = re.compile(r"\s*,\s*|\s+and\s+")

Predicate = Callable[[dict[str, Any]], bool]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _clause(text: str) -> Predicate:
    match = _CLAUSE.match(text)
    if match is None:
        raise BadRequest(f"bad filter {text!r}: use FIELD OP VALUE, e.g. status==running "
                         "(OP: == != > >= < <= ~)")
    field, op, raw = match.group("field"), match.group("op"), match.group("value")
    if raw[:1] in ("=", "<", ">", "!", "~"):
        raise BadRequest(f"bad filter {text!r}: {op}{raw} is not an operator")
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        raw = raw[1:-1]
    if op == "~":
        try:
            pattern = re.compile(raw)
        except re.error as exc:
            raise BadRequest(f"bad regular expression {raw!r}: {exc}") from None
        return lambda task: field in task and bool(pattern.search(str(task[field])))

    def test(task: dict[str, Any]) -> bool:
        if field not in task:
            raise BadRequest(f"unknown field {field!r} in filter; fields: "
                             f"{', '.join(sorted(task))}")
        value = task[field]
        left, right = _number(value), _number(raw)
        if left is not None and right is not None:
            a, b = left, right
        else:
            a, b = ("" if value is None else str(value)).lower(), raw.lower()
        if op in ("==", "!="):
            return (a == b) == (op == "==")
        if isinstance(a, str) != isinstance(b, str):
            return False
        return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]  # type: ignore[operator]

    return test


def parse_filter(text: str) -> Predicate:
    clauses = [_clause(part) for part in _SPLIT.split(text.strip()) if part]
    if not clauses:
        raise BadRequest("empty filter")
    return lambda task: all(clause(task) for clause in clauses)
