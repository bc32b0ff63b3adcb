"""Cattino task files end to end: a real daemon (fake GPUs), the real `meow create`, and
the files that hooks and tasks write to prove what ran, and in which order."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

from tests.conftest import MeowEnv, wait_for

EXAMPLES = Path(__file__).parents[2] / "examples" / "cattino"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def stdout_of(env: MeowEnv, name: str) -> str:
    detail = json.loads(env.meow("show", name, "--json").stdout)
    return Path(detail["attempt_list"][-1]["stdout"]).read_text()


def test_the_documented_examples_run_unchanged(meow_env: MeowEnv, tmp_path: Path):
    work = tmp_path / "examples"
    shutil.copytree(EXAMPLES, work)
    for script in ("hello.py", "pipeline.py", "dag.py", "hooks.py", "export.py"):
        meow_env.meow("create", script, cwd=str(work))
    names = ["hello", "pipeline/train", "pipeline/eval", "group_of_step1/step1",
             "group_of_step1/step2", "group_of_step1/step3", "hooked", "train"]
    for name in names:
        meow_env.wait_status(name, "done", timeout=30)
    tasks = meow_env.tasks()
    assert tasks["pipeline/train"]["devices"] == [0, 1]
    assert tasks["pipeline/train"]["reserved_mib"] == [20000, 20000]
    assert tasks["pipeline/eval"]["depends_on"] == [tasks["pipeline/train"]["id"]]
    # sequential and DAG order: each task started after its predecessor ended
    for before, after in [("pipeline/train", "pipeline/eval"),
                          ("group_of_step1/step1", "group_of_step1/step2"),
                          ("group_of_step1/step2", "group_of_step1/step3")]:
        assert tasks[after]["started_at"] >= tasks[before]["ended_at"]
    ran = [line.split()[0] for line in lines(work / "ran.log")]
    assert ran.index("step1") < ran.index("step2") < ran.index("step3")
    assert stdout_of(meow_env, "hello") == "hello world\n"
    out = stdout_of(meow_env, "hooked")
    assert out.index("Task hooked starting") < out.index("train done") \
        < out.index("Task hooked finished")


HOOK_ORDER = """
    import sys
    import cattino
    from cattino.tasks import ProcTask, TaskGroup

    LOG = sys.argv[1]

    def log(message):
        with open(LOG, "a") as f:
            f.write(message + "\\n")

    class Group(TaskGroup):
        def on_start(self):
            log(f"group {self.name} on_start")

        async def on_end(self):
            log(f"group {self.name} on_end")

    class Step(ProcTask):
        async def on_start(self):
            await super().on_start()
            log(f"task {self.name} on_start")

        def on_end(self):
            super().on_end()
            log(f"task {self.name} on_end")

    def c():
        log("callable c runs")

    a = Step(f"echo 'command a' >> {LOG}", task_name="a", min_devices=0)
    b = Step(f"echo 'command b' >> {LOG}", task_name="b", min_devices=0)
    inner = Group([b, ProcTask(c, task_name="c", min_devices=0)], "sequential", "inner")
    cattino.export(Group([a, inner], execute_strategy="sequential", group_name="outer"))
"""


def test_hooks_run_in_order_around_tasks_and_groups(meow_env: MeowEnv, tmp_path: Path):
    script = write(tmp_path / "order.py", HOOK_ORDER)
    log = tmp_path / "events.log"
    meow_env.meow("create", str(script), "--", str(log), cwd=str(tmp_path))
    for name in ("outer/a", "outer/inner/b", "outer/inner/c"):
        meow_env.wait_status(name, "done", timeout=30)
    wait_for(lambda: "group outer on_end" in lines(log), 10, "the outer group's on_end")
    assert lines(log) == [
        "group outer on_start", "task a on_start", "command a", "task a on_end",
        "group inner on_start", "task b on_start", "command b", "task b on_end",
        "callable c runs", "group inner on_end", "group outer on_end",
    ]


FAILING_HOOKS = """
    import time
    import cattino
    from cattino.tasks import ProcTask

    class BadStart(ProcTask):
        def on_start(self):
            raise ValueError("boom")

    class BadEnd(ProcTask):
        async def on_end(self):
            raise RuntimeError("late")

    class Hangs(ProcTask):
        def on_start(self):
            time.sleep(3600)

    cattino.export(BadStart("touch started-anyway", task_name="badstart", min_devices=0))
    cattino.export(BadEnd("true", task_name="badend", min_devices=0))
    cattino.export(Hangs("touch hung-ran", task_name="hangs", min_devices=0))
"""


def test_a_hook_that_raises_or_hangs_is_reported_and_stalls_nothing(
        meow_env: MeowEnv, tmp_path: Path):
    meow_env.meow("set", "hook_timeout", "4")
    write(tmp_path / "hooks.py", FAILING_HOOKS)
    meow_env.meow("create", "hooks.py", cwd=str(tmp_path))
    bad = meow_env.wait_status("badstart", "failed", timeout=20)
    assert bad["reason"] == "on_start raised ValueError: boom (exit code 97)"
    assert not (tmp_path / "started-anyway").exists()
    detail = json.loads(meow_env.meow("show", "badstart", "--json").stdout)
    assert "Traceback" in Path(detail["attempt_list"][0]["stderr"]).read_text()
    end = meow_env.wait_status("badend", "done", timeout=20)
    assert end["warning"] == "on_end raised RuntimeError: late"
    # While a hook hangs, the daemon goes on: a new task starts and finishes.
    assert meow_env.status("hangs") == "running"
    meow_env.meow("create", "true", "-n", "meanwhile", "-c", "0")
    meow_env.wait_status("meanwhile", "done")
    assert meow_env.status("hangs") == "running"
    hung = meow_env.wait_status("hangs", "failed", timeout=20)
    assert hung["reason"] == "on_start timed out after 4s (hook_timeout) (exit code 97)"
    assert not (tmp_path / "hung-ran").exists()


DAG = """
    import cattino
    from cattino.tasks import ProcTask, TaskGraph, TaskGroup

    first = ProcTask("true", task_name="first", min_devices=0)
    middle = ProcTask("exit 3", task_name="middle", min_devices=0)
    last = ProcTask("touch last-ran", task_name="last", min_devices=0)
    side = ProcTask("true", task_name="side", min_devices=0)
    g = TaskGraph()
    g.add_edges_from([(first, middle), (middle, last), (first, side)])
    cattino.export(TaskGroup(first, g, group_name="dag"))
"""


def test_a_failed_middle_task_blocks_its_successors(meow_env: MeowEnv, tmp_path: Path):
    write(tmp_path / "dag.py", DAG)
    meow_env.meow("create", "dag.py", cwd=str(tmp_path))
    meow_env.wait_status("dag/middle", "failed")
    meow_env.wait_status("dag/side", "done")
    last = wait_for(lambda: (t := meow_env.tasks()["dag/last"])["dependency"] and t)
    assert (last["status"], last["dependency"]) == ("waiting", "blocked: dag/middle failed")
    assert last["why"] == "blocked: dag/middle failed" and last["reason"] is None
    assert not (tmp_path / "last-ran").exists()
    assert "blocked: dag/middle failed" in meow_env.meow("list").stdout
    # clean keeps a failed task that a waiting task still depends on
    cleaned = meow_env.meow("clean", "--all", "-v").stdout
    assert "dag/middle" not in cleaned and "dag/side" in cleaned
    assert meow_env.tasks()["dag/last"]["dependency"] == "blocked: dag/middle failed"
    # With cascade_cancel_on_failure, the successors are cancelled instead.
    meow_env.meow("set", "cascade_cancel_on_failure", "true")
    meow_env.meow("create", "dag.py", "-g", "again", cwd=str(tmp_path))
    last = meow_env.wait_status("again/dag/last", "cancelled")
    assert last["reason"] == "cancelled: again/dag/middle failed"


def test_cycles_and_duplicates_are_refused_before_sending(meow_env: MeowEnv, tmp_path: Path):
    write(tmp_path / "cycle.py", """
        import cattino
        from cattino.tasks import ProcTask, TaskGraph, TaskGroup
        a, b = ProcTask("true", task_name="a"), ProcTask("true", task_name="b")
        g = TaskGraph()
        g.add_edges_from([(a, b), (b, a)])
        cattino.export(TaskGroup(a, g, group_name="loop"))
    """)
    result = meow_env.meow("create", "cycle.py", cwd=str(tmp_path), check=False)
    assert result.returncode == 1
    assert "cycle in group 'loop': a -> b -> a" in result.stderr
    write(tmp_path / "dup.py", """
        import cattino
        from cattino.tasks import ProcTask
        cattino.export(ProcTask("true", task_name="same"))
        cattino.export(ProcTask("true", task_name="same"))
    """)
    result = meow_env.meow("create", "dup.py", cwd=str(tmp_path), check=False)
    assert result.returncode == 1 and "'same' is exported twice" in result.stderr
    assert meow_env.tasks() == {}


def test_multirun_expands_the_cartesian_product(meow_env: MeowEnv):
    meow_env.meow("create", "echo", "-m", "-n", "sweep", "-c", "0", "--",
                  "--lr=[0.1,0.2]", "--bs", "[32,64]")
    commands = {t["fullname"]: t["command"] for t in meow_env.tasks().values()}
    assert commands == {
        "sweep_1": "echo --lr=0.1 --bs 32", "sweep_2": "echo --lr=0.1 --bs 64",
        "sweep_3": "echo --lr=0.2 --bs 32", "sweep_4": "echo --lr=0.2 --bs 64",
    }


def test_magic_strings(meow_env: MeowEnv):
    meow_env.meow("create", "echo ${task_name} ${fullname} ${fullpath} '${unknown}' ${env:MAGIC}",
                  "-n", "mg", "-g", "grp", "-c", "0", env_extra={"MAGIC": "yes"})
    meow_env.wait_status("grp/mg", "done")
    assert stdout_of(meow_env, "grp/mg") == "mg grp/mg grp/mg ${unknown} yes\n"


def test_set_changes_where_and_when_a_waiting_task_runs(meow_env: MeowEnv, tmp_path: Path):
    go = tmp_path / "go"
    meow_env.meow("create", f"while [ ! -e {go} ]; do sleep 0.05; done", "-n", "blocker",
                  "-c", "2", "-M", "20000")
    meow_env.wait_status("blocker", "running")
    meow_env.meow("create", "sleep 30", "-n", "w", "-c", "2", "-M", "20000")
    meow_env.meow("create", "sleep 30", "-n", "x", "-c", "2", "-M", "20000")
    meow_env.meow("set", "x.priority", "5")  # x now goes before the older w
    go.touch()
    meow_env.wait_status("x", "running")
    assert meow_env.status("w") == "waiting"
    refused = meow_env.meow("set", "x.min_devices", "1", check=False)
    assert refused.returncode == 1 and "is running" in refused.stderr
    # w shrinks to one GPU and 4000 MiB: it fits beside x now.
    meow_env.meow("set", "w.min_devices", "1")
    meow_env.meow("set", "w.requires_memory_per_device", "4000")
    assert len(meow_env.wait_status("w", "running")["devices"]) == 1
    bad = meow_env.meow("set", "w.command", "rm -rf /", check=False)
    assert bad.returncode == 2 and "cannot set 'command'" in bad.stderr
    meow_env.kill_leftovers()


def test_exit_code_100_and_exit_and_retry_requeue(meow_env: MeowEnv, tmp_path: Path):
    meow_env.meow("create", "test -e once || { touch once; exit 100; }", "-n", "shell",
                  "-c", "0", cwd=str(tmp_path))
    write(tmp_path / "retry.py", """
        import os
        import cattino
        from cattino.tasks import ProcTask

        def work():
            if not os.path.exists("twice"):
                open("twice", "w").close()
                cattino.exit_and_retry()

        cattino.export(ProcTask(work, task_name="py", min_devices=0))
    """)
    meow_env.meow("create", "retry.py", cwd=str(tmp_path))
    for name in ("shell", "py"):
        task = meow_env.wait_status(name, "done", timeout=20)
        assert task["attempts"] == 2


def test_override_rename_filter_attrs_and_clean(meow_env: MeowEnv):
    meow_env.meow("create", "true", "-n", "x", "-c", "0")
    refused = meow_env.meow("create", "true", "-n", "x", "-c", "0", check=False)
    assert refused.returncode == 1 and "exists" in refused.stderr
    meow_env.meow("set", "override_exist_tasks", "rename")
    assert "created x_1" in meow_env.meow("create", "true", "-n", "x", "-c", "0").stdout
    meow_env.meow("create", "exit 1", "-n", "bad", "-c", "0", "-p", "3")
    meow_env.wait_status("x_1", "done")
    meow_env.wait_status("bad", "failed")
    done = json.loads(meow_env.meow("list", "--filter", "status==done", "--json").stdout)
    assert sorted(t["fullname"] for t in done) == ["x", "x_1"]
    table = meow_env.meow("list", "status", "priority", "--filter", "priority>2").stdout
    assert table.split() == ["FULLNAME", "STATUS", "PRIORITY", "bad", "failed", "3"]
    cattino_style = meow_env.meow("list", "--filter", "task.status == 'failed'", "--json")
    assert [t["fullname"] for t in json.loads(cattino_style.stdout)] == ["bad"]
    bad_filter = meow_env.meow("list", "--filter", "status=", check=False)
    assert bad_filter.returncode == 2 and "bad filter" in bad_filter.stderr
    assert meow_env.meow("clean", "--all", "-v").stdout.startswith("cleaned 3 task(s)")
    assert meow_env.tasks() == {}
    assert meow_env.meow("clean", check=False).returncode == 2


def test_override_allow_replaces_and_shutdown_on_complete_exits(meow_env: MeowEnv):
    meow_env.meow("create", "sleep 60", "-n", "job", "-c", "0")
    meow_env.wait_status("job", "running")
    meow_env.meow("set", "override-exist-tasks", "allow")
    meow_env.meow("create", "echo replaced", "-n", "job", "-c", "0")
    meow_env.wait_status("job", "done")
    assert stdout_of(meow_env, "job") == "replaced\n"
    # the replaced task is forgotten once its process is gone
    wait_for(lambda: list(meow_env.tasks()) == ["job"], what="the replaced task to go")
    meow_env.meow("set", "shutdown_on_complete", "true")
    meow_env.meow("create", "sleep 0.5", "-n", "last", "-c", "0")
    assert meow_env.daemon.wait(20) == 0  # the daemon left by itself once idle


TASK_FILE_MISTAKES = [
    # (file, source, exit status, the one line on stderr)
    ("plain.py", "print('I export nothing')\n", 1,
     'meow: error: plain.py exported no tasks: call cattino.export(task) in it, or run it as '
     'a command: meow create "python plain.py"'),
    ("boom.py", "import cattino\nraise ValueError('oops')\n", 1,
     "meow: error: boom.py:2: ValueError: oops"),
    ("syntax.py", "import cattino\nx = = 1\n", 1,
     "meow: error: syntax.py:2: SyntaxError: invalid syntax: x = = 1"),
    ("notatask.py", "import cattino\ncattino.export('not a task')\n", 1,
     "meow: error: notatask.py:2: TypeError: cattino.export() takes a Task or TaskGroup, "
     "got 'not a task'"),
    ("negative.py", "from cattino.tasks import ProcTask\nProcTask('true', min_devices=-2)\n", 1,
     "meow: error: negative.py:2: ValueError: min_devices must be an int >= 0, got -2"),
    ("dupgroup.py", "from cattino.tasks import ProcTask, TaskGroup\n"
     "TaskGroup([ProcTask('a', task_name='x'), ProcTask('b', task_name='x')], group_name='g')\n",
     1, "meow: error: dupgroup.py:2: ValueError: duplicate task fullname 'g/x' in group 'g'"),
    ("deep.py", "import helper\nhelper.work()\n", 1,
     "meow: error: helper.py:2: KeyError: 'lr' (--traceback shows the calls that led there)"),
    ("exits.py", "import sys\nsys.exit(3)\n", 1,
     "meow: error: exits.py exited with 3 while creating tasks"),
    ("missing.py", None, 2,
     'meow: error: no task file missing.py (to run a command, quote it: meow create '
     '"python missing.py")'),
]


def test_task_file_mistakes_get_one_clear_line(meow_env: MeowEnv, tmp_path: Path):
    write(tmp_path / "helper.py", "def work():\n    return {}['lr']\n")
    for script, source, status, line in TASK_FILE_MISTAKES:
        if source is not None:
            write(tmp_path / script, source)
        result = meow_env.meow("create", script, cwd=str(tmp_path), check=False)
        assert (result.returncode, result.stderr) == (status, line + "\n"), script
    assert meow_env.tasks() == {}


def test_traceback_shows_only_the_users_frames(meow_env: MeowEnv, tmp_path: Path):
    write(tmp_path / "helper.py", "def work():\n    return {}['lr']\n")
    write(tmp_path / "deep.py", "import cattino\nimport helper\nhelper.work()\n")
    result = meow_env.meow("create", "deep.py", "--traceback", cwd=str(tmp_path), check=False)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip(" ~^")]  # no carets
    assert lines == [
        "Traceback (your code only):",
        f'  File "{tmp_path / "deep.py"}", line 3, in <module>',
        "    helper.work()",
        f'  File "{tmp_path / "helper.py"}", line 2, in work',
        "    return {}['lr']",
        "KeyError: 'lr'",
        "meow: error: helper.py:2: KeyError: 'lr'",
    ]
