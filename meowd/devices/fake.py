"""Fake GPUs: a product feature for demos, dry runs and CI on machines without GPUs.

Any process can declare memory it "holds" on a fake GPU (`python -m meowd.devices.fake
hold --gpu 0 --mib 30000 -- sleep 60`). Holds are small files under the state directory;
the backend reports them per process, exactly as NVML reports real allocations, and
forgets a hold when its process exits (pid and start time checked, so a reused pid
never inherits a hold).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import psutil

from meowd.core.errors import BadRequest
from meowd.core.units import parse_size_mib
from meowd.devices import DeviceInfo, GpuProcess

_PART = re.compile(r"^\s*(?:(\d+)\s*x\s*)?(\S+?)\s*$", re.IGNORECASE)


def parse_fake_spec(spec: str) -> list[int]:
    """`4x80GiB` -> [81920]*4; `2x24GiB,1x12GiB` -> three devices; sizes default to MiB."""
    totals: list[int] = []
    usage = "use e.g. 4x80GiB or 2x24GiB,1x12GiB (sizes in MiB by default)"
    for part in spec.split(","):
        match = _PART.match(part)
        if not match or not part.strip():
            raise BadRequest(f"bad MEOW_FAKE_GPUS {spec!r}: {usage}")
        count = int(match.group(1) or 1)
        try:
            size = parse_size_mib(match.group(2))
        except BadRequest:
            raise BadRequest(f"bad MEOW_FAKE_GPUS {spec!r}: {usage}") from None
        if count < 1 or size < 1:
            raise BadRequest(f"bad MEOW_FAKE_GPUS {spec!r}: count and size must be positive")
        totals.extend([size] * count)
    if len(totals) > 4096:
        raise BadRequest("MEOW_FAKE_GPUS: at most 4096 fake GPUs")
    return totals


def _alive(pid: int, create_time: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - create_time) < 0.01
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


class FakeBackend:
    """Holds come from files (the daemon: any process may declare one) or, with no
    `holds_dir`, from `hold()`/`release()` calls (the simulator, in-process)."""

    name = "fake"

    def __init__(self, totals: list[int], holds_dir: Path | None) -> None:
        self.totals = totals
        self.holds_dir = holds_dir
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
        if self.holds_dir is None:
            return holds
        try:
            entries = list(os.scandir(self.holds_dir))
        except FileNotFoundError:
            return holds
        for entry in entries:
            try:
                data = json.loads(Path(entry.path).read_text())
                pid, gpu, mib, created = data["pid"], data["gpu"], data["mib"], data["create_time"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if _alive(pid, created):
                holds.append((pid, gpu, mib))
            else:
                Path(entry.path).unlink(missing_ok=True)
        return holds

    def snapshot(self) -> list[DeviceInfo]:
        per_device: dict[int, list[GpuProcess]] = {}
        for pid, gpu, mib in self._holds():
            if 0 <= gpu < len(self.totals):
                per_device.setdefault(gpu, []).append(GpuProcess(pid, mib))
        return [self._info(i, tuple(per_device.get(i, ()))) for i in range(len(self.totals))]

    def close(self) -> None:
        pass


def hold(holds_dir: Path, gpu: int, mib: int, argv: list[str]) -> None:
    """Record that this process holds `mib` on fake GPU `gpu`, then become `argv`."""
    holds_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    me = psutil.Process()
    record = {"pid": me.pid, "gpu": gpu, "mib": mib, "create_time": me.create_time()}
    path = holds_dir / f"{me.pid}-{gpu}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.rename(path)
    os.execvp(argv[0], argv)


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
    p.add_argument("argv", nargs="+", help="the command to run (after --)")
    ns = parser.parse_args(args)
    hold(resolve_paths().fake_gpu_holds, ns.gpu, ns.mib, ns.argv)


if __name__ == "__main__":
    main(sys.argv[1:])
