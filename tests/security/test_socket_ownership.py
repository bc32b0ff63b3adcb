"""Which socket file a meowd may remove (issue 18), and the client's checks of a
directory that is the user's own but not private (issue 11)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess

from meowcli.client import Client
from meowd.core.paths import Paths
from tests.conftest import BIN, MeowEnv
from tests.security.conftest import wait_gone


def test_meowd_removes_only_the_socket_it_made(meow_env: MeowEnv):
    path = meow_env.paths.socket
    # Someone moves meowd's socket aside and puts another one at its path.
    os.rename(path, path.with_name("moved.sock"))
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(path))
    moved = Paths(meow_env.paths.state, path.with_name("moved.sock"),
                  meow_env.paths.config_files)
    try:
        with Client(moved) as c:
            c.exit()
        assert meow_env.daemon.wait(15) == 0
        assert stat.S_ISSOCK(path.lstat().st_mode)  # not meowd's: left alone
    finally:
        other.close()


def test_meowd_removes_its_socket_on_exit(meow_env: MeowEnv):
    meow_env.meow("exit")
    assert meow_env.daemon.wait(15) == 0
    assert wait_gone(meow_env.paths.socket)


def test_meowd_leaves_a_live_socket_alone(meow_home: MeowEnv):
    """systemd's meowd.socket listens at the path, but this meowd was started by hand
    (no LISTEN_FDS): it refuses, and systemd's socket stays where it is."""
    path = meow_home.paths.socket
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(4)
    try:
        started = subprocess.run([str(BIN / "meowd")], env=meow_home.env, capture_output=True,
                                 text=True, timeout=60)
        assert started.returncode == 2
        assert started.stderr.strip().splitlines()[-1] == (
            f"meowd: another process listens on {path} (systemd's meowd.socket?): start "
            "meowd through it, or stop that process first")
        assert stat.S_ISSOCK(path.lstat().st_mode)
    finally:
        listener.close()


def test_client_refuses_its_own_directory_when_others_can_write_it(meow_env: MeowEnv):
    os.chmod(meow_env.home, 0o777)
    try:
        result = meow_env.meow("list", check=False)
    finally:
        os.chmod(meow_env.home, 0o700)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"meow: error: refusing to use {meow_env.home}: it is writable by other users "
        f"(mode 0777), so another user could be listening there; run chmod 700 "
        f"{meow_env.home}")
    assert meow_env.meow("list").returncode == 0


def test_a_meow_home_symlink_of_your_own_is_followed(meow_home: MeowEnv, tmp_path):
    """MEOW_HOME may be a link the user made: the socket lives in its target."""
    link = tmp_path / "meow-link"
    link.symlink_to(meow_home.home)
    env = {**meow_home.env, "MEOW_HOME": str(link)}
    created = subprocess.run([str(BIN / "meow"), "create", "true", "-n", "t", "-c", "0"],
                             env=env, capture_output=True, text=True, timeout=60)
    try:
        assert created.returncode == 0, created.stderr
        assert (meow_home.home / "meowd.sock").exists()
    finally:
        subprocess.run([str(BIN / "meow"), "exit"], env=env, capture_output=True, timeout=60)
