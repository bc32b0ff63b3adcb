"""posix_spawn straight into a cgroup: glibc >= 2.39's `POSIX_SPAWN_SETCGROUP`.

Moving a running process into a cgroup (writing its pid to `cgroup.procs`, as the task
wrapper does) takes the kernel's cgroup_threadgroup_rwsem for writing, and on an otherwise
quiet machine that waits for an RCU grace period: 8-15 ms of every isolated start here
(measured: spawn and join 9.7 ms, spawn alone 1.5 ms). A child cloned into its cgroup
(clone3's CLONE_INTO_CGROUP) takes only the read side, so it costs nothing extra, and the
child is in its cgroup from its first instruction, so nothing can escape before the join.

Python's os.posix_spawn has no cgroup option, so this calls glibc's own through ctypes:
one C call does the clone, the file actions, the session and the signal setup, with no
Python running in the child (a raw clone3 from Python would run the interpreter in a
child of a threaded process, which can deadlock on a lock another thread held). Where
glibc is older (Debian 12 has 2.36) `DirectSpawn.load()` returns None and the wrapper
joins its cgroup as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterable, Mapping, Sequence

# <spawn.h>
POSIX_SPAWN_SETSIGDEF = 0x04
POSIX_SPAWN_SETSIGMASK = 0x08
POSIX_SPAWN_SETSID = 0x80
POSIX_SPAWN_SETCGROUP = 0x100
# Opaque glibc types, sized generously (x86-64 and arm64 glibc: 80, 336 and 128 bytes).
_FILE_ACTIONS_SIZE = 256
_ATTR_SIZE = 512
_SIGSET_SIZE = 256

FileAction = tuple[int, str, int, int]
"""(fd, path, open flags, mode): the child opens `path` as `fd` before it execs."""


def _cstrings(items: Iterable[str], what: str) -> ctypes.Array[ctypes.c_char_p]:
    encoded = [os.fsencode(item) for item in items]
    for item in encoded:
        if b"\0" in item:  # C would cut the string there, silently
            raise ValueError(f"embedded null byte in {what}")
    return (ctypes.c_char_p * (len(encoded) + 1))(*encoded, None)


class DirectSpawn:
    """glibc's posix_spawn with a cgroup to start the child in."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._libc = libc

    @classmethod
    def load(cls) -> DirectSpawn | None:
        """The running glibc's posix_spawn if it can start a child in a cgroup, else None.
        (`MEOW_CGROUP_JOIN=1` forces None: the older way, for comparison and tests.)"""
        if os.environ.get("MEOW_CGROUP_JOIN"):
            return None
        try:
            libc = ctypes.CDLL(None)  # errors come back as return values
            libc.posix_spawnattr_setcgroup_np  # noqa: B018 (glibc >= 2.39)
        except (OSError, AttributeError):
            return None
        return cls(libc)

    def spawn(self, path: str, argv: Sequence[str], env: Mapping[str, str],
              files: Sequence[FileAction], default_signals: Sequence[int],
              cgroup: str) -> int:
        """Start `path` with `argv` and `env` in a new session, with an empty signal mask,
        `default_signals` reset, `files` opened, inside the cgroup folder `cgroup`.
        Returns the pid; raises OSError (ENOENT, EACCES, ... or the cgroup's error) or
        ValueError (a NUL byte, '=' in a variable's name), as os.posix_spawn does."""
        for key in env:
            if not key or "=" in key:
                raise ValueError(f"illegal environment variable name {key!r}")
        c_argv = _cstrings(argv, "argv")
        c_env = _cstrings((f"{k}={v}" for k, v in env.items()), "the environment")
        c_path = os.fsencode(path)
        libc = self._libc
        actions = ctypes.create_string_buffer(_FILE_ACTIONS_SIZE)
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        empty = ctypes.create_string_buffer(_SIGSET_SIZE)
        defaults = ctypes.create_string_buffer(_SIGSET_SIZE)
        group_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        _check(libc.posix_spawn_file_actions_init(actions))
        try:
            _check(libc.posix_spawnattr_init(attr))
            try:
                for fd, file, flags, mode in files:
                    name = _cstrings([file], "a file name")[0]
                    _check(libc.posix_spawn_file_actions_addopen(
                        actions, fd, name, flags, mode))
                libc.sigemptyset(empty)
                libc.sigemptyset(defaults)
                for sig in default_signals:
                    libc.sigaddset(defaults, int(sig))
                _check(libc.posix_spawnattr_setsigmask(attr, empty))
                _check(libc.posix_spawnattr_setsigdefault(attr, defaults))
                _check(libc.posix_spawnattr_setcgroup_np(attr, group_fd))
                _check(libc.posix_spawnattr_setflags(
                    attr, ctypes.c_short(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
                                         | POSIX_SPAWN_SETSID | POSIX_SPAWN_SETCGROUP)))
                pid = ctypes.c_int()
                # The GIL is released for the call: it returns once the child has exec'd.
                _check(libc.posix_spawn(ctypes.byref(pid), c_path, actions, attr,
                                        c_argv, c_env))
                return pid.value
            finally:
                libc.posix_spawnattr_destroy(attr)
        finally:
            libc.posix_spawn_file_actions_destroy(actions)
            with contextlib.suppress(OSError):  # never a second start over a close
                os.close(group_fd)


def _check(error: int) -> None:
    """posix_spawn* return an errno value (0 for success) instead of setting errno."""
    if error:
        raise OSError(error, os.strerror(error))
