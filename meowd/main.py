"""Entry point of `meowd` (and `meow run`): the only place that picks uvloop and installs
signal handlers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from meowd import __version__
from meowd.config import load_settings
from meowd.core.errors import MeowError
from meowd.core.paths import resolve_paths
from meowd.daemon import AlreadyRunning, Daemon
from meowd.executors.local import set_task_umask
from meowd.secrets import LOG_FILTER

log = logging.getLogger("meowd")

UMASK = 0o077
"""meowd's files (database, its -wal and -shm, logs, config, task files) are created
0600 in 0700 directories, whatever umask started it, as PostgreSQL does."""


def _loop_factory():
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay usable
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def _serve(daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    hits = {"n": 0}

    def on_signal(sig: int) -> None:
        hits["n"] += 1
        log.info("received %s", signal.Signals(sig).name)
        if hits["n"] > 1:  # a second Ctrl-C: stop waiting for anything
            log.warning("second signal: exiting now")
            raise SystemExit(1)
        daemon.request_exit()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    await daemon.serve()


def run_daemon(verbose: bool = False) -> int:
    """Run the daemon in the foreground until asked to stop. Returns an exit status."""
    set_task_umask(os.umask(UMASK))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(LOG_FILTER)  # secret env values never reach the log
    paths = resolve_paths()
    try:
        settings = load_settings(paths)
        daemon = Daemon(paths, settings)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(daemon))
    except AlreadyRunning as exc:
        print(f"meowd: {exc}", file=sys.stderr)
        return 3
    except MeowError as exc:
        print(f"meowd: {exc.message}", file=sys.stderr)
        return 2
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="meowd", description="The meow daemon: runs queued tasks on free GPUs."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"meowd {__version__}")
    args = parser.parse_args()
    sys.exit(run_daemon(args.verbose))
