"""Hostile input: more than 10,000 malformed, truncated, oversized, wrongly typed and
out-of-order messages from many concurrent connections, plus clients that connect and
never send or never read. The daemon must answer well-formed requests throughout and
keep its memory bounded."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import msgpack
import psutil
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meowd.core.framing import MAX_FRAME, PROTOCOL_VERSION, encode_frame
from tests.conftest import MeowEnv

# Everything a request may hold; "create" and "exit" are left out of valid-looking
# requests: a well-formed one would legitimately run a command or stop the daemon.
SAFE_OPS = ["ping", "list", "show", "wait", "kill", "cancel", "resume", "remove", "devices",
            "set_task", "clean", "nope", "", "CREATE", "exit ", "set_setting"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                    st.floats(allow_nan=True), st.text(max_size=40), st.binary(max_size=40))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=10), inner, max_size=6)),
    max_leaves=20)
requests = st.one_of(
    values,
    st.fixed_dictionaries({"v": st.one_of(st.just(PROTOCOL_VERSION), scalars),
                           "op": st.one_of(st.sampled_from(SAFE_OPS), scalars),
                           "args": st.one_of(values, st.dictionaries(
                               st.sampled_from(["target", "regex", "force", "tasks", "cwd",
                                                "env", "key", "value", "attr", "before",
                                                "all"]), values, max_size=5))}),
    st.fixed_dictionaries({"v": st.just(PROTOCOL_VERSION), "op": st.just("create"),
                           "args": st.fixed_dictionaries({
                               "tasks": st.one_of(values, st.lists(values, max_size=3)),
                               "cwd": st.one_of(scalars, st.just("relative")),
                               "env": values})}),
)


def frame(message) -> bytes:
    return encode_frame(message)


class Fuzzer:
    def __init__(self, env: MeowEnv) -> None:
        self.path = str(env.paths.socket)
        self.sent = 0
        self.lock = threading.Lock()

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(self.path)
        return s

    def count(self, n: int = 1) -> None:
        with self.lock:
            self.sent += n

    def exchange(self, s: socket.socket, data: bytes) -> dict:
        s.sendall(data)
        header = self._read(s, 4)
        (size,) = struct.unpack(">I", header)
        return msgpack.unpackb(self._read(s, size), raw=False)

    @staticmethod
    def _read(s: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def healthy(self) -> bool:
        with self.connect() as s:
            reply = self.exchange(s, frame({"v": PROTOCOL_VERSION, "op": "ping"}))
        return reply["ok"] is True


def raw_garbage(fuzzer: Fuzzer, seed: int, rounds: int) -> None:
    """Random bytes, truncated frames, lying length headers, zero floods."""
    rng = random.Random(seed)
    for _ in range(rounds):
        kind = rng.randrange(5)
        try:
            with fuzzer.connect() as s:
                if kind == 0:
                    s.sendall(rng.randbytes(rng.randrange(1, 4096)))
                elif kind == 1:  # a frame cut short, then the client leaves
                    data = frame({"v": PROTOCOL_VERSION, "op": "list"})
                    s.sendall(data[: rng.randrange(1, len(data))])
                elif kind == 2:  # a header announcing more than MAX_FRAME
                    s.sendall(struct.pack(">I", MAX_FRAME + rng.randrange(1, 2**20)))
                elif kind == 3:
                    s.sendall(b"\0" * 8192)
                else:  # a valid length around invalid msgpack
                    body = rng.randbytes(rng.randrange(0, 512))
                    s.sendall(struct.pack(">I", len(body)) + body)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(2)
                try:
                    while s.recv(65536):
                        pass
                except (TimeoutError, ConnectionError):
                    pass
        except (ConnectionError, TimeoutError):
            pass
        fuzzer.count()


def test_the_daemon_survives_hostile_clients(meow_env: MeowEnv):
    fuzzer = Fuzzer(meow_env)
    daemon = psutil.Process(meow_env.daemon.pid)
    assert fuzzer.healthy()
    rss_before = daemon.memory_info().rss
    # Clients that connect and never send, and one that sends pings and never reads.
    idle = [fuzzer.connect() for _ in range(50)]
    deaf = fuzzer.connect()
    deaf.setblocking(False)
    ping = frame({"v": PROTOCOL_VERSION, "op": "list"})
    for _ in range(2000):
        try:
            deaf.send(ping)
        except BlockingIOError:
            break
        fuzzer.count()

    health_failures: list[str] = []
    stop = threading.Event()

    def watchdog() -> None:
        while not stop.is_set():
            try:
                if not fuzzer.healthy():
                    health_failures.append("ping not ok")
            except Exception as exc:
                health_failures.append(repr(exc))
            time.sleep(0.05)

    threads = [threading.Thread(target=watchdog)]
    threads += [threading.Thread(target=raw_garbage, args=(fuzzer, seed, 1000))
                for seed in range(6)]
    for t in threads:
        t.start()
    try:
        structured_fuzz(fuzzer)
    finally:
        for t in threads[1:]:
            t.join()
        stop.set()
        threads[0].join()
    for s in [*idle, deaf]:
        s.close()

    assert fuzzer.sent >= 10_000, fuzzer.sent
    assert health_failures == []
    assert fuzzer.healthy() and meow_env.daemon.poll() is None
    growth = (daemon.memory_info().rss - rss_before) / 2**20
    assert growth < 100, f"meowd grew by {growth:.0f} MiB"
    print(f"\nfuzzed {fuzzer.sent} messages; meowd RSS grew {growth:.1f} MiB")


def structured_fuzz(fuzzer: Fuzzer) -> None:
    with fuzzer.connect() as s:
        conn = {"s": s}

        @settings(max_examples=1500, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(requests, min_size=1, max_size=8))
        def batch(messages):
            for message in messages:
                try:
                    data = frame(message)
                except (TypeError, ValueError, OverflowError):
                    continue  # not encodable: nothing to send
                try:
                    reply = fuzzer.exchange(conn["s"], data)
                except ConnectionError:  # cut off after 64 errors in a row: reconnect
                    conn["s"] = fuzzer.connect()
                    reply = fuzzer.exchange(conn["s"], data)
                fuzzer.count()
                assert set(reply) >= {"v", "ok"}
                if not reply["ok"]:
                    assert isinstance(reply["error"]["message"], str)

        batch()
        conn["s"].close()
