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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

MAX_SOCKET_PATH = 100


class Paths:
    """A plain class, not a dataclass/NamedTuple, and pathlib only on demand: `meow`'s
    fast paths need only `socket_path` (a str), and importing pathlib (with re, urllib,
    ipaddress) costs ~20% of Python's own start-up. Attributes are `Path`s as before."""

    __slots__ = ("_config_files", "_socket", "_state", "_state_path", "_tasks_path")

    def __init__(self, state: str | os.PathLike[str], socket: str | os.PathLike[str],
                 config_files: tuple[str | os.PathLike[str], ...]) -> None:
        self._state = os.fspath(state)
        self._socket = os.fspath(socket)
        self._config_files = tuple(os.fspath(p) for p in config_files)
        self._state_path: Path | None = None  # built once: the daemon asks per task
        self._tasks_path: Path | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Paths) and (self._state, self._socket, self._config_files) \
            == (other._state, other._socket, other._config_files)

    def __repr__(self) -> str:
        return f"Paths(state={self._state}, socket={self._socket})"

    @property
    def socket_path(self) -> str:
        """The socket, as a str: what the client connects to, without pathlib."""
        return self._socket

    @property
    def state(self) -> Path:
        if self._state_path is None:
            self._state_path = _path(self._state)
        return self._state_path

    @property
    def socket(self) -> Path:
        return _path(self._socket)

    @property
    def config_files(self) -> tuple[Path, ...]:
        return tuple(map(_path, self._config_files))

    @property
    def database(self) -> Path:
        return self.state / "meow.db"

    @property
    def tasks(self) -> Path:
        if self._tasks_path is None:
            self._tasks_path = self.state / "tasks"
        return self._tasks_path

    @property
    def daemon_log(self) -> Path:
        return self.state / "meowd.log"

    @property
    def lock(self) -> Path:
        return self.state / "meowd.lock"

    @property
    def fake_gpu_holds(self) -> Path:
        return self.state / "fake-gpus"


def _path(text: str) -> Path:
    from pathlib import Path

    return Path(text)


def clean(*parts: str) -> str:
    """`str(Path(*parts))` without pathlib: joined, empty and `.` components dropped,
    `..` kept, one leading slash (two stay two, as POSIX allows). Client and daemon must
    spell the socket alike: a long one is renamed by a hash of this text."""
    path = os.path.join(*parts) if parts else ""
    root = "//" if path.startswith("//") and not path.startswith("///") else \
        "/" if path.startswith("/") else ""
    body = "/".join(p for p in path.split("/") if p and p != ".")
    return root + body if root or body else "."


def resolve_paths(environ: Mapping[str, str] | None = None, uid: int | None = None) -> Paths:
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    home = env.get("HOME") or "/tmp"
    config_home = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    if env.get("MEOW_HOME"):
        state = clean(env["MEOW_HOME"])
        if state.startswith("~"):  # as Path.expanduser: the first component only
            first, sep, rest = state.partition("/")
            expanded = os.path.expanduser(first)
            if expanded.startswith("~"):
                raise RuntimeError("Could not determine home directory.")
            state = clean(expanded, rest) if sep else clean(expanded)
        if not state.startswith("/"):
            state = clean(os.getcwd(), state)
        # The socket's directory is never a symlink (both sides refuse one, see
        # unsafe_directory); a MEOW_HOME the user made a symlink is followed here, once.
        socket = clean(os.path.realpath(state), "meowd.sock")
        configs = (clean(state, "config.toml"),)
    else:
        state = clean(env.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state"),
                      "meow")
        runtime = env.get("XDG_RUNTIME_DIR")
        socket = clean(runtime, "meow", "meowd.sock") if runtime else \
            f"/tmp/meow-{uid}/meowd.sock"
        configs = (clean(config_home, "meow", "config.toml"),)
    if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
        import hashlib  # lazily: loading OpenSSL costs `meow create` ~10 ms

        digest = hashlib.sha256(os.fsencode(socket)).hexdigest()[:16]
        socket = f"/tmp/meow-{uid}/{digest}.sock"
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
