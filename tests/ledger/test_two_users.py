"""Two real users share the machine's ledger: the test runs as root and plays a second user,
`meowtest` (created if missing), with runuser. What the second user sees of root's claims,
what they cannot do to them (forge, delete, replace, squat their file name, stall the
lock), and their fake GPU allocations seen by root's daemon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from meowd.devices.fake import FakeBackend
from meowd.ledger import Claim, FileLedger, ledger_scope, proc
from tests.conftest import wait_for

USER = "meowtest"
GPU = 16384
SCOPE = ledger_scope([GPU])

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None or shutil.which("useradd") is None,
    reason="needs root, runuser and useradd to play a second user")


@pytest.fixture(scope="module")
def uid() -> int:
    if subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                               "/usr/sbin/nologin", USER], capture_output=True, text=True)
        assert made.returncode in (0, 9), made.stderr  # 9: another test made it meanwhile
    return int(subprocess.run(["id", "-u", USER], capture_output=True, text=True,
                              check=True).stdout)


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def python(uid: int) -> list[str]:
    """A Python the second user can run, with this checkout importable (this venv's may sit
    in root's home; the ledger and the fake GPUs need only the standard library)."""
    for interpreter in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        command = ["env", f"PYTHONPATH={REPO}", interpreter]
        check = subprocess.run(["runuser", "-u", USER, "--", *command, "-c",
                                "import sys, meowd.ledger, meowd.devices.fake; "
                                "assert sys.version_info >= (3, 11)"],
                               capture_output=True, cwd="/")
        if check.returncode == 0:
            return command
    pytest.skip(f"no Python >= 3.11 that {USER} may run imports meow from {REPO}")


@pytest.fixture
def base() -> Iterator[Path]:
    """A world-writable sticky directory, as /var/tmp is (tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="meow-ledger-t-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def procs() -> Iterator[list[int]]:
    """Pids to kill at the end (the second user's tasks outlive their scripts)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


PRELUDE = textwrap.dedent("""
    import json, os, subprocess, sys
    from pathlib import Path
    from meowd.ledger import Claim, FileLedger, proc
    base, scope, args = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    QUIET = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    def task():  # (the quiet children let the script's output end with the script)
        return subprocess.Popen(["sleep", "600"], **QUIET).pid
    def attempt(action):
        try:
            action()
            return "done"
        except OSError as exc:
            return type(exc).__name__
    out = {}
""")


def as_user(python: list[str], base: Path, script: str, env: dict[str, str] | None = None,
            **args) -> dict:
    """Run `script` as the second user; it fills `out`, which comes back."""
    code = PRELUDE + textwrap.dedent(script) + "\nprint(json.dumps(out))\n"
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    result = subprocess.run(
        ["runuser", "-u", USER, "--", *python[:2], *extra, *python[2:], "-c", code, str(base),
         SCOPE, json.dumps(args)],
        capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_a_second_user_sees_only_user_gpu_mib_since_and_cannot_forge_or_delete(
        python: list[str], base: Path, uid: int, procs: list[int]):
    root = FileLedger(base, SCOPE, "root-home")
    task = subprocess.Popen(["sleep", "600"])
    procs.append(task.pid)
    assert root.claim([Claim("train-secret-42.1", 0, 6000)], {0: GPU})
    assert root.bind("train-secret-42.1", task.pid)
    [root_file] = base.glob(f"meow-ledger-{SCOPE}.u0.root-home.*")
    their = as_user(python, base, """
        mine = FileLedger(base, scope, "their-home")
        pid = task()
        out["pid"] = pid
        out["claimed"] = bool(mine.claim([Claim("1.1", 0, 2000)], {0: 16384}))
        out["bound"] = mine.bind("1.1", pid)
        out["seen"] = [[c.user, c.device, c.mib, c.same_user] for c in mine.others()]
        victim = base / args["victim"]
        out["content"] = victim.read_text()
        out["delete"] = attempt(lambda: victim.unlink())
        out["overwrite"] = attempt(lambda: open(victim, "w"))
        fake = base / "forged"
        fake.write_text("{}")
        out["replace"] = attempt(lambda: os.rename(fake, victim))
        # A claim for root's task, in a file of theirs named as if it were root's.
        me = proc(args["root_task"])
        record = {"v": 1, "boot": open("/proc/sys/kernel/random/boot_id").read().strip(),
                  "ns": "root-home", "daemon": [os.getpid(), proc(os.getpid()).ticks],
                  "claims": [["k", 0, 9000, 1.0, args["root_task"], me.ticks]], "demand": None}
        (base / f"meow-ledger-{scope}.u0.forged").write_text(json.dumps(record))
        # Claiming for root's task through the interface drops the claim.
        out["bind_other"] = mine.claim([Claim("2.1", 0, 1000)], {0: 16384}).ok and \\
            mine.bind("2.1", args["root_task"])
    """, root_task=task.pid, victim=root_file.name)
    procs.append(their["pid"])
    assert their["claimed"] and their["bound"]
    # They see root's claim as user, GPU, MiB, and nothing that names the task.
    assert their["seen"] == [["root", 0, 6000, False]]
    assert "secret" not in their["content"] and "train" not in their["content"]
    assert (their["delete"], their["overwrite"], their["replace"]) == ("PermissionError",) * 3
    assert their["bind_other"] is False
    # Root sees their one real claim; the forged one (owned by them, for root's process)
    # counts for nothing, and root's own claim is intact.
    [seen] = root.others()
    assert (seen.user, seen.uid, seen.device, seen.mib, seen.same_user) == (USER, uid, 0, 2000,
                                                                           False)
    assert root_file.stat().st_uid == 0
    assert [c.mib for c in FileLedger(base, SCOPE, "third-home").others()
            if c.uid == 0] == [6000]
    refused = root.claim([Claim("2.1", 0, 9000)], {0: GPU - 6000})
    assert not refused and f"2000MiB on GPU 0 reserved by {USER}" in refused.note()
    assert root.claim([Claim("2.1", 0, 8000)], {0: GPU - 6000})


def test_a_squatted_file_name_or_a_lock_held_forever_does_not_stop_placement(
        python: list[str], base: Path, uid: int, procs: list[int]):
    # Someone else's file (root's here: nobody else can be made up) takes the name the
    # second user's daemon of home "victim" would write.
    squatted = base / f"meow-ledger-{SCOPE}.u{uid}.victim"
    squatted.write_text("not yours")
    their = as_user(python, base, """
        mine = FileLedger(base, scope, "victim")
        out["pid"] = task()
        out["claimed"] = mine.claim([Claim("1.1", 0, 6000)], {0: 16384}).ok
        out["bound"] = mine.bind("1.1", out["pid"])
        # Then take the lock and never let go.
        fd = os.open(base / f"meow-ledger-{scope}.lock", os.O_RDONLY)
        holder = subprocess.Popen(
            [sys.executable, "-c", "import fcntl, time; fcntl.flock(3, fcntl.LOCK_EX); "
             "print('locked', flush=True); time.sleep(600)"],
            pass_fds=[fd], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True)
        out["locked"] = holder.stdout.readline().decode().strip()
        out["holder"] = holder.pid
    """)
    procs.extend([their["pid"], their["holder"]])
    assert their["claimed"] and their["bound"] and their["locked"] == "locked"
    assert squatted.read_text() == "not yours"
    # Their claims went to a file of their own (a fresh name each write: none to squat).
    theirs = [p for p in base.glob(f"meow-ledger-{SCOPE}.u{uid}.victim.*")
              if p.stat().st_uid == uid]
    assert len(theirs) == 1 and "6000" in theirs[0].read_text()
    root = FileLedger(base, SCOPE, "root-home", lock_timeout=0.2)
    assert [(c.user, c.mib) for c in root.others()] == [(USER, 6000)]
    result = root.claim([Claim("1.1", 0, 6000)], {0: GPU})
    assert result and result.degraded and "stayed locked" in result.degraded
    os.kill(their["holder"], 9)
    wait_for(lambda: root.claim([Claim("2.1", 0, 100)], {0: GPU - 6000}).degraded is None,
             what="the lock to be usable again")


def test_fake_gpus_are_shared_between_users(python: list[str], base: Path, uid: int,
                                            procs: list[int]):
    backend = FakeBackend([GPU], base / "root-home", {"MEOW_FAKE_GPUS_STATE": str(base)})
    their = as_user(python, base, """
        held = subprocess.Popen(
            [sys.executable, "-m", "meowd.devices.fake", "hold", "--spec", "1x16GiB",
             "--gpu", "0", "--mib", "5000", "--", "sleep", "600"], **QUIET)
        out["pid"] = held.pid
    """, env={"MEOW_FAKE_GPUS_STATE": str(base), "MEOW_HOME": "/nonexistent"})
    procs.append(their["pid"])
    wait_for(lambda: [(p.pid, p.used_mib) for p in backend.snapshot()[0].processes]
             == [(their["pid"], 5000)], what="their allocation on the shared fake GPU")
    holder = proc(their["pid"])
    assert holder is not None and holder.uid == uid
