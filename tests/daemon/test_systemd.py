"""systemd: units that pass `systemd-analyze verify`, socket activation (LISTEN_FDS) and
sd_notify, exercised exactly as systemd would start meowd."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from meowd.systemd import unit_files
from tests.conftest import BIN, MeowEnv, wait_for

REPO = Path(__file__).parents[2]
needs_verify = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                  reason="systemd-analyze not installed (make test installs it)")


def test_repo_units_are_the_rendered_templates():
    units = unit_files("%h/.local/bin/meowd", "%t/meow/meowd.sock", {})
    for name, text in units.items():
        assert (REPO / "systemd" / name).read_text() == text


@needs_verify
def test_installed_units_pass_systemd_analyze_verify(meow_home: MeowEnv, tmp_path: Path):
    out = meow_home.meow("daemon", "install-systemd", "--dir", str(tmp_path)).stdout
    assert "wrote" in out and "systemctl --user" in out
    service = (tmp_path / "meowd.service").read_text()
    for line in ("Type=notify", "KillMode=process", "Restart=on-failure",
                 f"Environment=MEOW_HOME={meow_home.home}", f"ExecStart={BIN / 'meowd'}"):
        assert line in service
    assert f"ListenStream={meow_home.paths.socket}" in (tmp_path / "meowd.socket").read_text()
    result = subprocess.run(["systemd-analyze", "verify", "meowd.socket", "meowd.service"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@needs_verify
def test_system_wide_units_pass_verify(tmp_path: Path):
    for name in ("meowd@.service", "meowd@.socket"):
        text = (REPO / "systemd" / "system" / name).read_text()
        text = text.replace("/usr/local/bin/meowd", str(BIN / "meowd"))
        (tmp_path / name.replace("@", "@alice")).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "meowd@alice.socket",
                             "meowd@alice.service"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_socket_activation_and_sd_notify(meow_home: MeowEnv, tmp_path: Path):
    # systemd's side: a listening socket at the configured path, a notify socket.
    path = meow_home.paths.socket
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(15)
    fd = listener.fileno()

    def as_systemd() -> None:  # the socket becomes fd 3, as sd_listen_fds expects
        os.dup2(fd, 3)
        os.set_inheritable(3, True)

    env = {**meow_home.env, "LISTEN_FDS": "1", "NOTIFY_SOCKET": str(tmp_path / "notify")}
    log = open(meow_home.home / "test-daemon.log", "ab")  # noqa: SIM115 - closed below
    # LISTEN_PID must be meowd's own pid: a shell sets it to $$, then execs meowd.
    meow_home.daemon = subprocess.Popen(
        ["/bin/sh", "-c", f'export LISTEN_PID=$$; exec "{BIN / "meowd"}"'], env=env,
        preexec_fn=as_systemd, pass_fds=(fd, 3), stdout=log, stderr=log,
        start_new_session=True,
    )
    try:
        try:
            states = notify.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(meow_home.daemon_log()) from None
        assert "READY=1" in states and f"MAINPID={meow_home.daemon.pid}" in states
        assert "(socket from systemd)" in meow_home.daemon_log()
        meow_home.meow("create", "echo hi", "-n", "t", "-c", "0")
        meow_home.wait_status("t", "done")
        meow_home.meow("exit")
        assert "STOPPING=1" in notify.recv(4096).decode()
        assert meow_home.daemon.wait(15) == 0
        assert path.exists()  # systemd's socket is left in place for the next start
    finally:
        log.close()
        listener.close()
        notify.close()
        wait_for(lambda: meow_home.daemon.poll() is not None or meow_home.daemon.kill(), 5)
