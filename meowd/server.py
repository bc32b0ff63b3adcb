"""The Unix socket server: accept, check the peer, decode frames, dispatch, reply.

A bad frame or request gets an error reply and the connection carries on (the framing
keeps the stream in sync); only an oversized frame header closes it, since the stream
cannot be resynchronised. Nothing a client sends can stop the server.

Memory is bounded: a frame over 1 MiB must be a create (the framing checks its first
bytes), and the bytes of unfinished frames across all connections are capped; past the
cap the connection holding the most is closed with an error.

The socket this meowd binds lives in a private directory it opened without following
links; it removes that socket, and only that one, when it stops. A socket passed by
systemd is never removed (asyncio >= 3.13 would, on close: `cleanup_socket` is off).
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import msgpack

from meowd import views
from meowd.controller import Controller
from meowd.core.errors import FrameTooLarge, MeowError, PermissionDenied
from meowd.core.framing import (
    HEADER,
    MAX_FRAME,
    PROTOCOL_VERSION,
    FrameDecoder,
    decode_payload,
    encode_frame,
)
from meowd.core.paths import unsafe_directory, user_name
from meowd.core.protocol import (
    ExitRequest,
    ReplyWithTail,
    SubscribeRequest,
    error_reply,
    ok_reply,
    request_from_wire,
)
from meowd.handlers import dispatch

log = logging.getLogger("meowd.server")
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
MAX_CONSECUTIVE_ERRORS = 64
MAX_CONNECTIONS = 512
"""Beyond this, new connections get a refusal: a flood of idle clients cannot exhaust fds."""
IDLE_TIMEOUT = 600.0
"""A connection that sends nothing for this long (mid-frame or between requests) is closed.
Waiting on a reply (`meow wait`, `watch`) is not idle: the daemon is the one working."""
WRITE_TIMEOUT = 60.0
"""A client that does not read its replies for this long is dropped."""
MAX_BUFFERED = 96 * 1024 * 1024
"""Bytes of unfinished frames held across all connections: one create of the largest
frame (64 MiB) fits beside others' partial requests; 8 clients each sending 64 MiB
without finishing no longer hold 512 MiB."""
READ_LIMIT = 64 * 1024
"""asyncio's own per-connection buffer stops reading from the socket at twice this."""
STATE_CHUNK = 500
"""Tasks of a whole state built between two turns of the loop (a few ms)."""
FULL_STATE_SHARE = 9.0
"""After a whole state that took T seconds, the next push waits at least this x T."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


class OwnSocket:
    """A listening socket this meowd bound, with the directory it was bound in (an open
    fd, so that a path swapped later cannot redirect the removal)."""

    def __init__(self, sock: socket.socket, dir_fd: int, name: str) -> None:
        self.sock = sock
        self._dir_fd = dir_fd
        self._name = name
        self._inode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_ino

    def remove(self) -> None:
        """Unlink the socket file if it is still the one we bound; close the directory."""
        try:
            st = os.stat(self._name, dir_fd=self._dir_fd, follow_symlinks=False)
            if st.st_ino == self._inode:
                os.unlink(self._name, dir_fd=self._dir_fd)
        except OSError:
            pass
        finally:
            os.close(self._dir_fd)


def private_directory(directory: Path) -> int:
    """Create `directory` 0700 if missing and open it without following a symlink; refuse
    one that is not ours. Returns an fd of the directory (0700 once this returns)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        problem = unsafe_directory(os.lstat(directory), os.getuid()) or "is not a directory"
        raise PermissionDenied(_refusal(directory, problem)) from None
    st = os.fstat(fd)
    if st.st_uid != os.getuid():
        os.close(fd)
        raise PermissionDenied(_refusal(directory, f"belongs to {user_name(st.st_uid)}"))
    os.fchmod(fd, 0o700)
    return fd


def _refusal(directory: Path, problem: str) -> str:
    return (f"refusing to listen in {directory}: it {problem}, and another user may have "
            f"planted it; have it removed (rm -r {directory}, as root if it is not yours) "
            "or set MEOW_HOME (or XDG_RUNTIME_DIR) to a directory of your own")


def _listening(path: Path) -> bool:
    """Whether a live socket is bound at `path` (for instance systemd's meowd.socket)."""
    try:
        with open("/proc/net/unix") as f:
            next(f, None)
            for line in f:
                fields = line.split(None, 7)
                if (len(fields) == 8 and fields[7].rstrip("\n") == str(path)
                        and int(fields[3], 16) & 0x10000):  # __SO_ACCEPTCON: listening
                    return True
    except (OSError, ValueError):
        pass
    return False


def bind_socket(path: Path) -> OwnSocket:
    """Bind a fresh 0600 socket in a private 0700 directory, replacing a stale one.

    The directory is opened with O_NOFOLLOW and the socket bound through that fd
    (/proc/self/fd/N/NAME), so a symlink planted at the path is never followed."""
    dir_fd = private_directory(path.parent)
    try:
        if _listening(path):  # not stale: never take a live socket's path from its owner
            raise MeowError(f"another process listens on {path} (systemd's meowd.socket?): "
                            "start meowd through it, or stop that process first")
        try:
            os.unlink(path.name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        via_fd = f"/proc/self/fd/{dir_fd}/{path.name}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(via_fd if os.path.isdir(f"/proc/self/fd/{dir_fd}") else str(path))
        finally:
            os.umask(old_umask)
        sock.listen(128)
        return OwnSocket(sock, dir_fd, path.name)
    except BaseException:
        os.close(dir_fd)
        raise


class _Connection:
    """What the server tracks of one connection to bound its memory."""

    __slots__ = ("decoder", "evicted", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.decoder = FrameDecoder()
        self.writer = writer
        self.evicted = False


class Server:
    def __init__(self, controller: Controller, on_exit: Callable[[bool], None],
                 idle_timeout: float = IDLE_TIMEOUT, write_timeout: float = WRITE_TIMEOUT,
                 max_buffered: int = MAX_BUFFERED) -> None:
        self.controller = controller
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.max_buffered = max_buffered
        self._on_exit = on_exit
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._open: set[_Connection] = set()
        self._buffered = 0
        """Bytes of unfinished frames held by all connections together."""
        self._uid = os.getuid()

    async def start(self, sock: socket.socket) -> None:
        # The socket file is not the server's to remove: meowd removes its own
        # (OwnSocket.remove), and one from systemd stays.
        options = {}
        create = asyncio.get_running_loop().create_unix_server
        if "cleanup_socket" in inspect.signature(create).parameters:
            options["cleanup_socket"] = False
        self._server = await asyncio.start_unix_server(
            self._connection, sock=sock, limit=READ_LIMIT, **options)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_CONNECTIONS:
            log.warning("refused a connection: %d open already", MAX_CONNECTIONS)
            writer.write(encode_frame(error_reply(MeowError(
                f"meowd has {MAX_CONNECTIONS} open connections; try again later"))))
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("connection handler failed")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        _, uid, _ = peer_credentials(sock)
        if uid != self._uid:
            log.warning("refused a connection from uid %d", uid)
            writer.write(encode_frame(error_reply(PermissionDenied(
                f"meowd belongs to uid {self._uid}; connections from uid {uid} are refused"))))
            await self._drain(writer)
            return
        conn = _Connection(writer)
        self._open.add(conn)
        try:
            await self._requests(conn, reader, writer)
        finally:
            self._open.discard(conn)
            self._buffered -= conn.decoder.clear()

    async def _requests(self, conn: _Connection, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        errors = 0
        while True:
            async with asyncio.timeout(self.idle_timeout):
                data = await reader.read(65536)
            if not data or conn.evicted:
                return
            before = conn.decoder.pending
            try:
                frames = conn.decoder.feed(data)
            except FrameTooLarge as exc:
                writer.write(encode_frame(error_reply(exc)))
                await self._drain(writer)
                return
            finally:
                self._buffered += conn.decoder.pending - before
            if self._buffered > self.max_buffered:
                victim = max(self._open, key=lambda c: c.decoder.pending)
                self._evict(victim)
                if victim is conn:
                    return
            for payload in frames:
                if conn.evicted:  # closed meanwhile by another connection's excess
                    return
                exit_request, ok, subscribe = await self._answer(payload, writer)
                if subscribe is not None:
                    await self._push(subscribe, reader, writer)
                    return
                errors = 0 if ok else errors + 1
                if exit_request is not None:
                    self._on_exit(exit_request.kill)
                if errors >= MAX_CONSECUTIVE_ERRORS:
                    return  # a client sending only garbage gets cut off

    def _evict(self, conn: _Connection) -> None:
        """Close the connection holding the most unfinished bytes, with an error."""
        held, total = conn.decoder.pending, self._buffered
        log.warning("closing a connection holding %d bytes of an unfinished request "
                    "(%d held in all, limit %d)", held, total, self.max_buffered)
        conn.evicted = True
        self._buffered -= conn.decoder.clear()
        conn.writer.write(encode_frame(error_reply(FrameTooLarge(
            f"meowd holds {total >> 20} MiB of unfinished requests (limit "
            f"{self.max_buffered >> 20} MiB); closing this connection, which held the most "
            f"({held >> 20} MiB)"))))
        conn.writer.close()  # flushes the error first; the connection's task then ends

    async def _answer(
        self, payload: bytes, writer: asyncio.StreamWriter
    ) -> tuple[ExitRequest | None, bool, SubscribeRequest | None]:
        """Decode, check and run one request, and write its reply; a valid subscribe is
        handed back instead (the caller streams states on this connection)."""
        request = None
        tail = b""
        try:
            request = request_from_wire(decode_payload(payload))
            if isinstance(request, SubscribeRequest):
                return None, True, request
            result = await dispatch(self.controller, request)
            if isinstance(result, ReplyWithTail):  # raw bytes after the reply, as it says
                result, tail = result.reply, result.tail
            reply = ok_reply(result)
            ok = True
        except MeowError as exc:
            reply, ok = error_reply(exc), False
        except OSError as exc:
            # A full or read-only disk outside the store (the config file, a task's
            # directory): the request fails, meowd carries on. The store raises its own
            # StoreUnavailable, a MeowError, above.
            log.error("request %r could not be stored: %s", getattr(request, "op", "?"), exc)
            state = self.controller.paths.state
            reply, ok = error_reply(MeowError(
                f"meowd cannot write its state under {state}: {exc}")), False
        except Exception as exc:
            log.exception("request %r failed", getattr(request, "op", "?"))
            internal = MeowError(f"internal error: {type(exc).__name__}: {exc}")
            reply, ok = error_reply(internal), False
        writer.write(encode_frame(reply))
        if tail:
            writer.write(tail)
        # Outside the try: a client that stops reading (`meow list --json | head`) only
        # ends its own connection (the caller closes it), with no frame after the tail.
        await self._drain(writer)
        return (request if isinstance(request, ExitRequest) and ok else None), ok, None

    async def _push(self, request: SubscribeRequest, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        """Send the whole state now, then after each change the whole state again or, for
        a subscriber that asked for deltas, only what changed, until the client leaves."""
        gone = asyncio.ensure_future(reader.read(1))  # any byte or EOF ends the subscription
        sent: int | None = None  # the version this subscriber has
        next_whole = 0.0  # (monotonic) the earliest time for another whole state
        try:
            while not gone.done():
                version = self.controller.version
                delta = (self.controller.changes_since(sent)
                         if request.deltas and sent is not None else None)
                # A delta when the subscriber asked for them and the log reaches back to
                # what it has; else the whole state (the first push, or it fell behind).
                if delta is not None:
                    writer.write(encode_frame(ok_reply(delta)))
                else:
                    # A whole state of 100,000 tasks costs a second: at most a tenth of
                    # the daemon's time goes to them, however often everything changes.
                    wait = next_whole - time.monotonic()
                    if sent is not None and wait > 0:
                        await asyncio.wait([gone], timeout=wait)
                        continue
                    frame, cost = await self._whole_state()
                    writer.write(frame)
                    next_whole = time.monotonic() + FULL_STATE_SHARE * cost
                sent = version
                await self._drain(writer)
                await asyncio.sleep(1 / request.max_rate)  # coalesce bursts of changes
                if self.controller.version == version:
                    await asyncio.wait([gone, asyncio.ensure_future(self.controller.changed())],
                                       return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()

    async def _whole_state(self) -> tuple[bytes, float]:
        """The whole state as one reply frame, and the seconds it took. Built and encoded
        STATE_CHUNK tasks at a time, with the loop free in between: other requests wait
        milliseconds, not the second 100,000 tasks take. A task that changes meanwhile is
        in the next push (its version is newer than the one this state is sent as); one
        removed meanwhile is left out."""
        c = self.controller
        tasks = list(c.index)
        packer = msgpack.Packer(use_bin_type=True)
        packed: list[bytes] = []
        cost = 0.0
        for start in range(0, len(tasks), STATE_CHUNK):
            began = time.perf_counter()
            chunk = [t for t in tasks[start:start + STATE_CHUNK] if c.index.tasks.get(t.id) is t]
            packed += map(packer.pack, views.task_states(c, chunk))
            cost += time.perf_counter() - began
            if start + STATE_CHUNK < len(tasks):
                await asyncio.sleep(0)
        began = time.perf_counter()
        head = views.state(c, with_tasks=False)
        payload = b"".join((
            packer.pack_map_header(3), packer.pack("v"), packer.pack(PROTOCOL_VERSION),
            packer.pack("ok"), packer.pack(True), packer.pack("result"),
            packer.pack_map_header(len(head) + 1),
            *(packer.pack(x) for item in head.items() for x in item),
            packer.pack("tasks"), packer.pack_array_header(len(packed)), *packed))
        if len(payload) > MAX_FRAME:
            raise FrameTooLarge(f"the state of {len(packed)} tasks is {len(payload)} bytes, "
                                f"over the {MAX_FRAME}-byte limit")
        return HEADER.pack(len(payload)) + payload, cost + time.perf_counter() - began

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(self.write_timeout):
            await writer.drain()

    async def stop(self) -> None:
        """Stop accepting, then end open connections (in-flight replies are written)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=2)
