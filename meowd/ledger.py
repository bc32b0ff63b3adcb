"""The machine-wide GPU memory ledger: every meowd on a machine books GPU memory here before
it starts a task, so two queues (two users, or one user's two meow homes) never promise the
same MiB. The design, its argument and its threat model are in docs/ledger.md.

Storage: plain files directly in a root-owned sticky world-writable directory (`/var/tmp`,
else `/tmp`), so no set-up is needed and the kernel enforces who may change what:
- `meow-ledger-<scope>.u<uid>.<ns>`: one daemon's claims (mode 0644, owned by its user,
  replaced by atomic rename). The sticky bit lets only its owner (or root) replace or
  delete it. `<scope>` names the GPUs (`nvml`, or `fake-<hash of the fake spec>`), `<ns>`
  the meow home (a hash of its state directory), so one user's several homes never clash.
- `meow-ledger-<scope>.lock`: flock'ed around every check-and-record, so claims are atomic.

Every claim belongs to a live process of the file's owner, named by pid + start time
(clock ticks since boot) + boot id: a claim for a dead process, for a reused pid, from an
earlier boot, or for another user's process is ignored when read and cleaned when its
owner (or root) next writes. No daemon has to be alive for a claim to lapse.

Two-phase start (claim, then spawn): `claim` records the claims as held by the daemon's
own process; `bind` moves them to the task's process right after the spawn. A daemon
killed in between leaves claims held by a dead process: they count for nobody.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import pwd
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from meowd.core.errors import BadRequest
from meowd.core.fairness import POLICIES, Demand, UserState, yields_to
from meowd.core.paths import Paths
from meowd.core.units import format_mib

log = logging.getLogger("meowd.ledger")

LOCK_TIMEOUT = 1.0
"""Seconds to wait for the machine-wide lock before placing on NVML's view alone."""
DEGRADED_FOR = 30.0
"""After a lock time-out, try the lock without waiting for this long (one warning)."""
YIELD_LIMIT = 30.0
"""Seconds a daemon yields to another user's demand that never turns into a claim."""
MAX_FILE_BYTES = 256 * 1024
MAX_FILES_PER_UID = 64
MAX_CLAIMS = 4096
MAX_DEVICE = 4096
MAX_MIB = 1 << 40

ProcessList = Mapping[int, Iterable[tuple[int, int]]]
"""GPU index -> (pid, MiB) of each process NVML lists on it."""


# -- the interface ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """`mib` MiB on GPU `device` for `key`, the daemon's own name for a task attempt
    (e.g. "17.2"); other users only ever see a hash of it."""

    key: str
    device: int
    mib: int


def attempt_key(task_id: int, attempt: int) -> str:
    """A task attempt's name in a daemon's claims."""
    return f"{task_id}.{attempt}"


@dataclass(frozen=True)
class ForeignClaim:
    """Another queue's live claim, as `meow devices` may show it."""

    user: str
    uid: int
    device: int
    mib: int
    since: float
    outstanding_mib: int
    """The part NVML does not yet show as used by the claiming task (all of it without a
    process list): what placement must keep free for it."""
    same_user: bool
    """Another meow home of this daemon's own user."""

    def describe(self) -> str:
        who = "another meow home of yours" if self.same_user else self.user
        return (f"{format_mib(self.mib)} on GPU {self.device} reserved by {who} since "
                f"{time.strftime('%H:%M:%S', time.localtime(self.since))}")


@dataclass(frozen=True)
class ClaimResult:
    """True when the claim was recorded. Otherwise `blockers` are the other queues' claims
    on the GPUs that did not fit, or `waits_for` is the user the fairness policy lets go
    first. `degraded` says why the check ran without the machine-wide lock (log it)."""

    ok: bool
    blockers: tuple[ForeignClaim, ...] = ()
    waits_for: str | None = None
    degraded: str | None = None

    def __bool__(self) -> bool:
        return self.ok

    def note(self) -> str | None:
        """Why a task waits, for its note; None when it was claimed or nothing foreign blocks."""
        if self.waits_for is not None:
            return f"waits for {self.waits_for}'s turn (fair share between users)"
        if self.blockers:
            return "waits for " + "; ".join(b.describe() for b in self.blockers)
        return None


class Ledger(Protocol):
    def claim(self, claims: list[Claim], free_mib: Mapping[int, int],
              gpu_processes: ProcessList | None = None, *,
              waiting_since: float | None = None) -> ClaimResult:
        """Atomically check and record `claims` (held by this daemon until `bind`).
        `free_mib`: GPU -> MiB this daemon sees free (NVML, its own tasks and its own
        claims counted, including claims made earlier in the same pass); the ledger
        subtracts other queues' live claims that `gpu_processes` (the same snapshot's
        process lists) does not show as used yet. Refused: nothing is recorded."""
        ...

    def claim_each(self, placements: Sequence[list[Claim]], free_mib: Mapping[int, int],
                   gpu_processes: ProcessList | None = None, *,
                   waiting_since: Sequence[float | None] | None = None) -> list[ClaimResult]:
        """`claim` for each placement in turn, under one lock and with one write: each sees
        `free_mib` less what the ones before it claimed (one scheduling pass)."""
        ...

    def bind(self, key: str, pid: int) -> bool:
        """Move `key`'s claims to process `pid` (the task, right after its spawn): they
        then live exactly as long as it. False (and the claims dropped) when `pid` is gone
        or not this user's."""
        ...

    def bind_all(self, pids: Mapping[str, int]) -> dict[str, bool]:
        """`bind` for many keys (key -> pid) under one lock and with one write."""
        ...

    def adopt(self, claims: list[Claim], pid: int) -> bool:
        """After a restart, for a re-adopted task: make sure `claims` exist, held by `pid`,
        without a fit check (the task runs already). False (claims dropped) as in `bind`."""
        ...

    def release(self, key: str) -> None:
        """Drop `key`'s claims (the task ended, or its start failed)."""
        ...

    def retain(self, keys: Iterable[str]) -> None:
        """Drop this daemon's claims for every key not in `keys` (after a restart)."""
        ...

    def publish(self, demand: Demand | None) -> None:
        """Tell other users' daemons what this queue would start next (fairness)."""
        ...

    def others(self, gpu_processes: ProcessList | None = None) -> list[ForeignClaim]:
        """Other queues' live claims (for placement views, `meow devices` and notes)."""
        ...

    def expire(self) -> int:
        """Remove this user's dead claims and dead files; how many claims went."""
        ...

    def close(self) -> None: ...


# -- processes --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    uid: int
    """The real uid."""
    ticks: int
    """Start time, clock ticks since boot: with the boot id, unique for a process's life."""
    ppid: int


def proc(pid: int) -> Proc | None:
    """A live process's real uid, start time and parent; None when it is gone, a zombie,
    or invisible to us (/proc mounted with hidepid)."""
    if pid <= 0:
        return None
    try:
        raw, status = _read_proc(f"/proc/{pid}/stat"), _read_proc(f"/proc/{pid}/status")
        fields = raw[raw.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):
            return None
        for line in status.splitlines():
            if line.startswith(b"Uid:"):
                return Proc(int(line.split()[1]), int(fields[19]), int(fields[1]))
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_proc(path: str) -> bytes:
    """A /proc file in one read (no buffered file object: this runs per claim checked)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


@functools.cache
def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime"):
                return line.split()[1]
        raise


@functools.cache
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def ledger_scope(fake_totals: list[int] | None) -> str:
    """Which GPUs a ledger books: `nvml` (the machine's), or fake GPUs of one spec
    (`2x24GiB` and `24576,24576` are the same GPUs)."""
    if fake_totals is None:
        return "nvml"
    spec = ",".join(map(str, fake_totals)).encode()
    return "fake-" + hashlib.sha256(spec).hexdigest()[:12]


def home_ns(paths: Paths) -> str:
    return hashlib.sha256(os.fsencode(paths.state.absolute())).hexdigest()[:16]


# -- files shared between users ---------------------------------------------------------------
def shared_dir_problem(path: Path) -> str | None:
    """Why `path` is unfit for files several users share, or None. Fit: a real directory
    (no symlink) that nobody but root and us can empty: owned by root or by us, and if
    others may write into it, with the sticky bit (so only a file's owner removes it)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return f"{path} is writable by others but not sticky (mode {st.st_mode & 0o7777:o})"
    if st.st_uid not in (0, os.getuid()) and st.st_mode & 0o022:
        return (f"{path} belongs to uid {st.st_uid}, who could delete other users' files "
                "in it")
    return None


def default_base() -> Path | None:
    """The machine's shared directory: /var/tmp (it survives reboots, though nothing here
    needs it to), else /tmp; None when neither is root-owned and sticky."""
    for candidate in (Path("/var/tmp"), Path("/tmp")):
        try:
            st = os.lstat(candidate)
        except OSError:
            continue
        if (stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and st.st_mode & stat.S_ISVTX
                and st.st_mode & 0o002):
            return candidate
    return None


def read_small(path: str, limit: int = MAX_FILE_BYTES) -> tuple[bytes, os.stat_result] | None:
    """A regular file's bytes and stat, never following a symlink, never blocking on a
    FIFO, never reading more than `limit`; None if it is anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        data = os.read(fd, limit + 1)
        return (data, st) if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def write_atomic(directory: Path, name: str, data: bytes, mode: int = 0o644) -> bool:
    """Replace `directory/name` by a new file with `data` (never a half-written file).
    False when the name is taken by someone else's file (the sticky bit refuses)."""
    tmp = directory / f".{name}.tmp-{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, directory / name)
        return True
    except PermissionError:
        os.unlink(tmp)
        return False
    except BaseException:
        os.unlink(tmp)
        raise


def _open_lock(path: Path) -> int:
    while True:
        try:  # never O_CREAT on a file that exists: it may be another user's
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644)
                os.fchmod(fd, 0o644)
            except FileExistsError:
                continue
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{path} is not a regular file")
        return fd


def lock_file(path: Path, timeout: float) -> int:
    """flock `path` (created 0644 if missing) and return the locked fd; TimeoutError after
    `timeout` seconds; OSError when it cannot be opened. If its owner replaced or removed
    the file meanwhile, lock the file now at the path instead."""
    deadline = time.monotonic() + timeout
    fd = _open_lock(path)
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise TimeoutError(f"{path} stayed locked for {timeout:g}s") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
            continue
        except BaseException:
            os.close(fd)
            raise
        held = os.fstat(fd)
        try:
            now = os.stat(path, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
        fd = _open_lock(path)


# -- records ----------------------------------------------------------------------------------
@dataclass
class _Entry:
    key: str
    """A hash of (home, key): meaningless to other users."""
    device: int
    mib: int
    since: float
    pid: int
    ticks: int


@dataclass
class _Record:
    """One daemon's part of the ledger: its claims and its published demand."""

    uid: int
    ns: str
    boot: str
    daemon: tuple[int, int]
    claims: list[_Entry] = field(default_factory=list)
    demand: Demand | None = None
    name: str | None = None
    """The file it was read from (file ledger)."""

    def encode(self) -> bytes:
        d = self.demand
        return json.dumps({
            "v": 1, "boot": self.boot, "ns": self.ns, "daemon": list(self.daemon),
            "claims": [[e.key, e.device, e.mib, e.since, e.pid, e.ticks] for e in self.claims],
            "demand": None if d is None else [d.devices, d.mib, d.since,
                                              None if d.visible is None else list(d.visible)],
        }, separators=(",", ":")).encode()


def _int(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(value)
    return value


def _time(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e11:
        raise ValueError(value)
    return float(value)


def _decode(data: bytes, uid: int, name: str) -> _Record | None:
    """A record from untrusted bytes; None when malformed. Bad claims are dropped one by one."""
    try:
        raw = json.loads(data)
        if raw.get("v") != 1:
            return None
        ns, boot = raw["ns"], raw["boot"]
        if not (isinstance(ns, str) and isinstance(boot, str) and len(ns) <= 64
                and len(boot) <= 64):
            return None
        pid, ticks = raw["daemon"]
        record = _Record(uid, ns, boot, (_int(pid, 1, 1 << 31), _int(ticks, 0, 1 << 62)),
                         name=name)
        for item in raw["claims"][:MAX_CLAIMS]:
            try:
                key, device, mib, since, pid, ticks = item
                if not isinstance(key, str) or len(key) > 64:
                    continue
                record.claims.append(_Entry(
                    key, _int(device, 0, MAX_DEVICE), _int(mib, 0, MAX_MIB), _time(since),
                    _int(pid, 1, 1 << 31), _int(ticks, 0, 1 << 62)))
            except (ValueError, TypeError):
                continue
        if raw.get("demand") is not None:
            devices, mib, since, visible = raw["demand"]
            if visible is not None:
                visible = tuple(_int(v, 0, MAX_DEVICE) for v in visible[:MAX_DEVICE])
            record.demand = Demand(_int(devices, 0, MAX_DEVICE), _int(mib, 0, MAX_MIB),
                                   _time(since), visible)
        return record
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


def _identity(name: str, st: os.stat_result) -> tuple[Any, ...]:
    """A ledger file's version: a write changes its ctime, which nobody can set."""
    return name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_uid


ALIVE_FOR = 0.5
"""Seconds one of this queue's own claim holders seen alive counts as alive without
reading /proc again (two reads per claim per ledger operation were a third of the
ledger's cost per task start). Own claims never limit this queue's placement, so this
only keeps an ended task's entry in its file a moment longer; other queues' claims are
always read afresh."""


class _Procs:
    """Process lookups, cached for one evaluation; `seen` (shared across evaluations)
    remembers live processes for ALIVE_FOR seconds."""

    def __init__(self, seen: dict[int, tuple[Proc, float]] | None = None) -> None:
        self._cache: dict[int, Proc | None] = {}
        self._seen = seen

    def get(self, pid: int) -> Proc | None:
        """The process now (never from `seen`: a bind must see the new task itself)."""
        if pid not in self._cache:
            self._cache[pid] = proc(pid)
        return self._cache[pid]

    def alive(self, pid: int, ticks: int, uid: int | None, own: bool = False) -> bool:
        p = self._recent(pid, ticks) if own and self._seen is not None else self.get(pid)
        return p is not None and p.ticks == ticks and (uid is None or p.uid == uid)

    def _recent(self, pid: int, ticks: int) -> Proc | None:
        """`get`, or this process as seen alive less than ALIVE_FOR seconds ago."""
        assert self._seen is not None
        now = time.monotonic()
        hit = self._seen.get(pid)
        if hit is not None and hit[0].ticks == ticks and now - hit[1] < ALIVE_FOR:
            return hit[0]
        p = self.get(pid)
        if p is not None:
            if len(self._seen) > 4096:
                self._seen.clear()
            self._seen[pid] = (p, now)
        return p


# -- the ledger -------------------------------------------------------------------------------
class _BaseLedger:
    """Everything but storage. Subclasses provide `_records`, `_store`, `_drop`, `_exclusive`."""

    verify_uid = True
    """Whether a claim counts only for a process of the record's owner (the file ledger:
    yes; the in-memory ledger plays users that are not real)."""

    def __init__(self, ns: str, fairness: str = "fcfs", uid: int | None = None) -> None:
        if fairness not in POLICIES:
            raise BadRequest(f"unknown fairness policy {fairness!r} (known: "
                             f"{', '.join(POLICIES)})")
        self.ns = ns
        self.fairness = fairness
        self.uid = os.getuid() if uid is None else uid
        me = proc(os.getpid())
        assert me is not None
        self.daemon = (os.getpid(), me.ticks)
        self.yield_limit = YIELD_LIMIT
        self._mutex = threading.RLock()
        self._yielding: dict[int, tuple[float, tuple[Any, ...]]] = {}
        self._seen: dict[int, tuple[Proc, float]] = {}
        self._last: _Record | None = None
        """This daemon's record as last written (see `bind_all`)."""

    # storage
    def _records(self) -> list[_Record]:
        raise NotImplementedError

    def _store(self, record: _Record) -> bool:
        """Write this daemon's record; False when it could not be."""
        raise NotImplementedError

    def _save(self, own: _Record) -> None:
        self._last = own if self._store(own) else None

    def _drop(self, record: _Record) -> None:
        raise NotImplementedError

    def _exclusive(self) -> contextlib.AbstractContextManager[str | None]:
        raise NotImplementedError

    # helpers
    def _hash(self, key: str) -> str:
        return hashlib.sha256(f"{self.ns}\0{key}".encode()).hexdigest()[:20]

    def _mine(self, record: _Record) -> bool:
        return record.uid == self.uid and record.ns == self.ns

    def _live(self, records: list[_Record], procs: _Procs) -> list[_Record]:
        """The records with their dead claims dropped (all of them from an earlier boot), and
        a demand only while its daemon lives. Same length and order as `records`."""
        boot = boot_id()
        live = []
        for record in records:
            if record.boot != boot:
                live.append(replace(record, claims=[], demand=None))
                continue
            uid = record.uid if self.verify_uid else None
            own = self._mine(record)
            claims = [e for e in record.claims if procs.alive(e.pid, e.ticks, uid, own)]
            demand = record.demand if procs.alive(*record.daemon, uid, own) else None
            live.append(replace(record, claims=claims, demand=demand))
        return live

    def _own(self, records: list[_Record]) -> _Record:
        """This daemon's record (claims of its home, whichever daemon of the home made them)."""
        own = _Record(self.uid, self.ns, boot_id(), self.daemon)
        seen: set[tuple[str, int]] = set()
        for record in records:
            if self._mine(record):
                # Two files of one home (a daemon killed between writing the new one and
                # removing the old): each claim once.
                own.claims.extend(e for e in record.claims if (e.key, e.device) not in seen)
                seen.update((e.key, e.device) for e in record.claims)
                own.demand = own.demand or record.demand
        return own

    def _foreign(self, records: list[_Record], procs: _Procs,
                 gpu_processes: ProcessList | None) -> list[ForeignClaim]:
        entries = [(r, e) for r in records if not self._mine(r) for e in r.claims]
        used: dict[int, int] = {}  # id(entry) -> MiB NVML shows for its process tree
        if gpu_processes is not None:
            for device, processes in gpu_processes.items():
                # A claim still held by its daemon (not yet bound) has no task using memory:
                # the daemon's other tasks are its descendants too, so it gets none of theirs.
                owners = {e.pid: e for r, e in entries
                          if e.device == device and e.pid != r.daemon[0]}
                if not owners:
                    continue
                for pid, mib in processes:
                    owner = self._ancestor(pid, owners, procs)
                    if owner is not None:
                        used[id(owner)] = used.get(id(owner), 0) + mib
        return [ForeignClaim(user_name(r.uid), r.uid, e.device, e.mib, e.since,
                             max(0, e.mib - used.get(id(e), 0)) if gpu_processes is not None
                             else e.mib, r.uid == self.uid)
                for r, e in entries]

    @staticmethod
    def _ancestor(pid: int, owners: dict[int, _Entry], procs: _Procs) -> _Entry | None:
        for _ in range(64):
            entry = owners.get(pid)
            if entry is not None:
                p = procs.get(pid)
                return entry if p is not None and p.ticks == entry.ticks else None
            p = procs.get(pid)
            if p is None or p.ppid <= 1:
                return None
            pid = p.ppid
        return None

    # the interface
    def claim(self, claims: list[Claim], free_mib: Mapping[int, int],
              gpu_processes: ProcessList | None = None, *,
              waiting_since: float | None = None) -> ClaimResult:
        return self.claim_each([claims], free_mib, gpu_processes,
                               waiting_since=[waiting_since])[0]

    def claim_each(self, placements: Sequence[list[Claim]], free_mib: Mapping[int, int],
                   gpu_processes: ProcessList | None = None, *,
                   waiting_since: Sequence[float | None] | None = None) -> list[ClaimResult]:
        with self._mutex, self._exclusive() as degraded:
            procs = _Procs(self._seen)
            records = self._live(self._records(), procs)
            foreign = self._foreign(records, procs, gpu_processes)
            free = dict(free_mib)
            for f in foreign:
                if f.device in free:
                    free[f.device] -= f.outstanding_mib
            own = self._own(records)
            theirs = [r for r in records if not self._mine(r)]
            results = []
            for n, claims in enumerate(placements):
                wanted = [c for c in claims if c.mib > 0]
                need: dict[int, int] = {}
                for c in wanted:
                    need[c.device] = need.get(c.device, 0) + c.mib
                short = {d for d, mib in need.items() if mib > free.get(d, 0)}
                if short:
                    blockers = tuple(f for f in foreign
                                     if f.device in short and f.outstanding_mib)
                    results.append(ClaimResult(False, blockers, None, degraded))
                    continue
                since = waiting_since[n] if waiting_since else None
                rival = self._rival([*theirs, own], need, free, since)
                if rival is not None:
                    results.append(ClaimResult(False, (), user_name(rival), degraded))
                    continue
                keys = {self._hash(c.key) for c in wanted}
                now = time.time()
                own.claims = [e for e in own.claims if e.key not in keys] + [
                    _Entry(self._hash(c.key), c.device, c.mib, now, *self.daemon)
                    for c in wanted]
                for d, mib in need.items():
                    free[d] -= mib
                results.append(ClaimResult(True, (), None, degraded))
            if any(r.ok and p for r, p in zip(results, placements, strict=True)):
                self._save(own)
            return results

    def _rival(self, records: list[_Record], need: dict[int, int], free: dict[int, int],
               waiting_since: float | None) -> int | None:
        """The uid of a user the fairness policy lets claim first, or None."""
        if self.fairness == "fcfs" or not need:
            return None
        users: dict[int, UserState] = {}
        for r in records:
            u = users.get(r.uid) or UserState(r.uid, None)
            demand = u.demand
            if r.demand is not None and (demand is None or r.demand.since < demand.since):
                demand = r.demand
            users[r.uid] = UserState(
                r.uid, demand, u.held_mib + sum(e.mib for e in r.claims),
                max([u.last_grant, *(e.since for e in r.claims)]))
        mine = users.pop(self.uid, UserState(self.uid, None))
        me = UserState(self.uid, Demand(0, 0, waiting_since or time.time()), mine.held_mib,
                       mine.last_grant)
        # A user we keep yielding to who never claims anything (a stuck daemon, a bogus
        # demand) is passed over after `yield_limit` seconds, until their claims change.
        now = time.monotonic()

        def stale(user: UserState) -> bool:
            seen = self._yielding.get(user.uid)
            return (seen is not None and seen[1] == (user.held_mib, user.last_grant)
                    and now - seen[0] >= self.yield_limit)

        passed_over = {u.uid for u in users.values() if stale(u)}
        rival = yields_to(me, need, free, [u for u in users.values()
                                           if u.uid not in passed_over], self.fairness)
        if rival is not None:
            seen = self._yielding.get(rival.uid)
            if seen is None or seen[1] != (rival.held_mib, rival.last_grant):
                self._yielding[rival.uid] = (now, (rival.held_mib, rival.last_grant))
            passed_over.add(rival.uid)
        for uid in set(self._yielding) - passed_over:
            del self._yielding[uid]
        return None if rival is None else rival.uid

    def _rebind(self, items: list[tuple[str, int, list[Claim] | None]]) -> list[bool]:
        """Move each (key, pid, claims)'s claims to pid; with `claims`, (re)create them."""
        with self._mutex, self._exclusive():
            procs = _Procs(self._seen)
            own = self._own(self._live(self._records(), procs))
            results = self._move(own, items, procs)
            self._save(own)
            return results

    def _move(self, own: _Record, items: list[tuple[str, int, list[Claim] | None]],
              procs: _Procs) -> list[bool]:
        """`own` with each item's claims moved to its process (see `_rebind`)."""
        results = []
        for key, pid, claims in items:
            h = self._hash(key)
            p = procs.get(pid)
            ok = p is not None and (p.uid == self.uid or not self.verify_uid)
            mine = [e for e in own.claims if e.key == h]
            own.claims = [e for e in own.claims if e.key != h]
            if ok and p is not None:
                if claims is not None:
                    since = {e.device: e.since for e in mine}
                    now = time.time()
                    mine = [_Entry(h, c.device, c.mib, since.get(c.device, now), pid,
                                   p.ticks) for c in claims if c.key == key and c.mib > 0]
                own.claims += [replace(e, pid=pid, ticks=p.ticks) for e in mine]
            results.append(ok)
        return results

    def bind(self, key: str, pid: int) -> bool:
        return self.bind_all({key: pid})[key]

    def bind_all(self, pids: Mapping[str, int]) -> dict[str, bool]:
        """Move claims from this daemon to the tasks just started: under the lock, but
        without reading the ledger's files. A bind changes no amount, only who holds it,
        and nobody else writes this daemon's file, so the record it last wrote is the
        one to change (a read and decode of every file, and a check of every claim's
        process, were half the cost of a bind)."""
        items: list[tuple[str, int, list[Claim] | None]] = [
            (k, pid, None) for k, pid in pids.items()]
        with self._mutex, self._exclusive():
            last = self._last
            if last is not None and last.boot == boot_id():
                own = replace(last, claims=list(last.claims))
                results = self._move(own, items, _Procs(self._seen))
                self._save(own)
                return dict(zip(pids, results, strict=True))
        return dict(zip(pids, self._rebind(items), strict=True))

    def adopt(self, claims: list[Claim], pid: int) -> bool:
        keys = sorted({c.key for c in claims})
        if not keys:
            return proc(pid) is not None
        return all(self._rebind([(key, pid, claims) for key in keys]))

    def release(self, key: str) -> None:
        self._keep(lambda k: k != self._hash(key))

    def retain(self, keys: Iterable[str]) -> None:
        kept = {self._hash(k) for k in keys}
        self._keep(lambda k: k in kept)

    def _keep(self, keep: Callable[[str], bool]) -> None:
        with self._mutex, self._exclusive():
            own = self._own(self._live(self._records(), _Procs()))
            own.claims = [e for e in own.claims if keep(e.key)]
            self._save(own)

    def publish(self, demand: Demand | None) -> None:
        with self._mutex, self._exclusive():
            own = self._own(self._live(self._records(), _Procs()))
            if own.demand != demand:
                own.demand = demand
                self._save(own)

    def others(self, gpu_processes: ProcessList | None = None) -> list[ForeignClaim]:
        procs = _Procs()
        return self._foreign(self._live(self._records(), procs), procs, gpu_processes)

    def expire(self) -> int:
        with self._mutex, self._exclusive() as degraded:
            procs = _Procs()
            records = self._records()
            live = self._live(records, procs)
            dropped = sum(len(r.claims) for r in records) - sum(len(r.claims) for r in live)
            boot = boot_id()
            for before, after in zip(records, live, strict=True):
                if self._mine(before):
                    continue
                idle = not after.claims and not procs.alive(*before.daemon, None)
                if degraded is None and (before.boot != boot or idle):
                    self._drop(before)  # a file of ours (or, as root, anyone's): all dead
            own = self._own(live)
            if len(own.claims) != len(self._own(records).claims) or any(
                    r.boot != boot for r in records if self._mine(r)):
                self._save(own)
            return dropped

    def close(self) -> None:
        pass


class FileLedger(_BaseLedger):
    """The machine-wide ledger: files in `base` (see the module's docstring)."""

    def __init__(self, base: Path, scope: str, ns: str, fairness: str = "fcfs",
                 lock_timeout: float = LOCK_TIMEOUT) -> None:
        super().__init__(ns, fairness)
        self.base = base
        self.prefix = f"meow-ledger-{scope}."
        self.lock_path = base / f"{self.prefix}lock"
        self.lock_timeout = lock_timeout
        self._degraded_until = 0.0
        self._file: str | None = None
        """The name this daemon's claims were last written under (None: find out)."""
        self._decoded: dict[tuple[Any, ...], _Record | None] = {}

    def __repr__(self) -> str:
        return f"FileLedger({self.base / self.prefix}*)"

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[str | None]:
        waiting = time.monotonic() >= self._degraded_until
        try:
            fd = lock_file(self.lock_path, self.lock_timeout if waiting else 0.0)
        except (OSError, TimeoutError) as exc:
            if waiting:
                log.warning("GPU ledger lock unusable (%s): placing on NVML's view and this "
                            "ledger's contents without it for %gs", exc, DEGRADED_FOR)
                self._degraded_until = time.monotonic() + DEGRADED_FOR
            yield f"ledger lock unusable: {exc}"
            return
        self._degraded_until = 0.0
        try:
            yield None
        finally:
            os.close(fd)

    def expire(self) -> int:
        dropped = super().expire()
        # Temporary files of writes this home's daemons were killed in the middle of.
        stem, old = f".{self.prefix}u{self.uid}.{self.ns}", time.time() - 60
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.base):
                if entry.name.startswith(stem) and ".tmp-" in entry.name and \
                        entry.stat(follow_symlinks=False).st_mtime < old:
                    os.unlink(entry.path)
        return dropped

    def _records(self) -> list[_Record]:
        records: list[_Record] = []
        per_uid: dict[int, int] = {}
        try:
            names = sorted(e.name for e in os.scandir(self.base)
                           if e.name.startswith(self.prefix + "u"))
        except OSError as exc:
            log.warning("cannot read the GPU ledger %s: %s", self.base, exc)
            return records
        # A file unchanged since the last read (same inode, size, mtime and ctime: a write
        # changes the ctime, which nobody can set) is not read and decoded again.
        known, self._decoded = self._decoded, {}
        for name in names:
            path = os.path.join(self.base, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
                continue
            if per_uid.get(st.st_uid, 0) >= MAX_FILES_PER_UID:
                continue
            per_uid[st.st_uid] = per_uid.get(st.st_uid, 0) + 1
            key = _identity(name, st)
            if key in known:
                record = known[key]
            else:
                read = read_small(path)
                if read is None:
                    continue
                data, st = read
                record = _decode(data, st.st_uid, name)
                key = _identity(name, st)  # as read (it may have changed since the lstat)
            self._decoded[key] = record
            if record is not None:
                records.append(replace(record, claims=list(record.claims)))
        return records

    def _store(self, record: _Record) -> bool:
        """Write `record` under a fresh name, then remove the file it replaces (all under
        the lock, so no other daemon sees both). Renaming over an existing file makes ext4
        start writing the new one out (auto_da_alloc): 5x the cost of a fresh name, paid
        twice per task start. A random name also cannot be squatted by another user."""
        if self._file is None:  # the first write: whatever files of this home are there
            stale = [name for name in self._names() if self._is_ours(name)]
        else:
            stale = [self._file]
        keep = None
        if record.claims or record.demand is not None:
            data, stem = record.encode(), f"{self.prefix}u{self.uid}.{self.ns}."
            for _ in range(8):
                name = stem + secrets.token_hex(6)
                if write_atomic(self.base, name, data):
                    keep = name
                    break
            else:
                log.error("GPU ledger: cannot write a file for this home's claims in %s; "
                          "claims stay unrecorded", self.base)
        self._file = keep
        for name in stale:
            if name != keep:
                with contextlib.suppress(OSError):
                    os.unlink(self.base / name)
        return keep is not None or not (record.claims or record.demand is not None)

    def _names(self) -> list[str]:
        try:
            return [e.name for e in os.scandir(self.base)
                    if e.name.startswith(f"{self.prefix}u{self.uid}.{self.ns}")]
        except OSError:
            return []

    def _is_ours(self, name: str) -> bool:
        read = read_small(str(self.base / name))
        if read is None:
            return False
        record = _decode(read[0], read[1].st_uid, name)
        return record is not None and self._mine(record)

    def _drop(self, record: _Record) -> None:
        if record.name and (record.uid == self.uid or self.uid == 0):
            with contextlib.suppress(OSError):
                os.unlink(self.base / record.name)


class Board:
    """The shared state of in-memory ledgers: one per simulated machine."""

    def __init__(self) -> None:
        self.records: dict[tuple[int, str], _Record] = {}
        self.lock = threading.Lock()


class MemoryLedger(_BaseLedger):
    """The same ledger in memory, for tests: ledgers that share a `Board` are daemons of
    one machine; `uid` plays a user (claims are still tied to real live processes)."""

    verify_uid = False

    def __init__(self, board: Board | None = None, ns: str = "memory", uid: int | None = None,
                 fairness: str = "fcfs") -> None:
        super().__init__(ns, fairness, uid)
        self.board = board or Board()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[str | None]:
        with self.board.lock:
            yield None

    def _records(self) -> list[_Record]:
        return [replace(r, claims=list(r.claims)) for r in self.board.records.values()]

    def _store(self, record: _Record) -> bool:
        if record.claims or record.demand is not None:
            self.board.records[(self.uid, self.ns)] = record
        else:
            self.board.records.pop((self.uid, self.ns), None)
        return True

    def _drop(self, record: _Record) -> None:
        self.board.records.pop((record.uid, record.ns), None)


class NullLedger:
    """`MEOW_LEDGER=off`: every claim fits; nobody else is seen (NVML's view only)."""

    def claim(self, claims: list[Claim], free_mib: Mapping[int, int],
              gpu_processes: ProcessList | None = None, *,
              waiting_since: float | None = None) -> ClaimResult:
        return ClaimResult(True)

    def claim_each(self, placements: Sequence[list[Claim]], free_mib: Mapping[int, int],
                   gpu_processes: ProcessList | None = None, *,
                   waiting_since: Sequence[float | None] | None = None) -> list[ClaimResult]:
        return [ClaimResult(True) for _ in placements]

    def bind(self, key: str, pid: int) -> bool:
        return True

    def bind_all(self, pids: Mapping[str, int]) -> dict[str, bool]:
        return dict.fromkeys(pids, True)

    def adopt(self, claims: list[Claim], pid: int) -> bool:
        return True

    def release(self, key: str) -> None:
        pass

    def retain(self, keys: Iterable[str]) -> None:
        pass

    def publish(self, demand: Demand | None) -> None:
        pass

    def others(self, gpu_processes: ProcessList | None = None) -> list[ForeignClaim]:
        return []

    def expire(self) -> int:
        return 0

    def close(self) -> None:
        pass


def given_dir(choice: str, usage: str, label: str) -> Path:
    """A directory named in an environment variable, made if missing and checked as a
    shared one (`shared_dir_problem`); BadRequest saying `usage` or what is wrong."""
    base = Path(choice).expanduser()
    if not base.is_absolute():
        raise BadRequest(f"{usage}: {choice!r}")
    if not base.exists():
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
    problem = shared_dir_problem(base)
    if problem:
        raise BadRequest(f"{label}: {problem}")
    return base


def ledger_base(paths: Paths, environ: Mapping[str, str] | None = None) -> Path | None:
    """The directory `MEOW_LEDGER` picks: None for `off`; `<state>/ledger` for `private`;
    the directory given; else the machine's (/var/tmp). Raises BadRequest for an unfit one."""
    env = os.environ if environ is None else environ
    choice = env.get("MEOW_LEDGER", "").strip()
    if choice == "off":
        return None
    if choice == "private":
        base = paths.state / "ledger"
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        return base
    if choice:
        return given_dir(choice, "MEOW_LEDGER must be off, private or an absolute path",
                         "MEOW_LEDGER")
    base = default_base()
    if base is None:
        log.warning("neither /var/tmp nor /tmp is a root-owned sticky directory: the GPU "
                    "ledger is private to this meow home")
        return ledger_base(paths, {"MEOW_LEDGER": "private"})
    return base


def open_ledger(paths: Paths, scope: str, environ: Mapping[str, str] | None = None,
                fairness: str = "fcfs") -> Ledger:
    """The ledger this daemon uses (`MEOW_LEDGER=off|private|<dir>`; default: machine-wide)."""
    base = ledger_base(paths, environ)
    if base is None:
        return NullLedger()
    return FileLedger(base, scope, home_ns(paths), fairness)
