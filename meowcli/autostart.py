"""Connect to meowd, starting it first when none runs, and say so on stderr.

Every command that needs the queue starts the daemon this way (the queue lives in
SQLite; only meowd reads and writes it). A first start for a home on a machine without
an NVIDIA driver also turns on fake GPUs for that home, as `make demo` does, in one
line. Kept light: `meow create` comes through here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from meowcli.connection import Connection, NotRunning, start_daemon
from meowd.core.framing import PROTOCOL_VERSION
from meowd.core.paths import Paths, resolve_paths

NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0")


def nvidia_driver_present(files: tuple[str, ...] = NVIDIA_DRIVER_FILES) -> bool:
    """Whether this machine has an NVIDIA kernel driver (without loading NVML)."""
    return any(os.path.exists(f) for f in files)


def first_run(paths: Paths, environ: Mapping[str, str]) -> str | None:
    """Before the first meowd of a home starts: on a machine without an NVIDIA driver,
    save `fake_gpus` in that home's config and return the line that says so. A home
    that has a config file or a queue, or MEOW_FAKE_GPUS, is left as it is."""
    if environ.get("MEOW_FAKE_GPUS") or paths.database.exists() or any(
            p.exists() for p in paths.config_files) or nvidia_driver_present():
        return None
    from meowd.config import save_setting
    from meowd.core.settings import DEFAULT_FAKE_GPUS

    path = save_setting(paths, "fake_gpus", DEFAULT_FAKE_GPUS)
    return (f"no NVIDIA GPU here, so it simulates {DEFAULT_FAKE_GPUS} fake GPUs for this "
            f"home, as `make demo` does (fake_gpus in {path}; `meow set fake_gpus none; "
            "meow exit` turns them off)")


def open_or_start(cls: type[Connection] = Connection, timeout: float | None = 60.0,
                  ) -> Connection:
    paths = resolve_paths()
    connection = cls(paths, timeout)
    try:
        return connection.connect()
    except NotRunning:
        pass
    note = first_run(paths, os.environ)
    start_daemon(paths)
    connection.connect()
    info = connection.call_wire({"v": PROTOCOL_VERSION, "op": "ping", "args": {}})
    backend = info.get("backend")  # type: ignore[union-attr]
    gpus = {"nvml": "NVIDIA GPUs", "fake": "fake GPUs", None: "no GPUs"}.get(backend, backend)
    print(f"meow: meowd was not running; started it (pid {info['pid']}"  # type: ignore[index]
          + (f"); {note}" if note else f", {gpus})"), file=sys.stderr)
    return connection
