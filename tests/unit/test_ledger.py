"""The GPU ledger (meowd/ledger.py): claims, conflicts, binding to processes, expiry,
untrusted entries, a lock held forever, fairness between users, `MEOW_LEDGER`.

Every test runs against the in-memory ledger and the file ledger alike, with real
processes as claim owners. Several daemons of one machine are several ledgers sharing a
board (memory) or a directory (files)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from meowd.core.errors import BadRequest
from meowd.core.fairness import Demand
from meowd.core.paths import resolve_paths
from meowd.ledger import (
    Board,
    Claim,
    FileLedger,
    Ledger,
    MemoryLedger,
    NullLedger,
    boot_id,
    open_ledger,
    proc,
)
from tests.conftest import wait_for

GPU = 16384
SCOPE = "fake-test"

Make = Callable[..., Ledger]


@pytest.fixture(params=["memory", "file"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Make:
    """make(ns) -> the ledger of a daemon (of meow home `ns`) on one shared machine."""
    board = Board()

    def build(ns: str) -> Ledger:
        if request.param == "memory":
            return MemoryLedger(board, ns)
        return FileLedger(tmp_path, SCOPE, ns, lock_timeout=0.5)

    return build


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real processes (tasks), each in its own process group; all are killed at the
    end, children included."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(list(argv or ["sleep", "60"]), start_new_session=True)
        procs.append(p)
        return p

    yield start
    for p in procs:
        end(p)


def end(p: subprocess.Popen[bytes]) -> None:
    """Kill `p`, and its children when it leads its own process group."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(p.pid) == p.pid:
            os.killpg(p.pid, signal.SIGKILL)
        else:
            p.kill()
    p.wait()


def test_a_claim_that_fits_is_recorded_and_other_queues_see_it(make: Make, spawn):
    a, b = make("home-a"), make("home-b")
    task = spawn()
    assert a.claim([Claim("1.1", 0, 12000)], {0: GPU})
    assert a.bind("1.1", task.pid)
    assert a.others() == []  # its own claims are the caller's business
    [seen] = b.others()
    assert (seen.device, seen.mib, seen.outstanding_mib, seen.same_user) == (0, 12000, 12000,
                                                                            True)
    assert seen.since <= time.time()


def test_a_claim_that_does_not_fit_is_refused_naming_the_other_reservation(make: Make, spawn):
    a, b = make("home-a"), make("home-b")
    assert a.claim([Claim("1.1", 0, 12000)], {0: GPU, 1: GPU})
    a.bind("1.1", spawn().pid)
    refused = b.claim([Claim("7.1", 0, 12000)], {0: GPU, 1: GPU})
    assert not refused and [c.mib for c in refused.blockers] == [12000]
    assert "waits for 12000MiB on GPU 0 reserved by another meow home of yours" in refused.note()
    assert b.claim([Claim("7.1", 1, 12000)], {0: GPU, 1: GPU})  # the other GPU is free
    # A multi-GPU claim is all or nothing (b counts its own 12000 on GPU 1 itself).
    assert not b.claim([Claim("8.1", 0, 5000), Claim("8.1", 1, 1000)], {0: GPU, 1: GPU - 12000})
    assert [(c.device, c.mib) for c in a.others()] == [(1, 12000)]


def test_release_frees_the_memory_and_a_refused_claim_records_nothing(make: Make, spawn):
    a, b = make("home-a"), make("home-b")
    assert a.claim([Claim("1.1", 0, 12000)], {0: GPU})
    assert not b.claim([Claim("2.1", 0, 12000)], {0: GPU})
    assert a.others() == []
    a.release("1.1")
    assert b.others() == []
    assert b.claim([Claim("2.1", 0, 12000)], {0: GPU})


def test_the_caller_counts_its_own_claims(make: Make):
    """Free memory as the daemon sees it already holds its own reservations: the ledger
    subtracts only the other queues' claims."""
    a = make("home-a")
    assert a.claim([Claim("1.1", 0, 12000)], {0: GPU})
    assert not a.claim([Claim("2.1", 0, 12000)], {0: GPU - 12000})
    assert a.claim([Claim("2.1", 0, 4000)], {0: GPU - 12000})


def test_one_pass_claims_placements_in_turn_and_binds_them_together(make: Make, spawn):
    a, b = make("home-a"), make("home-b")
    assert a.claim([Claim("1.1", 0, 4000)], {0: GPU})
    results = b.claim_each([[Claim(f"{n}.1", 0, 6000)] for n in (1, 2, 3)], {0: GPU})
    assert [r.ok for r in results] == [True, True, False]
    assert [c.mib for c in results[2].blockers] == [4000]
    done = spawn("true")
    done.wait()
    assert b.bind_all({"1.1": spawn().pid, "2.1": done.pid}) == {"1.1": True, "2.1": False}
    assert [c.mib for c in a.others()] == [6000]


def test_memory_nvml_shows_as_used_by_the_claiming_task_is_not_counted_twice(make: Make, spawn):
    a, b = make("home-a"), make("home-b")
    task = spawn("sh", "-c", "sleep 60 & wait")
    assert a.claim([Claim("1.1", 0, 12000)], {0: GPU})
    a.bind("1.1", task.pid)
    child = wait_for(lambda: psutil.Process(task.pid).children(), what="the task's child")[0].pid
    # NVML shows the task's child using 9000 of its 12000: 3000 are still outstanding.
    nvml = {0: [(child, 9000), (os.getpid(), 100)]}
    [seen] = b.others(nvml)
    assert seen.outstanding_mib == 3000
    assert b.claim([Claim("2.1", 0, 4000)], {0: GPU - 9000 - 100}, nvml)
    assert not b.claim([Claim("3.1", 0, 4000)], {0: GPU - 9000 - 100 - 4000}, nvml)


def test_a_bound_claim_lives_exactly_as_long_as_its_process(make: Make, spawn):
    a, b = make("home-a"), make("home-b")
    task = spawn()
    assert a.claim([Claim("1.1", 0, 12000)], {0: GPU})
    assert a.bind("1.1", task.pid)
    a.close()
    del a  # the daemon that made it is no longer needed
    assert not b.claim([Claim("2.1", 0, 12000)], {0: GPU})
    end(task)
    assert b.others() == []
    assert b.claim([Claim("2.1", 0, 12000)], {0: GPU})


def test_binding_to_a_dead_process_drops_the_claim(make: Make, spawn):
    a, b = make("home-a"), make("home-b")
    task = spawn("true")
    task.wait()
    assert a.claim([Claim("1.1", 0, 12000)], {0: GPU})
    assert not a.bind("1.1", task.pid)
    assert b.others() == []


def test_a_restarted_daemon_adopts_its_running_tasks_claims_and_drops_the_rest(make: Make, spawn):
    a, other = make("home-a"), make("home-b")
    running, ended = spawn(), spawn()
    for key, task in (("1.1", running), ("2.1", ended)):
        assert a.claim([Claim(key, 0, 4000)], {0: GPU})
        a.bind(key, task.pid)
    assert a.claim([Claim("3.1", 0, 4000)], {0: GPU})  # claimed, never spawned
    end(ended)
    restarted = make("home-a")
    # The task whose claim was lost (e.g. the ledger directory was wiped) gets one again.
    assert restarted.adopt([Claim("1.1", 0, 4000), Claim("9.1", 1, 2000)], running.pid)
    restarted.retain(["1.1", "9.1"])
    assert sorted((c.device, c.mib) for c in other.others()) == [(0, 4000), (1, 2000)]
    restarted.release("1.1")
    restarted.release("9.1")
    assert other.others() == []


# Fairness: the in-memory ledger plays two users (the file ledger needs real ones).
def test_fairness_round_robin_lets_the_user_served_least_recently_go_first(spawn):
    board = Board()
    alice = MemoryLedger(board, "alice", 60001, fairness="round_robin")
    bob = MemoryLedger(board, "bob", 60002)
    assert alice.claim([Claim("1.1", 0, 8000)], {0: GPU})
    alice.bind("1.1", spawn().pid)
    bob.publish(Demand(devices=1, mib=8000, since=time.time() - 5))
    # Alice holds memory and Bob holds none: Bob's next task goes first.
    refused = alice.claim([Claim("2.1", 0, 8000)], {0: GPU - 8000}, waiting_since=time.time())
    assert not refused and refused.waits_for == "60002"
    assert "60002's turn" in refused.note()
    # Memory Bob's demand does not need is Alice's to take.
    assert alice.claim([Claim("2.1", 0, 100)], {0: GPU - 8000})
    assert bob.claim([Claim("5.1", 0, 8000)], {0: GPU})


def test_a_demand_that_never_becomes_a_claim_is_waited_for_only_so_long(spawn):
    board = Board()
    alice = MemoryLedger(board, "alice", 60001, fairness="equal_share")
    bob = MemoryLedger(board, "bob", 60002)
    assert alice.claim([Claim("1.1", 0, 100)], {0: GPU})
    alice.bind("1.1", spawn().pid)
    bob.publish(Demand(devices=1, mib=GPU - 100, since=0))
    assert not alice.claim([Claim("2.1", 0, 1000)], {0: GPU - 100})
    alice.yield_limit = 0
    assert alice.claim([Claim("2.1", 0, 1000)], {0: GPU - 100})


# -- the file ledger ---------------------------------------------------------------------------
def ledger_files(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name.startswith("meow-ledger-")
                  and not p.name.endswith(".lock"))


def test_files_hold_no_task_details_and_go_when_empty(tmp_path: Path, spawn):
    a = FileLedger(tmp_path, SCOPE, "home-a")
    assert a.claim([Claim("train-secret-name", 0, 12000)], {0: GPU})
    a.bind("train-secret-name", spawn().pid)
    [name] = ledger_files(tmp_path)
    stem = f"meow-ledger-{SCOPE}.u{os.getuid()}.home-a."
    assert name.startswith(stem) and re.fullmatch("[0-9a-f]{12}", name.removeprefix(stem))
    assert a.claim([Claim("another", 0, 1000)], {0: GPU - 12000})
    [renamed] = ledger_files(tmp_path)  # each write a fresh name; the old file is gone
    assert renamed != name and renamed.startswith(stem)
    a.release("another")
    [name] = ledger_files(tmp_path)
    path = tmp_path / name
    assert path.stat().st_mode & 0o777 == 0o644
    assert b"secret" not in path.read_bytes()
    a.release("train-secret-name")
    assert ledger_files(tmp_path) == []


def test_expire_removes_dead_claims_and_files_of_dead_daemons(tmp_path: Path, spawn):
    a, b = FileLedger(tmp_path, SCOPE, "home-a"), FileLedger(tmp_path, SCOPE, "home-b")
    live, dead = spawn(), spawn()
    for key, task in (("1.1", live), ("2.1", dead)):
        assert a.claim([Claim(key, 0, 1000)], {0: GPU})
        a.bind(key, task.pid)
    end(dead)
    assert a.expire() == 1
    assert [c.mib for c in b.others()] == [1000]
    end(live)
    a.expire()
    assert ledger_files(tmp_path) == []  # (tests/ledger: a dead daemon's file goes too)


def write_record(path: Path, **fields) -> None:
    me = proc(os.getpid())
    assert me is not None
    record = {"v": 1, "boot": boot_id(), "ns": "x", "daemon": [os.getpid(), me.ticks],
              "claims": [], "demand": None, **fields}
    path.write_text(json.dumps(record))


def test_bad_and_stale_entries_never_stop_placement(tmp_path: Path, spawn):
    b = FileLedger(tmp_path, SCOPE, "home-b")
    task = spawn()
    me = proc(task.pid)
    assert me is not None
    prefix = tmp_path / f"meow-ledger-{SCOPE}.u"
    good = ["k", 0, 1000, time.time(), task.pid, me.ticks]
    write_record(Path(f"{prefix}1.garbage"), claims=[good])
    Path(f"{prefix}2.garbage").write_bytes(b"\x00not json{")
    Path(f"{prefix}3.big").write_bytes(b" " * (1 << 20))
    os.mkfifo(f"{prefix}4.fifo")  # reading it must not block
    os.symlink(f"{prefix}1.garbage", f"{prefix}5.link")
    write_record(Path(f"{prefix}6.badfields"), claims=[
        ["k", -1, 1000, 0, task.pid, me.ticks], ["k", 0, "lots", 0, task.pid, me.ticks],
        ["k", 0, True, 0, task.pid, me.ticks], "nonsense", ["short"],
        ["k", 0, 5000, time.time(), task.pid, me.ticks + 1],  # a reused pid
        ["k", 0, 5000, time.time(), 1 << 30, 5],  # no such process
    ])
    write_record(Path(f"{prefix}7.reboot"), boot="an earlier boot", claims=[good])
    write_record(Path(f"{prefix}8.types"), claims={"not": "a list"})
    write_record(Path(f"{prefix}9.deep"), ns=[[[[[[[]]]]]]] * 1000)
    # Only the one well-formed live claim counts (the symlink to it is not followed).
    assert [(c.device, c.mib) for c in b.others()] == [(0, 1000)]
    assert b.claim([Claim("1.1", 0, GPU - 1000)], {0: GPU})
    b.expire()  # as root, the earlier boot's file goes whoever owns it
    assert not Path(f"{prefix}7.reboot").exists()


def hold_lock(path: Path) -> subprocess.Popen[bytes]:
    """Another process that takes the lock and never lets go."""
    code = ("import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    return holder


def test_a_lock_held_forever_delays_placement_but_never_stops_it(tmp_path: Path, spawn):
    a = FileLedger(tmp_path, SCOPE, "home-a", lock_timeout=0.2)
    b = FileLedger(tmp_path, SCOPE, "home-b", lock_timeout=0.2)
    assert a.claim([Claim("1.1", 0, 12000)], {0: GPU})
    a.bind("1.1", spawn().pid)
    holder = hold_lock(a.lock_path)
    try:
        result = b.claim([Claim("2.1", 0, 8000)], {0: GPU})
        assert not result and result.degraded and "stayed locked" in result.degraded
        # Without the lock, the ledger still counts what it can read, and records.
        assert b.claim([Claim("3.1", 0, 4000)], {0: GPU}).degraded
        assert [c.mib for c in a.others()] == [4000]
    finally:
        end(holder)
    assert b.claim([Claim("4.1", 0, 100)], {0: GPU}).degraded is None


def test_a_lock_file_replaced_by_its_owner_is_followed(tmp_path: Path):
    a = FileLedger(tmp_path, SCOPE, "home-a", lock_timeout=0.2)
    assert a.claim([Claim("1.1", 0, 100)], {0: GPU}).degraded is None
    holder = hold_lock(a.lock_path)
    try:
        a.lock_path.unlink()  # its owner deletes it while it is held: lock the new file
        assert a.claim([Claim("2.1", 0, 100)], {0: GPU}).degraded is None
    finally:
        end(holder)
    fd = os.open(a.lock_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and it let go of it
    os.close(fd)


# -- choosing a ledger -------------------------------------------------------------------------
def test_meow_ledger_picks_the_ledger(tmp_path: Path):
    paths = resolve_paths({"MEOW_HOME": str(tmp_path / "home")})
    assert isinstance(open_ledger(paths, SCOPE, {"MEOW_LEDGER": "off"}), NullLedger)
    private = open_ledger(paths, SCOPE, {"MEOW_LEDGER": "private"})
    assert isinstance(private, FileLedger) and private.base == tmp_path / "home" / "ledger"
    shared = open_ledger(paths, SCOPE, {"MEOW_LEDGER": str(tmp_path / "shared")})
    assert isinstance(shared, FileLedger) and shared.base == tmp_path / "shared"
    machine = open_ledger(paths, "nvml", {})
    assert isinstance(machine, FileLedger) and machine.base == Path("/var/tmp")
    assert machine.lock_path == Path("/var/tmp/meow-ledger-nvml.lock")
    with pytest.raises(BadRequest, match="absolute"):
        open_ledger(paths, SCOPE, {"MEOW_LEDGER": "relative/dir"})
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    with pytest.raises(BadRequest, match="not sticky"):
        open_ledger(paths, SCOPE, {"MEOW_LEDGER": str(loose)})
    (tmp_path / "link").symlink_to(tmp_path / "shared")
    with pytest.raises(BadRequest, match="symbolic link"):
        open_ledger(paths, SCOPE, {"MEOW_LEDGER": str(tmp_path / "link")})
    with pytest.raises(BadRequest, match="fairness"):
        open_ledger(paths, SCOPE, {"MEOW_LEDGER": "private"}, fairness="lottery")
