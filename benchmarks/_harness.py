"""Start a throwaway meowd (fake GPUs) for a benchmark and stop it afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meowcli.client import Client, NotRunning
from meowd.core.paths import resolve_paths

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def compile_meow() -> None:
    """Compile meow's modules (as `pip install` does for a wheel) before timing the CLI:
    an editable install under PYTHONDONTWRITEBYTECODE=1 would compile them on every call
    (~10 ms of CPU per call on a 2-core box), which no installed meow does."""
    import compileall

    for package in ("meowcli", "meowd"):
        compileall.compile_dir(ROOT / package, quiet=1)


def wait_up(paths, tries: int = 500) -> None:
    """Until meowd answers on its socket (or `tries` x 10 ms have passed)."""
    for _ in range(tries):
        try:
            Client(paths).connect().close()
            return
        except NotRunning:
            time.sleep(0.01)


@contextmanager
def daemon(fake_gpus: str = "4x80GiB"):
    home = Path(tempfile.mkdtemp(prefix="meow-bench-"))
    env = {**os.environ, "MEOW_HOME": str(home), "MEOW_FAKE_GPUS": fake_gpus}
    with open(home / "log", "wb") as log:
        proc = subprocess.Popen([str(BIN / "meowd")], env=env, stdout=subprocess.DEVNULL,
                                stderr=log, start_new_session=True)
    paths = resolve_paths(env)
    wait_up(paths)
    try:
        yield env, paths
    finally:
        stop(paths, proc, home)


def stop(paths, proc: subprocess.Popen, home: Path) -> None:
    """`meow exit --kill` (or SIGKILL if it does not answer), then forget its home."""
    try:
        c = Client(paths, timeout=60).connect()
        c.exit(kill=True)
        c.wait_closed()
    except Exception:
        proc.kill()
    proc.wait(30)
    shutil.rmtree(home, ignore_errors=True)
