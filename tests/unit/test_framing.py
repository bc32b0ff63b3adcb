import msgpack
import pytest

from meowd.core.errors import FrameTooLarge, ProtocolError
from meowd.core.framing import HEADER, FrameDecoder, decode_payload, encode_frame


def test_round_trip_split_at_every_byte():
    data = encode_frame({"a": 1}) + encode_frame({"b": [1, 2]})
    decoder = FrameDecoder()
    frames = []
    for i in range(len(data)):
        frames += decoder.feed(data[i:i + 1])
    assert [decode_payload(f) for f in frames] == [{"a": 1}, {"b": [1, 2]}]
    assert decoder.pending == 0


def test_oversized_header_is_refused_before_buffering():
    decoder = FrameDecoder(max_frame=1024)
    with pytest.raises(FrameTooLarge):
        decoder.feed(HEADER.pack(1025))


@pytest.mark.parametrize("payload", [
    b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb("x"), msgpack.packb({1: 2}), b"\x00" * 5,
])
def test_bad_payloads_are_protocol_errors(payload):
    with pytest.raises(ProtocolError):
        decode_payload(payload)


def test_zero_bytes_yield_empty_frames_not_a_hang():
    frames = FrameDecoder().feed(b"\x00" * 8192)
    assert len(frames) == 2048 and all(f == b"" for f in frames)
