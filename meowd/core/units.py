"""Quantities users type: memory (`20000`, `0.5`, `24GiB`, computed with in MiB) and
durations (`90s`, `1d2h`, computed with in seconds)."""

from __future__ import annotations

from meowd.core.errors import BadRequest

_SIZE = r"^\s*(\d+(?:\.\d+)?)\s*(mib|m|mb|gib|g|gb|tib|t|tb)?\s*$"
_FACTOR = {"m": 1, "g": 1024, "t": 1024 * 1024}
_SPACE = " \t\n\r\f\v"
"""What `\\s` matches under re.ASCII."""
_SIZE_UNITS = frozenset({"", "mib", "m", "mb", "gib", "g", "gb", "tib", "t", "tb"})

MemoryRequest = int | float
"""MiB as an int, or a float ratio in (0, 1] of each device's own total."""


def _ascii_terms(text: str) -> list[tuple[str, str]] | None:
    """The common spellings (`20GiB`, `1d 2h`: ASCII numbers, each followed by letters)
    as [(number, lowercase letters)], read without `re` (it costs the CLI's start-up
    time); None for anything else, which the regular expressions then judge. Only a
    shortcut: where it answers, the expressions agree (tests/unit/test_units.py)."""
    if not text.isascii():
        return None
    terms: list[tuple[str, str]] = []
    rest = text.strip(_SPACE).lower()
    while rest:
        i = len(rest) - len(rest.lstrip("0123456789"))
        if i and rest[i:i + 1] == "." and rest[i + 1:i + 2].isdigit():
            i += 1 + len(rest[i + 1:]) - len(rest[i + 1:].lstrip("0123456789"))
        number, rest = rest[:i], rest[i:].lstrip(_SPACE)
        j = len(rest) - len(rest.lstrip("abcdefghijklmnopqrstuvwxyz"))
        if not number or (rest and not j):
            return None
        terms.append((number, rest[:j]))
        rest = rest[j:].lstrip(_SPACE)
    return terms or None


def parse_size_mib(text: str) -> int:
    """`80GiB` -> 81920, `24000` -> 24000 (plain numbers are MiB)."""
    if text.isdigit():  # the common case, without loading `re` (CLI start-up time)
        return int(text)
    terms = _ascii_terms(text)
    if terms and len(terms) == 1 and terms[0][1] in _SIZE_UNITS:
        number, unit = terms[0]
    else:
        import re

        match = re.match(_SIZE, text, re.IGNORECASE | re.ASCII)
        if not match:
            raise BadRequest(f"not a memory size: {text!r} (use MiB like 24000, or 24GiB)")
        number, unit = match.group(1), (match.group(2) or "").lower()
    mib = float(number) * _FACTOR[(unit or "m")[0]]
    if mib != int(mib):
        raise BadRequest(f"memory size {text!r} is not a whole number of MiB")
    return int(mib)


def parse_memory_request(text: str) -> MemoryRequest:
    """Parse `-M`: whole MiB (`20000`, `20GiB`) or a ratio in (0, 1] (`0.5`, `1.0`)."""
    stripped = text.strip()
    if "." in stripped and stripped.replace(".", "", 1).isdigit():
        ratio = float(stripped)
        if not 0 < ratio <= 1:
            raise BadRequest(
                f"memory ratio {text!r} must be in (0, 1]; give whole MiB for absolute sizes"
            )
        return ratio
    return parse_size_mib(stripped)


def validate_memory_request(value: object) -> MemoryRequest:
    """Check a memory request that arrived over the wire."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest("requires_memory_per_device must be MiB (int) or a ratio (float)")
    if isinstance(value, float):
        if not 0 < value <= 1:
            raise BadRequest("a memory ratio must be in (0, 1]")
        return value
    if value < 0:
        raise BadRequest("requires_memory_per_device must not be negative")
    return value


def resolve_mib(request: MemoryRequest, device_total_mib: int) -> int:
    """MiB a task needs on one device: ratios resolve against that device's own total."""
    if isinstance(request, float):
        return int(request * device_total_mib)
    return request


def format_mib(mib: int | float | None) -> str:
    if mib is None:
        return "-"
    if isinstance(mib, float):
        return f"{mib:.0%}"
    if mib >= 1024 and mib % 1024 == 0:
        return f"{mib // 1024}GiB"
    return f"{mib}MiB"


_DURATION_PART = r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)"
_DURATION = r"^\s*(?:\d+(?:\.\d+)?\s*[wdhms]\s*)+$"
_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `2h`, `1d2h`, `1w`, or plain seconds (`90`) -> seconds (> 0)."""
    stripped = text.strip()
    try:
        seconds = float(stripped)
    except ValueError:
        terms = _ascii_terms(stripped)
        if terms and all(unit in _SECONDS for _, unit in terms):
            seconds = sum(float(n) * _SECONDS[unit] for n, unit in terms)
        else:
            import re  # only for unusual spellings: `re` costs the CLI's start-up time

            if not re.match(_DURATION, stripped, re.IGNORECASE | re.ASCII):
                raise BadRequest(
                    f"invalid duration {text!r}: use e.g. 90s, 30m, 2h, 1d2h") from None
            seconds = sum(float(n) * _SECONDS[unit.lower()]
                          for n, unit in re.findall(_DURATION_PART, stripped,
                                                    re.IGNORECASE | re.ASCII))
    if not 0 < seconds < 10 * 365 * 86400 or seconds != seconds:
        raise BadRequest(f"invalid duration {text!r}: must be more than 0 and under 10 years")
    return seconds


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    text = "".join(f"{n}{u}" for n, u in parts if n)
    return text or "0s"
