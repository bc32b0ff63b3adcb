"""The files of one attempt beside its logs: the note a task may leave, its stderr's tail
(read for out-of-memory messages), and a marker line in logs that lost output."""

from __future__ import annotations

import os

_TAIL_BYTES = 16384


def read_note(path: str) -> str | None:
    """A task (its hook runner, say) may leave one line for the user: why it failed."""
    try:
        with open(path, errors="replace") as f:
            text = f.read(2000)
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines)[:500] or None


def tail(path: str, size: int = _TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def append_marker(path: str, text: str) -> bool:
    """Append `[meow] text` to a log; False when it still cannot be written."""
    try:
        with open(path, "a") as f:
            f.write(f"\n[meow] {text}\n")
        return True
    except OSError:
        return False
