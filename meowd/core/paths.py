"""Where meow keeps its state and socket. Pure: computed from the environment mapping given.

MEOW_HOME puts everything under one directory. Otherwise XDG: state in
$XDG_STATE_HOME/meow (~/.local/state/meow), the socket in $XDG_RUNTIME_DIR/meow/.
AF_UNIX paths are limited to ~108 bytes; a longer one moves to a short per-user
directory under /tmp, named by a hash of the long path so client and daemon agree.

`unsafe_directory` judges the directory that holds the socket (client and daemon both
refuse one another user could have planted or can write into).
"""

from __future__ import annotations

import os
import stat
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
        # The socket's directory is never a symlink (both sides refuse one, see
        # unsafe_directory); a MEOW_HOME the user made a symlink is followed here, once.
        socket = Path(os.path.realpath(state)) / "meowd.sock"
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


def unsafe_directory(st: os.stat_result, uid: int, *, root_ok: bool = False) -> str | None:
    """Why a directory with this lstat() result must not hold the socket, or None.

    As OpenSSH's StrictModes: not a symlink, owned by `uid` (or by root when `root_ok`,
    as for a system-wide daemon's directory), writable by nobody else. Group write is
    tolerated only for a user private group (named as the user, no other members), the
    default on Debian and Ubuntu with umask 002.
    """
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != uid and not (root_ok and st.st_uid == 0):
        return f"belongs to {user_name(st.st_uid)}, not to you"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o002 or (mode & 0o020 and not _private_group(st.st_gid, uid)):
        return f"is writable by other users (mode {mode:04o})"
    return None


def user_name(uid: int) -> str:
    import pwd

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _private_group(gid: int, uid: int) -> bool:
    import grp
    import pwd

    try:
        user, group = pwd.getpwuid(uid), grp.getgrgid(gid)
    except KeyError:
        return False
    return group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}
