"""The test toolkit: a real meowd on a real socket, the real `meow` CLI, and waits that
poll for a condition instead of sleeping a fixed time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meowcli.client import Client
from meowd.core.paths import resolve_paths

BIN = Path(sys.executable).parent


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def dead(pid: int) -> bool:
    """The process is gone, or a zombie (it has exited; reaping is its parent's job)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] == "Z"
    except FileNotFoundError:
        return True


ROOT = Path(__file__).resolve().parent.parent


def spawn_into_cgroup_prefix() -> list[str] | None:
    """How to run a Python whose glibc can start a child straight into a cgroup (>= 2.39,
    meowd/executors/spawn.py): [] where the system's can, the loader of the glibc that
    .ci/ensure-glibc fetched where it cannot, None where neither is there."""
    import ctypes

    if hasattr(ctypes.CDLL(None), "posix_spawnattr_setcgroup_np"):
        return []
    lib = ROOT / ".glibc" / "lib"
    loader = lib / "ld-linux-x86-64.so.2"
    return [str(loader), "--library-path", str(lib)] if loader.exists() else None


class MeowEnv:
    """One isolated meow installation: its own MEOW_HOME, daemon and fake GPUs."""

    def __init__(self, home: Path, fake_gpus: str | None) -> None:
        self.home = home
        self.prefix: list[str] = []
        """Runs meowd under another loader (a newer glibc: `spawn_into_cgroup_prefix`)."""
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MEOW_")}
        self.env["MEOW_HOME"] = str(home)
        # Each test daemon its own GPU ledger and fake GPUs (the default shares both
        # machine-wide); tests of sharing point several daemons at one directory.
        self.env["MEOW_LEDGER"] = "private"
        if fake_gpus:
            self.env["MEOW_FAKE_GPUS"] = fake_gpus
        self.daemon: subprocess.Popen[bytes] | None = None
        self.paths = resolve_paths(self.env)

    # -- daemon --------------------------------------------------------------------------
    def start(self) -> subprocess.Popen[bytes]:
        with open(self.home / "test-daemon.log", "ab") as log:
            self.daemon = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "meowd"] if self.prefix
                else [str(BIN / "meowd")], env=self.env, stdout=log, stderr=log,
                start_new_session=True,
            )
        wait_for(self._answers, 15, "meowd to answer")
        return self.daemon

    def _answers(self) -> bool:
        if self.daemon is not None and self.daemon.poll() is not None:
            raise AssertionError(f"meowd exited: {self.daemon_log()}")
        try:
            Client(self.paths, timeout=2).connect().close()
            return True
        except Exception:
            return False

    def kill9(self) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait(10)
        self.daemon = None

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(15)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
        self.daemon = None

    def daemon_log(self) -> str:
        path = self.home / "test-daemon.log"
        return path.read_text() if path.exists() else ""

    # -- client --------------------------------------------------------------------------
    def client(self) -> Client:
        return Client(self.paths, timeout=30).connect()

    def meow(self, *args: str, check: bool = True, cwd: str | None = None,
             timeout: float = 30, env_extra: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "meow"), *args], env={**self.env, **(env_extra or {})},
            capture_output=True, text=True, cwd=cwd, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"meow {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def tasks(self) -> dict[str, dict[str, Any]]:
        return {t["fullname"]: t for t in json.loads(self.meow("list", "--json").stdout)}

    def status(self, name: str) -> str:
        return self.tasks()[name]["status"]

    def wait_status(self, name: str, *statuses: str, timeout: float = 15) -> dict[str, Any]:
        return wait_for(
            lambda: (t := self.tasks().get(name)) and t["status"] in statuses and t,
            timeout, f"{name} to become {'/'.join(statuses)}",
        )

    def kill_leftovers(self) -> None:
        """Kill task processes still running (tests leave none behind)."""
        with self.client() as c:
            running = [t["fullname"] for t in c.list() if t["status"] == "running"]
        if running:
            self.meow("kill", "-A", "-f", check=False)


def _make_env(fake_gpus: str | None) -> Iterator[MeowEnv]:
    home = Path(tempfile.mkdtemp(prefix="meow-t-"))
    env = MeowEnv(home, fake_gpus)
    try:
        yield env
    finally:
        running = env.daemon is not None and env.daemon.poll() is None
        if running or (env.daemon is None and env._answers()):  # (or one the CLI started)
            try:
                env.meow("exit", "--kill", check=False, timeout=30)
            except subprocess.TimeoutExpired:
                pass
        env.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def meow_env(request: pytest.FixtureRequest) -> Iterator[MeowEnv]:
    """A started daemon with 2 fake 24 GiB GPUs (override with @pytest.mark.fake_gpus)."""
    marker = request.node.get_closest_marker("fake_gpus")
    gpus = marker.args[0] if marker else "2x24GiB"
    for env in _make_env(gpus):
        env.start()
        yield env


@pytest.fixture
def meow_home() -> Iterator[MeowEnv]:
    """An isolated home with no daemon started and fake GPUs configured."""
    yield from _make_env("2x24GiB")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fake_gpus(spec): fake GPUs for the meow_env daemon")
