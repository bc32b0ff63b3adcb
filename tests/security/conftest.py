"""Tools for the security tests: a second unix user (the attacker) and a private /tmp.

The planted-directory attacks happen at the real default path, /tmp/meow-$UID. The tests
run as root, so that path is /tmp/meow-0, which other meow users of this machine may
use: each test gets its own /tmp instead (a tmpfs in a private mount namespace, held by
a `sleep` process), and everything the victim and the attacker run enters it (nsenter).
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN

REPO = Path(__file__).parents[2]
ATTACKER = "meowtest"
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as a second user")


@pytest.fixture(scope="session")
def attacker_user() -> pwd.struct_passwd:
    """The second user, created if missing (other sessions may race us to it)."""
    if os.getuid() != 0:
        pytest.skip("needs root to create and become a second user")
    try:
        return pwd.getpwnam(ATTACKER)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed")
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                    "--shell", "/usr/sbin/nologin", ATTACKER], capture_output=True)
    try:
        return pwd.getpwnam(ATTACKER)
    except KeyError:
        pytest.skip(f"could not create user {ATTACKER}")


class PrivateTmp:
    """A mount namespace with its own empty /tmp (mode 1777, as the real one)."""

    def __init__(self) -> None:
        # What the tests run from, if under /tmp (a venv in /tmp/v313), stays visible:
        # held open before /tmp is covered, then bind-mounted back in place.
        keep = sorted({os.path.realpath(d) for d in (sys.prefix, sys.base_prefix, REPO)
                       if os.path.realpath(d).startswith("/tmp/")})[:6]
        script = [f"exec {3 + n}<{shlex.quote(d)} || exit 1" for n, d in enumerate(keep)]
        script.append("mount -t tmpfs -o mode=1777 meow-private-tmp /tmp || exit 1")
        script += [f"mkdir -p {shlex.quote(d)} && mount -c --bind /proc/self/fd/{3 + n} "
                   f"{shlex.quote(d)} && exec {3 + n}<&- || exit 1" for n, d in enumerate(keep)]
        script.append("echo ready && exec sleep infinity")
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             "\n".join(script)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            error = self.holder.stderr.read() if self.holder.stderr else ""
            self.holder.wait()
            pytest.skip(f"cannot make a private /tmp (needs CAP_SYS_ADMIN): {error.strip()}")
        self.root = Path(f"/proc/{self.holder.pid}/root")
        self.victim_home = "/tmp/victim-home"
        self.run(["mkdir", "-m", "700", self.victim_home])
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("MEOW_", "XDG_", "LISTEN_", "NOTIFY_"))}
        self.env["HOME"] = self.victim_home

    def path(self, inside: str) -> Path:
        """`inside` (a path in the namespace) as this process can reach it."""
        return self.root / inside.lstrip("/")

    def command(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", "--", *argv]

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("env", getattr(self, "env", None))
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=60,
                              cwd=REPO, **kwargs)

    def meow(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The victim: root running the real CLI with no MEOW_HOME nor XDG_RUNTIME_DIR,
        so its socket is /tmp/meow-0/meowd.sock."""
        return self.run([str(BIN / "meow"), *args])

    def meowd(self) -> subprocess.CompletedProcess[str]:
        return self.run([str(BIN / "meowd")])

    def attack(self, mode: str, user: pwd.struct_passwd, *extra: str) -> Attack:
        return Attack(self, mode, user, list(extra))

    def close(self) -> None:
        # Stop whatever still runs in the namespace (a victim's daemon): our processes.
        mine = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            if pid == self.holder.pid:
                continue
            try:
                if os.readlink(f"/proc/{pid}/ns/mnt") == mine:
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.holder.kill()
        self.holder.communicate()


class Attack:
    """The attacker's process (tests/security/attacker.py) inside the namespace."""

    def __init__(self, tmp: PrivateTmp, mode: str, user: pwd.struct_passwd,
                 extra: list[str]) -> None:
        self.proc = subprocess.Popen(
            tmp.command([str(BIN / "python"), "-m", "tests.security.attacker", mode,
                         str(user.pw_uid), str(user.pw_gid), "/tmp/meow-0/meowd.sock",
                         *extra]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=REPO)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise AssertionError(f"attacker failed: {line} {self.proc.stderr.read()}")

    def report(self) -> dict[str, object]:
        """Stop listening; what did the attacker get?"""
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return json.loads(out) if out.strip() else {}


@pytest.fixture
def private_tmp(attacker_user: pwd.struct_passwd) -> Iterator[PrivateTmp]:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("unshare and nsenter (util-linux) are needed for a private /tmp")
    tmp = PrivateTmp()
    try:
        yield tmp
    finally:
        tmp.close()


def wait_gone(path: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and path.exists():
        time.sleep(0.02)
    return not path.exists()
