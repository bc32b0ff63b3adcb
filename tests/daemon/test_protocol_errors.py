"""Garbage, oversized and wrongly typed frames get error replies; the daemon carries on.
Connections from another uid are refused."""

import os
import random
import socket
import stat
import subprocess
from pathlib import Path

import msgpack
import pytest

from meowd.core.framing import HEADER, FrameDecoder, decode_payload, encode_frame
from meowd.core.protocol import PROTOCOL_VERSION
from tests.conftest import MeowEnv


def raw(env: MeowEnv) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(env.paths.socket))
    return s


def replies(s: socket.socket, n: int) -> list[dict]:
    decoder, out = FrameDecoder(), []
    while len(out) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += [decode_payload(f) for f in decoder.feed(chunk)]
    return out


def ping_ok(env: MeowEnv) -> bool:
    with env.client() as c:
        return c.ping()["pid"] > 0


def test_zero_bytes_are_answered_and_the_daemon_survives(meow_env: MeowEnv):
    s = raw(meow_env)
    s.sendall(b"\x00" * 8192)
    got = replies(s, 64)
    assert got and all(r["ok"] is False and r["error"]["code"] == "protocol" for r in got)
    assert ping_ok(meow_env)


def test_oversized_frame_is_refused(meow_env: MeowEnv):
    s = raw(meow_env)
    s.sendall(HEADER.pack(1 << 31))
    (reply,) = replies(s, 1)
    assert reply["error"]["code"] == "frame_too_large"
    assert s.recv(10) == b""  # connection closed: the stream cannot resync
    assert ping_ok(meow_env)


@pytest.mark.parametrize("message", [
    {"v": PROTOCOL_VERSION, "op": "unknown"},
    {"v": 99, "op": "ping"},
    {"v": PROTOCOL_VERSION, "op": "create", "args": {"tasks": "no", "cwd": "/"}},
    {"v": PROTOCOL_VERSION, "op": "create", "args": {"tasks": [{"command": ["x"]}], "cwd": "/"}},
    {"v": PROTOCOL_VERSION, "op": "kill", "args": {"target": None, "regex": "yes"}},
    {"v": PROTOCOL_VERSION, "op": "show", "args": {"target": "nope"}},
    {"v": PROTOCOL_VERSION, "op": "remove", "args": {"target": "[", "regex": True}},
])
def test_bad_messages_get_errors_on_a_live_connection(meow_env: MeowEnv, message):
    s = raw(meow_env)
    s.sendall(encode_frame(message) + encode_frame({"v": PROTOCOL_VERSION, "op": "ping"}))
    bad, good = replies(s, 2)
    assert bad["ok"] is False and bad["error"]["message"]
    assert good["ok"] is True


def test_random_garbage_from_many_connections(meow_env: MeowEnv):
    rng = random.Random(1234)
    for _ in range(50):
        s = raw(meow_env)
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 2048)))
        if rng.random() < 0.5:  # a valid header around junk
            junk = HEADER.pack(len(junk)) + junk
        try:
            s.sendall(junk)
        except OSError:
            pass
        s.close()
    wrong_types = msgpack.packb([1, 2, 3])
    s = raw(meow_env)
    s.sendall(HEADER.pack(len(wrong_types)) + wrong_types)
    assert replies(s, 1)[0]["error"]["code"] == "protocol"
    assert ping_ok(meow_env)


def test_socket_and_state_are_private(meow_env: MeowEnv):
    assert stat.S_IMODE(os.stat(meow_env.paths.socket).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(meow_env.paths.state).st_mode) == 0o700


# Run by the system's Python as uid nobody (which cannot read root's venv): connect, send
# one frame, print the reply frame (hex) or what refused us. No fork of this (threaded,
# under pytest-xdist) process: a forked child could hang on a lock another thread held.
_AS_NOBODY = """
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
    try:
        s.sendall(bytes.fromhex(sys.argv[2]))
    except BrokenPipeError:
        pass  # refused before we wrote: the refusal is still in our receive buffer
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    print("frame", data.hex())
except PermissionError:
    print("EACCES")
except Exception as exc:
    print(type(exc).__name__)
"""
SYSTEM_PYTHON = "/usr/bin/python3"


def _connect_as_nobody(path: str) -> str:
    """Connect as uid nobody and report what happened."""
    out = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", _AS_NOBODY, path,
         encode_frame({"v": PROTOCOL_VERSION, "op": "list"}).hex()],
        user=65534, group=65534, extra_groups=[], capture_output=True, text=True,
        timeout=30, cwd="/")
    word, _, data = out.stdout.strip().partition(" ")
    if word != "frame":
        return word or f"no answer: {out.stderr.strip()}"
    reply = [decode_payload(f) for f in FrameDecoder().feed(bytes.fromhex(data))]
    return reply[0]["error"]["code"] if reply and not reply[0]["ok"] else "served"


@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason=f"no {SYSTEM_PYTHON}")
@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another uid")
def test_other_uid_is_refused(meow_env: MeowEnv):
    path = str(meow_env.paths.socket)
    assert _connect_as_nobody(path) == "EACCES"  # 0600 socket: the kernel refuses
    # Even if someone loosens the permissions, the peer-credential check refuses.
    os.chmod(meow_env.paths.state, 0o755)
    os.chmod(path, 0o666)
    assert _connect_as_nobody(path) == "permission_denied"
    assert ping_ok(meow_env)


def test_secret_env_values_are_never_shown_or_logged(meow_env: MeowEnv, tmp_path: Path):
    value = "s3cr3t-T0KEN-value"
    # the shell's $API_TOKEN, not ${env:API_TOKEN}: a secret never goes into a command line
    meow_env.meow("create", "echo \"$API_TOKEN\" > used; printf %s \"$API_TOKEN\" >> used; "
                  "echo \"note: $API_TOKEN\" > \"$MEOW_NOTE_FILE\"; exit 3",
                  "-n", "sec", "-c", "0", "--secret", f"API_TOKEN={value}", cwd=str(tmp_path))
    task = meow_env.wait_status("sec", "failed")
    assert (tmp_path / "used").read_text() == f"{value}\n{value}"  # the task got it
    shown = [meow_env.meow(*args).stdout for args in
             (["list"], ["list", "--json"], ["show", "sec"], ["show", "sec", "--json"])]
    assert all(value not in out for out in shown)
    assert task["reason"] == "note: *** (exit code 3)"
    meow_env.stop()  # flush the daemon log
    # Everything meowd wrote (its log above all); not the task's own files (tasks/) nor
    # the database, which must keep the value to run the task after a restart.
    written = [p for p in meow_env.home.rglob("*") if p.is_file()
               and not p.name.startswith("meow.db") and "tasks" not in p.parts]
    assert any(p.name == "test-daemon.log" for p in written)
    for path in written:
        assert value.encode() not in path.read_bytes(), path
