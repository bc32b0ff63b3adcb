"""Tasks started straight into their cgroups (glibc's POSIX_SPAWN_SETCGROUP, >= 2.39).

Where the system's glibc is older, these run a Python (and meowd) under the loader of the
newer glibc that .ci/ensure-glibc fetched; without either they skip and say why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from meowd.executors.cgroups import Cgroups
from tests.conftest import ROOT, MeowEnv, spawn_into_cgroup_prefix, wait_for

PREFIX = spawn_into_cgroup_prefix()
pytestmark = [
    pytest.mark.skipif(PREFIX is None, reason="no glibc >= 2.39 here, nor one that "
                       ".ci/ensure-glibc fetched"),
    pytest.mark.skipif(Cgroups.detect() is None, reason="no writable cgroup v2 here"),
]


def run_python(code: str, **env: str) -> dict:
    """Run `code` in a Python under the newer glibc; it prints one JSON object."""
    assert PREFIX is not None
    out = subprocess.run([*PREFIX, sys.executable, "-c", textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env}, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_child_starts_in_its_cgroup_in_a_new_session_with_default_signals(tmp_path: Path):
    got = run_python(f"""
        import json, os, signal, time
        from meowd.executors.cgroups import Cgroups
        from meowd.executors.spawn import DirectSpawn
        groups = Cgroups.detect("test-spawn-{os.getpid()}")
        group = groups.create("child")
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)    # as in meowd: must not leak
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
        out = "{tmp_path}/out"
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        pid = DirectSpawn.load().spawn(
            "/bin/sh", ["/bin/sh", "-c", "cat /proc/self/cgroup; echo sid $(ps -o sid= -p $$); "
                        "grep -E '^Sig(Blk|Ign)' /proc/self/status; "
                        "echo in $(readlink /proc/$$/fd/0); echo err >&2"],
            {{"PATH": os.environ["PATH"]}},
            [(0, "/dev/null", os.O_RDONLY, 0), (1, out, flags, 0o600),
             (2, out + ".err", flags, 0o600)],
            [signal.SIGPIPE], str(group))
        _, status = os.waitpid(pid, 0)
        time.sleep(0.05)
        group.rmdir(); group.parent.rmdir()
        print(json.dumps({{"pid": pid, "status": status, "group": str(group),
                          "mount": str(groups.mount), "out": open(out).read(),
                          "err": open(out + ".err").read(),
                          "mode": oct(os.stat(out).st_mode & 0o777)}}))
    """)
    assert got["status"] == 0
    lines = got["out"].splitlines()
    member = next(line for line in lines if line.startswith("0::"))
    assert got["group"] == got["mount"] + member[3:]       # born in its cgroup
    assert f"sid {got['pid']}" in lines                    # its own session
    assert "in /dev/null" in lines
    sigs = dict(line.split(":\t") for line in lines if line.startswith("Sig"))
    assert int(sigs["SigBlk"], 16) == 0                     # empty signal mask
    assert int(sigs["SigIgn"], 16) & (1 << (13 - 1)) == 0   # SIGPIPE back to default
    assert got["err"] == "err\n" and got["mode"] == "0o600"


def test_bad_arguments_are_refused_before_anything_starts(tmp_path: Path):
    got = run_python(f"""
        import json, os
        from meowd.executors.cgroups import Cgroups
        from meowd.executors.spawn import DirectSpawn
        groups = Cgroups.detect("test-spawn-{os.getpid()}")
        group = groups.create("bad")
        spawn = DirectSpawn.load()
        errors = {{}}
        for name, argv, env, where in [
            ("nul", ["/bin/sh", "-c", "true\\0"], {{}}, str(group)),
            ("env", ["/bin/sh"], {{"A=B": "1"}}, str(group)),
            ("missing", ["/nonexistent"], {{}}, str(group)),
            ("nogroup", ["/bin/sh"], {{}}, str(group) + "-gone"),
        ]:
            try:
                spawn.spawn(argv[0], argv, env, [], [], where)
                errors[name] = None
            except (OSError, ValueError) as exc:
                errors[name] = type(exc).__name__ + ":" + str(getattr(exc, "errno", ""))
        members = open(f"{{group}}/cgroup.procs").read()
        group.rmdir(); group.parent.rmdir()
        print(json.dumps({{"errors": errors, "members": members}}))
    """)
    import errno
    assert got["errors"] == {"nul": "ValueError:", "env": "ValueError:",
                             "missing": f"FileNotFoundError:{errno.ENOENT}",
                             "nogroup": f"FileNotFoundError:{errno.ENOENT}"}
    assert got["members"] == ""


def test_executor_falls_back_to_joining_when_the_spawn_into_a_cgroup_fails(tmp_path: Path):
    """A folder that is no cgroup (clone3 refuses it): the task still runs, its wrapper
    joining as before, and later starts do not try again."""
    got = run_python(f"""
        import asyncio, json, os
        from meowd.executors.base import Launch
        from meowd.executors.cgroups import Cgroups
        from meowd.executors.local import LocalExecutor

        async def main():
            ex = LocalExecutor(lambda task_id, exit: None,
                               cgroups=Cgroups(__import__("pathlib").Path("{tmp_path}/fake")))
            os.makedirs("{tmp_path}/fake")
            tried = ex._direct is not None
            home = "{tmp_path}/t"
            launch = Launch(1, 1, "t", "echo ran", "/", {{"PATH": os.environ["PATH"]}},
                            home + "/out", home + "/err", home + "/attempt-1.exit")
            await ex.start_async(launch)
            for _ in range(500):  # the wrapper's exit file: the command has ended
                if os.path.exists(launch.exit_file):
                    break
                await asyncio.sleep(0.01)
            ex.detach_all()
            return {{"tried": tried, "after": ex._direct is not None,
                     "out": open(home + "/out").read(),
                     "joined": open("{tmp_path}/fake/task-1-1/cgroup.procs").read()}}
        print(json.dumps(asyncio.run(main())))
    """)
    assert got["tried"] and not got["after"]
    assert got["out"] == "ran\n"
    assert got["joined"].strip().isdigit()  # the wrapper wrote its pid there instead


@pytest.mark.parametrize("join", [False, True], ids=["spawned-into", "joined"])
def test_daemon_task_runs_in_its_cgroup_and_kill_reaches_an_escapee(meow_home: MeowEnv,
                                                                   tmp_path: Path, join: bool):
    """meowd under the newer glibc: the wrapper has nothing to join (its argv says so),
    yet the task's tree is in the task's cgroup and `meow kill` reaches a grandchild that
    escaped its session; MEOW_CGROUP_JOIN=1 keeps the older way."""
    env = meow_home
    env.prefix = list(PREFIX or [])
    if join:
        env.env["MEOW_CGROUP_JOIN"] = "1"
    env.start()
    try:
        gc = tmp_path / "gc"
        env.meow("create", f"setsid /bin/sh -c 'sleep 300 & echo $! > {gc}'; sleep 300",
                 "-n", "t", "-c", "0")
        pid = int(wait_for(lambda: gc.exists() and gc.read_text().strip(), what="grandchild"))
        task = env.wait_status("t", "running")
        wrapper = env.client().show(str(task["id"]))["pid"]
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        assert f"/task-{task['id']}-1" in cgroup
        argv = Path(f"/proc/{wrapper}/cmdline").read_bytes().split(b"\0")
        assert argv[3] == b"meow-task" and (argv[7] == b"") != join
        env.meow("kill", "t")
        env.wait_status("t", "killed")
        wait_for(lambda: not Path(f"/proc/{pid}").exists()
                 or Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z",
                 10, "the escaped grandchild to die")
    finally:
        env.stop()
