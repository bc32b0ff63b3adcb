"""Times for `meow clean --before/--after`.

Dates: partial dates fill to the latest moment of the period they name (as Cattino
does): `2026-11` means the end of November 2026. Relative times: `7d`, `12h`, `30m`,
`2w`, `90s` (also `7d ago`, `7 days`) count back from now; `now`, `today` (its end) and
`yesterday` (its end, which is the start of today).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import time

from meowd.core.errors import BadRequest

_FORMATS = [
    ("%Y-%m-%d %H:%M:%S", "second"), ("%Y-%m-%dT%H:%M:%S", "second"),
    ("%Y-%m-%d %H:%M", "minute"), ("%Y-%m-%dT%H:%M", "minute"),
    ("%Y-%m-%d %H", "hour"), ("%Y-%m-%d", "day"), ("%Y-%m", "month"), ("%Y", "year"),
]

_RELATIVE = re.compile(
    r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|"
    r"d|days?|w|weeks?)(?:\s+ago)?$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _end_of(t: dt.datetime, unit: str) -> float:
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


def parse_when(text: str, now: float | None = None) -> float:
    """Local time -> epoch seconds: a date at the last instant of the period given, or a
    time relative to `now`."""
    now = time.time() if now is None else now
    word = text.strip().lower()
    today = dt.datetime.fromtimestamp(now)
    if word == "now":
        return now
    if word == "today":
        return _end_of(today, "day")
    if word == "yesterday":
        return _end_of(today - dt.timedelta(days=1), "day")
    match = _RELATIVE.match(word)
    if match:
        unit = match.group("unit")
        seconds = _SECONDS["m" if unit.startswith("mi") or unit == "m" else unit[0]]
        return now - float(match.group("n")) * seconds
    for fmt, unit in _FORMATS:
        try:
            t = dt.datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
        return _end_of(t, unit)
    raise BadRequest(f"bad time {text!r}: use a date YYYY[-MM[-DD[ HH[:MM[:SS]]]]], a time "
                     "back from now (30m, 12h, 7d, 2w) or today/yesterday")
