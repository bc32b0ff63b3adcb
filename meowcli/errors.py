"""How `meow` fails: one line on stderr, `meow: error: ...`, and an exit status from
one table (the README's "Exit codes" repeats it).

    0    it worked
    1    it did not: refused, not found, a conflict, nothing changed (bulk commands),
         `meow test`: no; meowd could not be started or reached
    2    usage: a bad command line, option or value (checked by meow or by meowd)
    130  interrupted (Ctrl-C)

`meow watch NAME` instead exits with the task's own exit code (1 when it ended without
one: cancelled, lost, never started), so `meow watch x && next` works.
"""

from __future__ import annotations

import sys

from meowd.core.errors import BadRequest, MeowError

OK = 0
FAILED = 1
USAGE = 2
INTERRUPTED = 130


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, BadRequest):
        return USAGE
    return FAILED


def report(exc: BaseException) -> int:
    """Print one line for `exc` and return the exit status it means."""
    if isinstance(exc, MeowError):
        print(f"meow: error: {exc.message}", file=sys.stderr)
    elif not isinstance(exc, KeyboardInterrupt):
        print(f"meow: error: {exc}", file=sys.stderr)
    return exit_code(exc)


def warn(message: str) -> None:
    print(f"meow: warning: {message}", file=sys.stderr)
