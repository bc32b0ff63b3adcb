"""Fake GPUs: a product feature for demos, dry runs and CI on machines without GPUs.

Any process can declare memory it "holds" on a fake GPU (`python -m meowd.devices.fake
hold --gpu 0 --mib 30000 -- sleep 60`); a hold that does not fit fails as CUDA would.
Holds are small files; the backend reports them per process, exactly as NVML reports
real allocations, and forgets a hold when its process exits (pid and start time
checked, so a reused pid never inherits a hold).

Like real GPUs, fake GPUs belong to the machine: every daemon with the same fake GPU
spec (any user, any meow home) sees the same holds, in the machine's shared directory
(`/var/tmp/meow-fake-<spec hash>-holds.*`), next to the GPU ledger of the same GPUs.
`MEOW_FAKE_GPUS_STATE=private` (or `MEOW_LEDGER=private`) keeps them per meow home, for
tests that need isolation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from meowd.core.errors import BadRequest
from meowd.core.settings import parse_fake_gpus
from meowd.core.units import format_mib
from meowd.devices import DeviceInfo, GpuProcess
from meowd.ledger import (
    boot_id,
    default_base,
    given_dir,
    ledger_scope,
    lock_file,
    proc,
    read_small,
    write_atomic,
)


class Holds:
    """Hold files in one directory: `<prefix>h<pid>-<gpu>-<random>`, each naming a process
    (pid + start time + boot id) and the MiB it holds on one GPU, mode 0644, owned by the
    holder. A hold counts while its process lives and belongs to the file's owner (so
    nobody can make another user's process look like a GPU hog); a dead hold is removed by
    whoever may (its owner, root)."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"Holds({self.directory / self.prefix}*)"

    def live(self) -> list[tuple[int, int, int]]:
        """(pid, GPU, MiB) of every live hold."""
        holds: list[tuple[int, int, int]] = []
        try:
            names = [e.name for e in os.scandir(self.directory)
                     if e.name.startswith(self.prefix + "h")]
        except OSError:
            return holds
        boot = boot_id()
        for name in names:
            read = read_small(str(self.directory / name), 4096)
            if read is None:
                continue
            data, st = read
            try:
                raw = json.loads(data)
                pid, ticks, gpu, mib = raw["pid"], raw["ticks"], raw["gpu"], raw["mib"]
                if not all(type(v) is int for v in (pid, ticks, gpu, mib)):
                    raise ValueError(raw)
                p = proc(pid) if raw["boot"] == boot else None
            except (ValueError, TypeError, KeyError):
                p = None
            if p is not None and p.ticks == ticks and p.uid == st.st_uid:
                holds.append((pid, gpu, mib))
            elif st.st_uid == os.getuid() or os.getuid() == 0:
                with contextlib.suppress(OSError):
                    os.unlink(self.directory / name)
        return holds

    def add(self, gpu: int, mib: int) -> None:
        """Record that this process holds `mib` MiB on `gpu`, for as long as it lives."""
        me = proc(os.getpid())
        assert me is not None
        record = {"boot": boot_id(), "pid": os.getpid(), "ticks": me.ticks, "gpu": gpu,
                  "mib": mib}
        name = f"{self.prefix}h{os.getpid()}-{gpu}-{secrets.token_hex(4)}"
        write_atomic(self.directory, name, json.dumps(record).encode())

    @contextlib.contextmanager
    def locked(self, timeout: float = 5.0) -> Iterator[None]:
        """Machine-wide exclusion for check-then-hold (a fake allocation is atomic)."""
        try:
            fd = lock_file(self.directory / f"{self.prefix}lock", timeout)
        except (OSError, TimeoutError) as exc:
            print(f"warning: fake GPU lock unusable ({exc}); holding without it",
                  file=sys.stderr)
            yield
            return
        try:
            yield
        finally:
            os.close(fd)


def shared_holds_base(environ: Mapping[str, str] | None = None) -> Path | None:
    """Where daemons with the same fake GPUs share them: the machine's shared directory
    (/var/tmp) by default; None when they are private to each meow home.

    `MEOW_FAKE_GPUS_STATE=private|shared|<dir>` decides; without it, fake GPUs follow the
    ledger (`MEOW_LEDGER=private` or `=<dir>` isolates both at once; `off` does not)."""
    env = os.environ if environ is None else environ
    choice = env.get("MEOW_FAKE_GPUS_STATE", "").strip()
    if not choice:
        ledger = env.get("MEOW_LEDGER", "").strip()
        choice = "shared" if ledger in ("", "off") else ledger
    if choice == "private":
        return None
    if choice == "shared":
        return default_base()
    return given_dir(choice, "MEOW_FAKE_GPUS_STATE must be private, shared or an absolute path",
                     "fake GPU state")


def holds_for(totals: list[int], holds_dir: Path,
              environ: Mapping[str, str] | None = None) -> Holds:
    """The holds of fake GPUs `totals`: shared by every daemon with the same GPUs, or
    private to the meow home whose fake GPU directory is `holds_dir`."""
    base = shared_holds_base(environ)
    if base is None:
        return Holds(holds_dir, "")
    return Holds(base, f"meow-{ledger_scope(totals)}-holds.")


class FakeBackend:
    """Holds come from hold files (the daemon: any process may declare one; shared by
    every daemon with the same fake GPUs unless `MEOW_FAKE_GPUS_STATE`/`MEOW_LEDGER` make
    them private to `holds_dir`'s meow home) or, with no `holds_dir`, from
    `hold()`/`release()` calls (the simulator, in-process)."""

    name = "fake"

    def __init__(self, totals: list[int], holds_dir: Path | None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.totals = totals
        self.holds_dir = holds_dir
        self.files: list[Holds] = []
        """Where holds are read: the shared ones, and this meow home's own (a hold made
        where the fake GPU spec was unknown lands there)."""
        if holds_dir is not None:
            self.files = [holds_for(totals, holds_dir, environ)]
            if self.files[0].prefix:
                self.files.append(Holds(holds_dir, ""))
        self._memory: dict[int, dict[int, int]] = {}
        """In-process holds: GPU index -> {pid: MiB}."""

    def hold(self, pid: int, gpu: int, mib: int) -> None:
        self._memory.setdefault(gpu, {})[pid] = mib

    def release(self, pid: int, gpu: int) -> None:
        self._memory.get(gpu, {}).pop(pid, None)

    def device(self, index: int) -> DeviceInfo:
        """One GPU as NVML would report it (in-process holds only)."""
        procs = tuple(GpuProcess(pid, mib) for pid, mib in self._memory.get(index, {}).items())
        return self._info(index, procs)

    def _info(self, index: int, procs: tuple[GpuProcess, ...]) -> DeviceInfo:
        total = self.totals[index]
        return DeviceInfo(
            index=index, name=f"Fake GPU {total // 1024}GiB", total_mib=total,
            used_mib=min(total, sum(p.used_mib for p in procs)), utilization=None,
            processes=procs,
        )

    def _holds(self) -> list[tuple[int, int, int]]:
        holds: list[tuple[int, int, int]] = [
            (pid, gpu, mib) for gpu, pids in self._memory.items() for pid, mib in pids.items()
        ]
        for files in self.files:
            holds += files.live()
        return holds

    def snapshot(self) -> list[DeviceInfo]:
        per_device: dict[int, list[GpuProcess]] = {}
        for pid, gpu, mib in self._holds():
            if 0 <= gpu < len(self.totals):
                per_device.setdefault(gpu, []).append(GpuProcess(pid, mib))
        return [self._info(i, tuple(per_device.get(i, ()))) for i in range(len(self.totals))]

    def close(self) -> None:
        pass


def hold(holds: Holds, gpu: int, mib: int, argv: list[str],
         totals: list[int] | None) -> None:
    """Hold `mib` on fake GPU `gpu` for this process's life, then become `argv`. With the
    GPUs' sizes known, fail as CUDA would when the GPU has less free."""
    if holds.prefix == "":
        holds.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with holds.locked():
        if totals is not None:
            if not 0 <= gpu < len(totals):
                sys.exit(f"fake GPU {gpu} does not exist ({len(totals)} fake GPUs)")
            used = sum(m for _, g, m in holds.live() if g == gpu)
            if used + mib > totals[gpu]:
                print(f"CUDA out of memory (fake): tried to allocate {format_mib(mib)} on "
                      f"fake GPU {gpu} with {format_mib(max(0, totals[gpu] - used))} free "
                      f"of {format_mib(totals[gpu])}", file=sys.stderr)
                sys.exit(1)
        holds.add(gpu, mib)
    os.execvp(argv[0], argv)


def _configured_spec(paths: Any) -> str | None:
    """The fake GPU spec a daemon of this home would use (env first, then its config)."""
    from meowd.core.settings import parse_config, settings_from

    for path in paths.config_files:
        try:
            text = path.read_text()
        except OSError:
            continue
        return settings_from(parse_config(text, str(path)), os.environ).fake_gpus
    return settings_from({}, os.environ).fake_gpus


def main(args: list[str] | None = None) -> None:
    from meowd.core.paths import resolve_paths

    parser = argparse.ArgumentParser(
        prog="python -m meowd.devices.fake",
        description="Play a process that holds memory on a fake GPU (as NVML would report it).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("hold", help="hold MiB on a fake GPU for the life of a command")
    p.add_argument("--gpu", type=int, required=True)
    p.add_argument("--mib", type=int, required=True)
    p.add_argument("--spec", help="the fake GPUs (default: MEOW_FAKE_GPUS, else the config)")
    p.add_argument("argv", nargs="+", help="the command to run (after --)")
    ns = parser.parse_args(args)
    paths = resolve_paths()
    try:
        spec = ns.spec or _configured_spec(paths)
        totals = parse_fake_gpus(spec) if spec else None
        # Without the GPUs' sizes, the hold goes to this meow home's own fake GPUs.
        holds = (holds_for(totals, paths.fake_gpu_holds) if totals is not None
                 else Holds(paths.fake_gpu_holds, ""))
    except BadRequest as exc:
        sys.exit(f"error: {exc.message}")
    hold(holds, ns.gpu, ns.mib, ns.argv, totals)


if __name__ == "__main__":
    main(sys.argv[1:])
