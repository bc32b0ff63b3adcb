"""Where meow keeps its state and socket. Pure: computed from the environment mapping given.

MEOW_HOME puts everything under one directory. Otherwise XDG: state in
$XDG_STATE_HOME/meow (~/.local/state/meow), the socket in $XDG_RUNTIME_DIR/meow/.
AF_UNIX paths are limited to ~108 bytes; a longer one moves to a short per-user
directory under /tmp, named by a hash of the long path so client and daemon agree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

MAX_SOCKET_PATH = 100


class Paths:
    """A plain class, not a dataclass/NamedTuple: importing those costs `meow create` time."""

    __slots__ = ("config_files", "socket", "state")

    def __init__(self, state: Path, socket: Path, config_files: tuple[Path, ...]) -> None:
        self.state = state
        self.socket = socket
        self.config_files = config_files

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Paths) and (self.state, self.socket, self.config_files) == (
            other.state, other.socket, other.config_files)

    def __repr__(self) -> str:
        return f"Paths(state={self.state}, socket={self.socket})"

    @property
    def database(self) -> Path:
        return self.state / "meow.db"

    @property
    def tasks(self) -> Path:
        return self.state / "tasks"

    @property
    def daemon_log(self) -> Path:
        return self.state / "meowd.log"

    @property
    def lock(self) -> Path:
        return self.state / "meowd.lock"

    @property
    def fake_gpu_holds(self) -> Path:
        return self.state / "fake-gpus"


def resolve_paths(environ: Mapping[str, str] | None = None, uid: int | None = None) -> Paths:
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    home = Path(env.get("HOME") or "/tmp")
    config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    if env.get("MEOW_HOME"):
        state = Path(env["MEOW_HOME"]).expanduser().absolute()
        socket = state / "meowd.sock"
        configs: tuple[Path, ...] = (state / "config.toml",)
    else:
        state = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state") / "meow"
        runtime = env.get("XDG_RUNTIME_DIR")
        socket = (Path(runtime) / "meow" if runtime else Path(f"/tmp/meow-{uid}")) / "meowd.sock"
        configs = (config_home / "meow" / "config.toml",)
    if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
        import hashlib  # lazily: loading OpenSSL costs `meow create` ~10 ms

        digest = hashlib.sha256(os.fsencode(socket)).hexdigest()[:16]
        socket = Path(f"/tmp/meow-{uid}") / f"{digest}.sock"
    return Paths(state=state, socket=socket, config_files=configs)
