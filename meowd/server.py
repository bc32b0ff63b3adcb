"""The Unix socket server: accept, check the peer, decode frames, dispatch, reply.

A bad frame or request gets an error reply and the connection carries on (the framing
keeps the stream in sync); only an oversized frame header closes it, since the stream
cannot be resynchronised. Nothing a client sends can stop the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path

from meowd.controller import Controller
from meowd.core.errors import FrameTooLarge, MeowError, PermissionDenied
from meowd.core.framing import FrameDecoder, decode_payload, encode_frame
from meowd.core.protocol import (
    ExitRequest,
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


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


def bind_socket(path: Path) -> socket.socket:
    """Bind a fresh 0600 socket in a 0700 directory, replacing a stale one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.parent.stat().st_uid != os.getuid():
        raise PermissionDenied(f"{path.parent} belongs to another user; refusing to listen there")
    os.chmod(path.parent, 0o700)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


class Server:
    def __init__(self, controller: Controller, on_exit: Callable[[bool], None],
                 idle_timeout: float = IDLE_TIMEOUT, write_timeout: float = WRITE_TIMEOUT,
                 ) -> None:
        self.controller = controller
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self._on_exit = on_exit
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._uid = os.getuid()

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_unix_server(self._connection, sock=sock, limit=2**20)

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
        decoder = FrameDecoder()
        errors = 0
        while True:
            async with asyncio.timeout(self.idle_timeout):
                data = await reader.read(65536)
            if not data:
                return
            try:
                frames = decoder.feed(data)
            except FrameTooLarge as exc:
                writer.write(encode_frame(error_reply(exc)))
                await self._drain(writer)
                return
            for payload in frames:
                exit_request, ok, subscribe = await self._answer(payload, writer)
                if subscribe is not None:
                    await self._push(subscribe, reader, writer)
                    return
                errors = 0 if ok else errors + 1
                if exit_request is not None:
                    self._on_exit(exit_request.kill)
                if errors >= MAX_CONSECUTIVE_ERRORS:
                    return  # a client sending only garbage gets cut off

    async def _answer(
        self, payload: bytes, writer: asyncio.StreamWriter
    ) -> tuple[ExitRequest | None, bool, SubscribeRequest | None]:
        """Decode, check and run one request, and write its reply; a valid subscribe is
        handed back instead (the caller streams states on this connection)."""
        request = None
        try:
            request = request_from_wire(decode_payload(payload))
            if isinstance(request, SubscribeRequest):
                return None, True, request
            reply = ok_reply(await dispatch(self.controller, request))
            ok = True
        except MeowError as exc:
            reply, ok = error_reply(exc), False
        except (sqlite3.OperationalError, OSError) as exc:
            # Disk full, read-only or vanished state: the request fails, meowd carries on.
            log.error("request %r could not be stored: %s", getattr(request, "op", "?"), exc)
            state = self.controller.paths.state
            reply, ok = error_reply(MeowError(
                f"meowd cannot write its state under {state}: {exc}")), False
        except Exception as exc:
            log.exception("request %r failed", getattr(request, "op", "?"))
            internal = MeowError(f"internal error: {type(exc).__name__}: {exc}")
            reply, ok = error_reply(internal), False
        writer.write(encode_frame(reply))
        await self._drain(writer)
        return (request if isinstance(request, ExitRequest) and ok else None), ok, None

    async def _push(self, request: SubscribeRequest, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        """Send the whole state now and after each change, until the client leaves."""
        gone = asyncio.ensure_future(reader.read(1))  # any byte or EOF ends the subscription
        try:
            while not gone.done():
                version = self.controller.version
                writer.write(encode_frame(ok_reply(self.controller.state())))
                await self._drain(writer)
                await asyncio.sleep(1 / request.max_rate)  # coalesce bursts of changes
                if self.controller.version == version:
                    await asyncio.wait([gone, asyncio.ensure_future(self.controller.changed())],
                                       return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()

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
