"""`meow list --filter`: a small filter language evaluated here, over listed data.

    status==running            priority>1           name~^sweep-
    status!=done, priority>=2  task.status == "running" and task.priority > 0
    status==running or status==waiting

Clauses are joined by `,` or `and` (all must hold) and by `or` (either side holds);
`and` binds tighter than `or`, as in Python. Operators: == != > >= < <= and ~ (regular
expression search). Numbers compare as numbers. Fields are task attributes as
`meow list --json` shows them; `task.` in front is accepted for Cattino filters. Quote a
value that contains a comma, `and` or `or`. What cannot be parsed is refused with one
line, never read as a filter that matches nothing. Nothing is evaluated as code, here or
in the daemon.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

from meowd.core.errors import BadRequest

_CLAUSE = re.compile(
    r"^\s*(?:task\.)?(?P<field>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>==|!=|>=|<=|>|<|~)\s*"
    r"(?P<value>.*?)\s*$", re.DOTALL
)
_WORD = re.compile(r"\s+(and|or)\s+", re.IGNORECASE)

STATUSES = ("waiting", "running", "done", "failed", "cancelled", "killed", "lost", "timeout")

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


def _clause(text: str, fields: Collection[str] | None) -> Predicate:
    match = _CLAUSE.match(text)
    if match is None:
        raise BadRequest(f"bad filter {text.strip()!r}: use FIELD OP VALUE, e.g. "
                         "status==running (OP: == != > >= < <= ~), joined by `,`/and/or")
    field, op, raw = match.group("field"), match.group("op"), match.group("value")
    if raw[:1] in ("=", "<", ">", "!", "~"):
        raise BadRequest(f"bad filter {text.strip()!r}: {op}{raw} is not an operator")
    if not raw:
        raise BadRequest(f"bad filter {text.strip()!r}: no value after {op}")
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        raw = raw[1:-1]
    if fields is not None and field not in fields:
        raise BadRequest(f"unknown field {field!r} in filter; fields: {', '.join(sorted(fields))}")
    if field == "status" and op in ("==", "!=") and raw.lower() not in STATUSES:
        raise BadRequest(f"no status {raw!r}; statuses: {', '.join(STATUSES)}")
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


def _tokens(text: str) -> list[str]:
    """Clauses and the joiners `and`/`or` between them (`,` is `and`); quotes protect."""
    tokens: list[str] = []
    current: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "()":
            raise BadRequest(f"bad filter {text!r}: parentheses are not supported (and "
                             "binds tighter than or)")
        elif char == ",":
            tokens += ["".join(current), "and"]
            current = []
            i += 1
            continue
        elif char.isspace():
            match = _WORD.match(text, i)
            if match:
                tokens += ["".join(current), match.group(1).lower()]
                current = []
                i = match.end()
                continue
        current.append(char)
        i += 1
    if quote:
        raise BadRequest(f"bad filter {text!r}: unclosed quote")
    tokens.append("".join(current))
    return tokens


def parse_filter(text: str, fields: Collection[str] | None = None) -> Predicate:
    """A predicate over listed tasks. With `fields` (the attributes tasks have), an
    unknown field is refused at once rather than when a task is tested."""
    tokens = _tokens(text.strip())
    if tokens == [""]:
        raise BadRequest("empty filter")
    alternatives: list[list[Predicate]] = [[]]
    for n, token in enumerate(tokens):
        if n % 2:
            if token == "or":
                alternatives.append([])
            continue
        if not token.strip():
            raise BadRequest(f"bad filter {text!r}: a clause is missing around "
                             f"{'the start' if n == 0 else repr(tokens[n - 1])}")
        alternatives[-1].append(_clause(token, fields))
    return lambda task: any(all(c(task) for c in clauses) for clauses in alternatives)
