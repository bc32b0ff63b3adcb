"""A real single-node Slurm for the tests in this folder: started once per session by
local-slurm.sh (munged + slurmctld + slurmd, 4 fake GPUs through GRES) in a private directory
on free ports, stopped at the end. Skipped, saying why, where it cannot run (not root, Slurm
not installed: `.ci/ensure-slurm` installs it on Debian)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop

HERE = Path(__file__).parent
SCRIPT = HERE / "local-slurm.sh"
GPUS = 4
NEEDED = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel",
          "scontrol", "sinfo")


@dataclass(frozen=True)
class SlurmCluster:
    dir: Path
    conf: Path
    gpus: int
    env: dict[str, str]
    """The environment of the local script (LOCAL_SLURM_*)."""

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A Slurm client command against this cluster."""
        return subprocess.run(args, capture_output=True, text=True, check=check, timeout=60,
                              env={**os.environ, "SLURM_CONF": str(self.conf)})

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.dir / "log" / name
            if path.exists():
                out.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(out)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """The tests here run on uvloop, the loop meowd runs on."""
    return {"uvloop": uvloop.new_event_loop}


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _why_not() -> str | None:
    if not sys.platform.startswith("linux"):
        return "local Slurm runs on Linux only"
    if os.geteuid() != 0:
        return "local Slurm needs root (slurmd must run jobs as their user)"
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [b for b in NEEDED if shutil.which(b, path=path) is None]
    if missing:
        return f"Slurm not installed (missing {' '.join(missing)}): run .ci/ensure-slurm as root"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    why = _why_not()
    if why:
        pytest.skip(why)
    directory = Path(tempfile.mkdtemp(prefix="meow-slurm-"))
    ctld, slurmd = _free_ports(2)
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin",
           "LOCAL_SLURM_DIR": str(directory), "LOCAL_SLURM_GPUS": str(GPUS),
           "LOCAL_SLURM_CTLD_PORT": str(ctld), "LOCAL_SLURM_SLURMD_PORT": str(slurmd)}
    started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True,
                             text=True, timeout=120)
    cluster = SlurmCluster(directory, directory / "etc" / "slurm.conf", GPUS, env)
    if started.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"local Slurm did not start:\n{started.stdout}{started.stderr}")
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # for executors and daemons under test
    try:
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)
