"""Secret environment values: never shown, never logged.

`meow create --secret TOKEN` marks an environment variable secret; the CLI passes the
names in MEOW_SECRET_KEYS. The task still gets the value, but everything meowd writes
or shows (its log, list/show output, reasons, warnings, events) has it replaced by
`***`, including where it ended up inside a command line through ${env:TOKEN}.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

SECRET_KEYS = "MEOW_SECRET_KEYS"
MASK = "***"
MIN_LENGTH = 4
"""Shorter values would mask ordinary text ("1", "yes") everywhere."""


def secret_values(env: Mapping[str, str]) -> set[str]:
    names = [n.strip() for n in env.get(SECRET_KEYS, "").split(",") if n.strip()]
    return {env[n] for n in names if len(env.get(n, "")) >= MIN_LENGTH}


def redact(text: str | None, secrets: Iterable[str]) -> str | None:
    if not text:
        return text
    for value in sorted(secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks every registered secret in every record meowd logs, whatever the path."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            masked = redact(message, self.secrets)
            if masked != message:
                record.msg, record.args = masked, None
        return True


LOG_FILTER = RedactingFilter()
