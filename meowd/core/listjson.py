"""`meow list --json`'s bytes from a compact listing (columns once, a row per task): the
daemon encodes them (`ListRequest.json`), and the CLI the same way when a daemon from
before sends rows instead. Pure; msgspec is imported on first use (its import costs the
CLI ~25 ms, so the CLI uses json below `render.MSGSPEC_FROM` rows)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the CLI's fast path start-up time
    from collections.abc import Sequence
    from typing import Any

_STRUCTS: dict[tuple[str, ...], Any] = {}


def encode_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """A JSON array of objects keyed by `columns`, compact and UTF-8 (no trailing
    newline): for the finite numbers a task holds, the bytes json.dumps writes with
    separators=(",", ":") and ensure_ascii=False. msgspec encodes a struct per row ~8x
    faster than json a dict per row; without msgspec (a Python where only meow's core
    dependencies are installed), json writes the same bytes."""
    return encode_mixed(columns, rows)


def encode_mixed(columns: Sequence[str], items: Sequence[Sequence[Any] | bytes]) -> bytes:
    """`encode_rows`, where an item may be a row's JSON already encoded (`encode_row`):
    its bytes go in as they are."""
    msgspec = msgspec_or_none()
    if msgspec is None:
        return b"[" + b",".join(i if i.__class__ is bytes else encode_row(columns, i)
                                for i in items) + b"]"
    make, raw = _struct(columns), msgspec.Raw
    return msgspec.json.encode([raw(i) if i.__class__ is bytes else make(*i) for i in items])


def encode_row(columns: Sequence[str], row: Sequence[Any]) -> bytes:
    """One row's JSON object, as it appears in `encode_rows`' array."""
    msgspec = msgspec_or_none()
    if msgspec is None:
        import json

        return json.dumps(dict(zip(columns, row, strict=True)), separators=(",", ":"),
                          ensure_ascii=False).encode()
    return msgspec.json.encode(_struct(columns)(*row))


_UNKNOWN = object()
_msgspec_module: Any = _UNKNOWN


def msgspec_or_none() -> Any:
    """msgspec, or None where it is not installed. Probed once: Python does not remember
    a failed import, and the fallback asks for every row."""
    global _msgspec_module
    if _msgspec_module is _UNKNOWN:
        try:
            import msgspec
        except ImportError:
            msgspec = None
        _msgspec_module = msgspec
    return _msgspec_module


def _struct(columns: Sequence[str]) -> Any:
    key = tuple(columns)
    make = _STRUCTS.get(key)
    if make is None:
        make = _STRUCTS[key] = msgspec_or_none().defstruct("Task", key)
    return make
