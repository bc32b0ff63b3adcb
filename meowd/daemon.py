"""The daemon's lifecycle in named phases: startup, run, shutdown."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from pathlib import Path

from meowd import systemd
from meowd.config import Settings
from meowd.controller import Controller
from meowd.core.paths import Paths
from meowd.devices import DeviceBackend, open_backend
from meowd.server import OwnSocket, Server, bind_socket
from meowd.store import Store

log = logging.getLogger("meowd")


class AlreadyRunning(RuntimeError):
    pass


def _take_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = path.read_text().strip() or "?"
        raise AlreadyRunning(f"another meowd (pid {pid}) is running for {path.parent}") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _private_files(paths: Paths) -> None:
    """State files are 0600: create the database so (SQLite gives its -wal and -shm the
    database's mode), and tighten files an older meowd left 0644."""
    os.close(os.open(paths.database, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for path in (paths.database, paths.database.with_name("meow.db-wal"),
                 paths.database.with_name("meow.db-shm"), paths.daemon_log):
        try:
            if path.stat().st_uid == os.getuid():
                os.chmod(path, 0o600)
        except OSError:
            pass


class Daemon:
    def __init__(self, paths: Paths, settings: Settings) -> None:
        self.paths = paths
        self.settings = settings
        self._exit = asyncio.Event()
        self._kill_tasks = False
        self._lock_fd: int | None = None
        self.store: Store | None = None
        self.backend: DeviceBackend | None = None
        self.controller: Controller | None = None
        self.server: Server | None = None
        self._own_socket: OwnSocket | None = None

    def request_exit(self, kill_tasks: bool = False) -> None:
        self._kill_tasks = self._kill_tasks or kill_tasks
        self._exit.set()

    async def serve(self) -> None:
        await self.startup()
        try:
            async with asyncio.TaskGroup() as group:
                loop_task = group.create_task(self.controller.run())
                await self._exit.wait()
                loop_task.cancel()
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        self.paths.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.paths.state, 0o700)
        self.paths.tasks.mkdir(exist_ok=True, mode=0o700)
        self._lock_fd = _take_lock(self.paths.lock)
        _private_files(self.paths)
        self.store = Store(self.paths.database)
        self.backend = await asyncio.to_thread(open_backend, self.settings, self.paths)
        self.controller = Controller(self.paths, self.settings, self.store, self.backend)
        self.controller.on_idle = self.request_exit  # setting shutdown_on_complete
        await self.controller.start()
        self.server = Server(self.controller, self.request_exit)
        inherited = systemd.inherited_socket()
        if inherited is None:
            self._own_socket = bind_socket(self.paths.socket)
        await self.server.start(inherited or self._own_socket.sock)
        log.info(
            "meowd %d listening on %s%s (devices: %s, state: %s)", os.getpid(), self.paths.socket,
            " (socket from systemd)" if inherited else "",
            self.backend.name if self.backend else "none", self.paths.state,
        )
        systemd.notify(f"READY=1\nSTATUS=listening on {self.paths.socket}\nMAINPID={os.getpid()}")

    async def shutdown(self) -> None:
        log.info("stopping (%s running tasks)",
                 "killing" if self._kill_tasks else "leaving")
        systemd.notify("STOPPING=1")
        if self.server:
            await self.server.stop()
        if self._own_socket:  # a socket from systemd stays: systemd owns it
            self._own_socket.remove()
        if self.controller:
            await self.controller.stop(self._kill_tasks)
        if self.backend:
            self.backend.close()
        if self.store:
            self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        log.info("stopped")
