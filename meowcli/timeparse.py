"""Dates for `meow clean --before/--after`: partial dates fill to the latest moment of
the period they name (as Cattino does): `2026-11` means the end of November 2026."""

from __future__ import annotations

import calendar
import datetime as dt

from meowd.core.errors import BadRequest

_FORMATS = [
    ("%Y-%m-%d %H:%M:%S", "second"), ("%Y-%m-%dT%H:%M:%S", "second"),
    ("%Y-%m-%d %H:%M", "minute"), ("%Y-%m-%dT%H:%M", "minute"),
    ("%Y-%m-%d %H", "hour"), ("%Y-%m-%d", "day"), ("%Y-%m", "month"), ("%Y", "year"),
]


def parse_when(text: str) -> float:
    """Local time -> epoch seconds, at the last instant of the period given."""
    for fmt, unit in _FORMATS:
        try:
            t = dt.datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
        if unit == "year":
            t = t.replace(month=12, day=31, hour=23, minute=59, second=59)
        elif unit == "month":
            last = calendar.monthrange(t.year, t.month)[1]
            t = t.replace(day=last, hour=23, minute=59, second=59)
        elif unit == "day":
            t = t.replace(hour=23, minute=59, second=59)
        elif unit == "hour":
            t = t.replace(minute=59, second=59)
        elif unit == "minute":
            t = t.replace(second=59)
        return t.timestamp() + 0.999999
    raise BadRequest(f"bad date {text!r}: use YYYY[-MM[-DD[ HH[:MM[:SS]]]]]")
