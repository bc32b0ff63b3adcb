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


class FrameDecoder:
    """Accumulates bytes and splits them into frames.

    `feed` returns complete payloads (still encoded), so one bad payload can be answered
    with an error while the stream stays in sync. An oversized header raises
    FrameTooLarge: the stream cannot be resynchronised after that, so the caller closes.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self._max_frame:
                raise FrameTooLarge(
                    f"frame of {length} bytes exceeds the {self._max_frame}-byte limit"
                )
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[HEADER.size:end]))
            del self._buffer[:end]
        return frames

    @property
    def pending(self) -> int:
        """Bytes buffered towards an incomplete frame."""
        return len(self._buffer)
