"""Sans-I/O framing: a 4-byte big-endian length, then one msgpack map.

The decoder is fed whatever bytes arrive and yields whole messages. It never reads a
socket itself, so the server, the client and the tests share exactly this code.
"""

from __future__ import annotations

import struct

import msgpack

from meowd.core.errors import FrameTooLarge, ProtocolError

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change of the messages in meowd.core.protocol."""
HEADER = struct.Struct(">I")
# 10,000 task specs in one create are ~2 MiB; 64 MiB leaves room without letting a
# client make the daemon allocate gigabytes.
MAX_FRAME = 64 * 1024 * 1024
MAX_SMALL_FRAME = 1024 * 1024
"""Any request but a create fits in far less; a bigger frame must show, in its first
bytes, that it is a create (see `announced_op`)."""
LARGE_OPS = frozenset({"create"})
_PEEK = 256
"""The first payload bytes in which a large frame must name its op."""


def encode_frame(message: dict[str, object]) -> bytes:
    payload = msgpack.packb(message, use_bin_type=True)
    if len(payload) > MAX_FRAME:
        raise FrameTooLarge(f"message of {len(payload)} bytes exceeds the {MAX_FRAME}-byte limit")
    return HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> dict[str, object]:
    """Decode one frame body; anything but a map with string keys is a protocol error."""
    if not payload:
        raise ProtocolError("empty frame")
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=MAX_FRAME)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"malformed msgpack: {type(exc).__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"expected a map, got {type(message).__name__}")
    return message


def announced_op(prefix: bytes) -> str | None:
    """The `op` a payload's first bytes name, "" when they name none (not a map, or no
    string `op` among its first four keys), None when more bytes are needed to tell."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(prefix) or 1)
    unpacker.feed(prefix)
    try:
        for _ in range(min(unpacker.read_map_header(), 4)):
            key = unpacker.unpack()
            value = unpacker.unpack()
            if key == "op":
                return value if isinstance(value, str) else ""
    except msgpack.OutOfData:
        return None
    except Exception:  # not a map, or malformed: msgpack raises several unrelated types
        return ""
    return ""


class FrameDecoder:
    """Accumulates bytes and splits them into frames.

    `feed` returns complete payloads (still encoded), so one bad payload can be answered
    with an error while the stream stays in sync. An oversized header raises
    FrameTooLarge: the stream cannot be resynchronised after that, so the caller closes.
    A frame over `max_small_frame` is only buffered once its first bytes show it is a
    request in `large_ops` (a create): a list or a kill never needs megabytes.
    """

    def __init__(self, max_frame: int = MAX_FRAME, max_small_frame: int = MAX_SMALL_FRAME,
                 large_ops: frozenset[str] = LARGE_OPS) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame
        self._max_small = max_small_frame
        self._large_ops = large_ops
        self._allowed = 0  # the length of the frame being buffered, once found allowed

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self._max_frame:
                raise FrameTooLarge(
                    f"frame of {length} bytes exceeds the {self._max_frame}-byte limit"
                )
            if length > self._max_small and not self._allowed:
                have = len(self._buffer) - HEADER.size
                op = announced_op(bytes(self._buffer[HEADER.size:HEADER.size + _PEEK]))
                if op is None and have < min(_PEEK, length):
                    break  # too few bytes yet to tell
                if op not in self._large_ops:
                    raise FrameTooLarge(
                        f"frame of {length} bytes exceeds the {self._max_small}-byte limit "
                        f"for any request but {', '.join(sorted(self._large_ops))}"
                    )
                self._allowed = length
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            view = memoryview(self._buffer)
            frames.append(view[HEADER.size:end].tobytes())  # one copy, not two
            view.release()
            del self._buffer[:end]
            self._allowed = 0
        return frames

    @property
    def pending(self) -> int:
        """Bytes buffered towards an incomplete frame."""
        return len(self._buffer)

    def clear(self) -> int:
        """Drop whatever is buffered (the connection is being closed); returns its size."""
        dropped = len(self._buffer)
        self._buffer = bytearray()
        self._allowed = 0
        return dropped
