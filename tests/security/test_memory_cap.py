"""Unfinished frames cannot make meowd hold unbounded memory (issue 11: 8 partial
64 MiB frames took it to 524 MB). Across all connections at most MAX_BUFFERED bytes of
unfinished frames are held, the connection holding the most is closed with an error, and
a frame over 1 MiB must be a create."""

from __future__ import annotations

import socket

import msgpack
import psutil

from meowd.core.framing import HEADER, MAX_FRAME, PROTOCOL_VERSION, FrameDecoder, decode_payload
from meowd.server import MAX_BUFFERED
from tests.conftest import MeowEnv, wait_for

MiB = 1 << 20


def create_prefix(length: int) -> bytes:
    """The start of a create frame of `length` payload bytes whose last value (a bin)
    is still to come."""
    head = (b"\x83" + msgpack.packb("v") + msgpack.packb(PROTOCOL_VERSION)
            + msgpack.packb("op") + msgpack.packb("create") + msgpack.packb("args"))
    return HEADER.pack(length) + head + b"\xc6" + (length - len(head) - 5).to_bytes(4, "big")


def connect(env: MeowEnv) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(env.paths.socket))
    return s


def send_partial(s: socket.socket, size: int) -> None:
    """A create frame announcing MAX_FRAME - 1 bytes, of which `size` are sent."""
    try:
        s.sendall(create_prefix(MAX_FRAME - 1))
        for _ in range(size // MiB):
            s.sendall(b"x" * MiB)
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed by meowd: the error reply still waits in our receive buffer


def reply_of(s: socket.socket) -> dict | None:
    """The reply waiting on s, if any (without blocking)."""
    s.setblocking(False)
    decoder, data = FrameDecoder(), b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (BlockingIOError, ConnectionResetError):
        pass
    finally:
        s.setblocking(True)
    frames = decoder.feed(data)
    return decode_payload(frames[0]) if frames else None


def ping(env: MeowEnv) -> bool:
    with env.client() as c:
        return c.ping()["pid"] > 0


def test_eight_partial_frames_stay_under_the_cap(meow_env: MeowEnv):
    daemon = psutil.Process(meow_env.daemon.pid)
    before = daemon.memory_info().rss
    sockets = [connect(meow_env) for _ in range(8)]
    for s in sockets:
        send_partial(s, 63 * MiB)
    replies: dict[int, dict] = {}

    def seven_closed() -> bool:
        for n, s in enumerate(sockets):
            if n not in replies and (reply := reply_of(s)) is not None:
                replies[n] = reply
        return len(replies) == 7

    wait_for(seven_closed, 30, "7 of the 8 connections to be closed with an error")
    assert all(r["error"]["code"] == "frame_too_large" for r in replies.values())
    assert "unfinished requests" in next(iter(replies.values()))["error"]["message"]
    peak = _peak_rss(daemon.pid)
    growth = (peak - before) / MiB
    # 8 x 63 MiB were sent; at most MAX_BUFFERED (96 MiB) may be held at once.
    assert growth < MAX_BUFFERED / MiB + 40, f"meowd's peak grew by {growth:.0f} MiB"
    print(f"\n8 partial frames: meowd peak RSS grew {growth:.0f} MiB")
    assert ping(meow_env)
    for s in sockets:
        s.close()


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_the_largest_holder_is_closed_not_the_newest(meow_env: MeowEnv):
    big, small = connect(meow_env), connect(meow_env)
    send_partial(big, 60 * MiB)
    # A whole 40 MiB frame: with the 60 MiB held it crosses the cap, so the holder of
    # the 60 MiB goes, and this one is answered as usual.
    payload = msgpack.packb({"v": PROTOCOL_VERSION, "op": "create",
                             "args": {"tasks": "x" * (40 * MiB), "cwd": "/"}})
    small.sendall(HEADER.pack(len(payload)) + payload)
    small.settimeout(30)
    decoder, frames = FrameDecoder(), []
    while not frames:
        frames = decoder.feed(small.recv(65536))
    answered = decode_payload(frames[0])
    assert answered["error"]["code"] == "bad_request"  # served: "tasks" is not a list
    evicted = wait_for(lambda: reply_of(big), 30, "the 60 MiB holder to be closed")
    assert evicted["error"]["code"] == "frame_too_large"
    assert ping(meow_env)


def test_a_large_frame_must_be_a_create(meow_env: MeowEnv):
    s = connect(meow_env)
    payload = msgpack.packb({"v": PROTOCOL_VERSION, "op": "list", "args": {"x": "y" * (2 * MiB)}})
    try:
        s.sendall(HEADER.pack(len(payload)) + payload)
    except (BrokenPipeError, ConnectionResetError):
        pass
    decoder, frames = FrameDecoder(), []
    while not frames:
        frames = decoder.feed(s.recv(65536))
    reply = decode_payload(frames[0])
    assert reply["error"]["code"] == "frame_too_large"
    assert "for any request but create" in reply["error"]["message"]
    assert ping(meow_env)
