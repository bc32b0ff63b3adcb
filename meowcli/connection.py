"""The light half of the client: a framed, blocking connection to meowd, and starting
the daemon. It avoids asyncio, dataclasses and the typed protocol so that `meow create`
stays close to Python's own start-up time; `meowcli.client` builds on it.

Nothing is sent before the daemon is known to be ours: the socket's directory must be
private (not a symlink, ours, writable by nobody else) and the process listening on it
must run as our uid (or root's, for a system-wide daemon). Otherwise another user who
planted /tmp/meow-$UID would receive every request, environment and secrets included.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import sys
import time

from meowd.core.errors import (
    ERRORS_BY_CODE,
    BadRequest,
    FrameTooLarge,
    MeowError,
    PermissionDenied,
)
from meowd.core.framing import (
    HEADER,
    MAX_FRAME,
    decode_payload,
    encode_frame,
)
from meowd.core.paths import Paths, resolve_paths, unsafe_directory, user_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, BinaryIO

START_TIMEOUT = 15.0
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class NotRunning(MeowError):
    code = "not_running"


class ConnectionLost(MeowError):
    """The daemon went away with a request in flight: it may or may not have applied it."""


class OutputClosed(Exception):
    """Whoever reads the output stopped reading (`meow list --json | head`)."""


class Connection:
    def __init__(self, paths: Paths | None = None, timeout: float | None = 60.0) -> None:
        self.paths = paths or resolve_paths()
        self.timeout = timeout
        self._sock: socket.socket | None = None

    # -- connection ----------------------------------------------------------------------
    def connect(self) -> Connection:
        path = self.paths.socket_path  # a str: pathlib costs start-up time
        check_socket_directory(os.path.dirname(path))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(path)
            check_peer(sock, path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise NotRunning(f"meowd is not running (no daemon at {path})") from None
        except PermissionError:
            sock.close()
            raise MeowError(f"permission denied on {path}") from None
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Connection:
        return self if self._sock else self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        assert self._sock is not None
        return self._sock.fileno()

    def wait_closed(self) -> None:
        """Block until the daemon closes this connection (it does so once stopped)."""
        assert self._sock is not None
        try:
            while self._sock.recv(4096):
                pass
        except OSError:
            pass
        self.close()

    def send_wire(self, message: dict[str, object]) -> None:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._sock.sendall(encode_frame(message))

    def receive(self) -> object:
        """The next reply's result (or its error, raised). Frames are read exactly,
        header then body, so raw bytes that follow a reply (ReplyWithTail) stay unread."""
        (length,) = HEADER.unpack(self._recv_exact(HEADER.size))
        if length > MAX_FRAME:
            raise FrameTooLarge(f"reply of {length} bytes exceeds the {MAX_FRAME}-byte limit")
        return _result(decode_payload(self._recv_exact(length)))

    def _receive_with_tail(self, out: BinaryIO) -> object:
        """A reply that may be followed by `tail_bytes` raw bytes (ReplyWithTail): copy
        them to `out` as they arrive, never holding them whole."""
        result = self.receive()
        left = result.get("tail_bytes") if isinstance(result, dict) else None
        if isinstance(left, int):
            buffer = memoryview(bytearray(min(left, 1 << 20)))
            while left > 0:
                got = self._recv_into(buffer[:min(left, len(buffer))])
                try:
                    out.write(buffer[:got])
                except BrokenPipeError:  # not meowd's doing: call_wire must not say so
                    raise OutputClosed from None
                left -= got
        return result

    def _recv_exact(self, n: int) -> bytearray:
        data = bytearray(n)
        view, got = memoryview(data), 0
        while got < n:
            got += self._recv_into(view[got:])
        return data

    def _recv_into(self, view: memoryview) -> int:
        """Some bytes into `view` (at least one): ConnectionLost when meowd is gone."""
        assert self._sock is not None
        try:
            got = self._sock.recv_into(view)
        except ConnectionResetError:
            raise ConnectionLost("meowd closed the connection") from None
        if not got:
            raise ConnectionLost("meowd closed the connection")
        return got

    def call_wire(self, message: dict[str, object], tail_to: BinaryIO | None = None) -> object:
        """Send a request and return its reply's result; with `tail_to`, raw bytes that
        follow the reply (ReplyWithTail) are copied there."""
        try:
            self.send_wire(message)
            return self.receive() if tail_to is None else self._receive_with_tail(tail_to)
        except OverflowError:
            raise BadRequest("a number is too large (whole numbers must be under 2**63)") \
                from None
        except UnicodeEncodeError as exc:
            bad = exc.object[exc.start:exc.end] if isinstance(exc.object, str) else "?"
            raise BadRequest(f"text that is not UTF-8 ({bad!r}) in the command, an argument, "
                             "a name or a path") from None
        except TimeoutError:
            raise MeowError(f"meowd did not answer within {self.timeout:.0f} s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise ConnectionLost("meowd closed the connection") from None


def _result(message: dict[str, Any]) -> object:
    if message.get("ok"):
        return message.get("result")
    error = message.get("error") or {}
    cls = ERRORS_BY_CODE.get(error.get("code"), MeowError)
    raise cls(error.get("message", "unknown error"))


_ELSEWHERE = "set MEOW_HOME (or XDG_RUNTIME_DIR) to a directory of your own"


def check_socket_directory(directory: str | Path) -> None:
    """Refuse a socket directory that another user planted or can write into. A missing
    one is fine: nothing listens there, and the daemon creates it privately."""
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return
    except OSError as exc:  # e.g. a parent we may not enter
        raise PermissionDenied(f"cannot check {directory}: {exc.strerror}") from None
    problem = unsafe_directory(st, os.getuid(), root_ok=True)
    if problem is None:
        return
    if st.st_uid == os.getuid() and stat.S_ISDIR(st.st_mode):  # ours, only too open
        fix = f"run chmod 700 {directory}"
    else:
        fix = f"have it removed (rm -r {directory}, as root if it is not yours) or {_ELSEWHERE}"
    raise PermissionDenied(f"refusing to use {directory}: it {problem}, so another user "
                           f"could be listening there; {fix}")


def check_peer(sock: socket.socket, path: str | Path) -> None:
    """The process that listens must be ours (or root's): SO_PEERCRED, as the daemon
    checks us."""
    _, uid, _ = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    if uid not in (os.getuid(), 0):
        raise PermissionDenied(
            f"refusing to talk to {path}: the process listening there runs as "
            f"{user_name(uid)}, not as you, so it is not your meowd; {_ELSEWHERE}, "
            f"or stop that process and remove {path}")


def _answers(paths: Paths) -> bool:
    try:
        Connection(paths, timeout=2).connect().close()
    except NotRunning:
        return False
    return True


def start_daemon(paths: Paths, timeout: float = START_TIMEOUT) -> None:
    """Start meowd in the background and wait until it answers."""
    import subprocess  # only needed here; keeps the common path light

    paths.state.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = paths.daemon_log
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    with open(fd, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meowd"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(paths):
            return
        if proc.poll() is not None:
            # Lost a race with another starter? Then that daemon answers shortly.
            if _answers(paths):
                return
            tail = _tail(log_path)
            raise MeowError(f"meowd exited with status {proc.returncode} while starting: {tail}")
        time.sleep(0.01)
    raise MeowError(f"meowd did not start within {timeout:.0f} s; see {log_path}")


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"
