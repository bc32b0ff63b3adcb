"""Bad input, as a new user types it, against a real daemon on fake GPUs: every row is
one command line, the exit status it must give (README "Exit codes") and the one line it
must print on stderr. Add a row with every new command or error."""

from __future__ import annotations

import itertools
import re

import pytest

from tests.conftest import MeowEnv

SETTINGS = ("fake_gpus, cpu_slots, poll_interval, kill_grace, visible_devices, "
            "starvation_guard, reserve_after, placement, head_of_line, "
            "cascade_cancel_on_failure, override_exist_tasks, shutdown_on_complete, "
            "hook_timeout, max_attempts, default_time_limit, oom_scale, kill_leftovers, "
            "retention_days, executor, slurm_partition, slurm_account, slurm_extra, "
            "slurm_poll_interval, backfill, fairness")

# (command line, exit status, the stderr line; a line ending in "..." is a prefix)
BAD_INPUTS = [
    # usage: typer's parser, in meow's words
    (["nope"], 2, "meow: error: no such command 'nope' (see `meow --help`)"),
    (["lsit"], 2, "meow: error: no such command 'lsit'; did you mean 'list'? "
                  "(see `meow --help`)"),
    (["create"], 2, "meow: error: missing argument 'COMMAND|TASK.py' "
                    "(see `meow create --help`)"),
    (["create", "true", "--prio", "1"], 2,
     "meow: error: no such option: --prio; did you mean --priority? "
     "(see `meow create --help`)"),
    (["create", "true", "-n"], 2,
     "meow: error: option '-n' requires an argument (see `meow create --help`)"),
    (["show"], 2, "meow: error: missing argument 'NAME' (see `meow show --help`)"),
    (["list", "--bogus"], 2, "meow: error: no such option: --bogus (see `meow list --help`)"),
    # create: values
    (["create", "true", "-p", "x"], 2, "meow: error: -p/--priority must be a whole number, "
                                       "not 'x'"),
    (["create", "true", "-c", "-1"], 2, "meow: error: -c/--min-devices must be 0 or more, "
                                        "not -1"),
    (["create", "true", "-M", "1.5"], 2,
     "meow: error: -M/--requires-memory-per-device: memory ratio '1.5' must be in (0, 1]; "
     "give whole MiB for absolute sizes"),
    (["create", "true", "-M", "lots"], 2,
     "meow: error: -M/--requires-memory-per-device: not a memory size: 'lots' (use MiB like "
     "24000, or 24GiB)"),
    (["create", "true", "-n", "bad name"], 2, "meow: error: invalid task name 'bad name'..."),
    (["create", "true", "--cwd", "/nonexistent/dir"], 2,
     "meow: error: --cwd /nonexistent/dir is not a directory"),
    (["create", "train.py"], 2, "meow: error: no task file train.py (to run a command, quote "
                                "it: meow create \"python train.py\")"),
    (["create", " "], 2, "meow: error: empty command"),
    (["create", "true", "--secret", "MEOW_TEST_UNSET"], 2,
     "meow: error: --secret MEOW_TEST_UNSET: MEOW_TEST_UNSET is not set here (or use "
     "NAME=VALUE)"),
    (["create", "echo", "-m", "--", "x=[]"], 2, "meow: error: empty multirun list in 'x=[]'"),
    # create: a task's life
    (["create", "true", "--time-limit", "-5m"], 2,
     "meow: error: --time-limit: invalid duration '-5m': use e.g. 90s, 30m, 2h, 1d2h"),
    (["create", "true", "--time-limit", "soon"], 2,
     "meow: error: --time-limit: invalid duration 'soon': use e.g. 90s, 30m, 2h, 1d2h"),
    (["create", "true", "--time-limit", "0s"], 2,
     "meow: error: --time-limit: invalid duration '0s': must be more than 0 and under 10 "
     "years"),
    (["create", "true", "--retries", "-1"], 2,
     "meow: error: --retries must be 0 or more, not -1"),
    (["create", "true", "--executor", "cloud"], 2,
     "meow: error: --executor must be local or slurm, not 'cloud'"),
    (["create", "true", "--after", "nope"], 1, "meow: error: after: no task 'nope'"),
    (["wait"], 2, "meow: error: wait for what? give task names, or -A for every task "
                  "(meow wait --help)"),
    (["wait", "nope"], 1, "meow: error: no task 'nope'"),
    (["wait", "t1", "--timeout", "-1"], 2,
     "meow: error: --timeout must be 0 or more seconds, not -1"),
    (["usage", "nope"], 1, "meow: error: no task 'nope'"),
    (["wait", "t1", "--timeout", "nan"], 2,
     "meow: error: --timeout must be 0 or more seconds, not nan"),
    (["create", "true", "--retries", "99999999999999999999"], 2,
     "meow: error: --retries is out of range: 99999999999999999999"),
    (["create", "true", "--after", ","], 2,
     "meow: error: --after needs task names (or ids), e.g. --after prep,train"),
    (["retry"], 2, "meow: error: give a task NAME, or -A for every task (meow retry --help)"),
    # create: refused by the daemon
    (["create", "true", "-n", "t1"], 1, "meow: error: a task named 't1' exists..."),
    (["create", "true", "-c", "3", "-M", "1000"], 1, "meow: error: task needs 3 GPU(s)..."),
    (["create", "true", "-M", "30000"], 1, "meow: error: task needs 1 GPU(s) with 30000MiB..."),
    # list
    (["list", "exp1"], 1, "meow: error: no task 'exp1' (nor a column of that name: "
                          "`meow list --json` shows every attribute)"),
    (["list", "--filter", "status==runing"], 2,
     "meow: error: no status 'runing'; statuses: waiting, running, done, failed, cancelled, "
     "killed, lost, timeout"),
    (["list", "--filter", "status="], 2, "meow: error: bad filter 'status='..."),
    (["list", "--filter", "colour==red"], 2, "meow: error: unknown field 'colour' in filter; "
                                             "fields: ..."),
    (["list", "--filter", "(status==done)"], 2,
     "meow: error: bad filter '(status==done)': parentheses are not supported (and binds "
     "tighter than or)"),
    (["list", "--filter", "status==done or"], 2, "meow: error: no status 'done or'..."),
    # show, watch, bulk commands
    (["show", "nosuch"], 1, "meow: error: no task 'nosuch'"),
    (["watch", "nosuch"], 1, "meow: error: no task 'nosuch'"),
    (["watch", "t1", "-s", "stdin"], 2, "meow: error: --stream must be stdout or stderr, "
                                        "not 'stdin'"),
    (["kill"], 2, "meow: error: give a task NAME, or -A for every task (meow kill --help)"),
    (["kill", "nosuch"], 1, "meow: error: kill nosuch: no such task"),
    (["remove", "-A", "(unclosed"], 2, "meow: error: bad regular expression '(unclosed'..."),
    # set
    (["set", "max_attempts", "-3"], 2, "meow: error: max_attempts must be a whole number >= 0"),
    (["set", "poll_interval", "0"], 2, "meow: error: poll_interval must be a number >= 0.05"),
    (["set", "visible_devices", "[7]"], 2,
     "meow: error: visible_devices: no GPU 7 here (meowd sees 2 GPU(s): 0, 1)"),
    (["set", "visible_devices", "0,1"], 2,
     "meow: error: visible_devices must be a list of GPU indices, e.g. [0, 1] (or `all`)"),
    (["set", "placement", "fast"], 2, "meow: error: placement must be one of: spread, pack, "
                                      "first"),
    (["set", "fake_gpus", "banana"], 2,
     "meow: error: bad fake GPUs 'banana': use e.g. 4x80GiB or 2x24GiB,1x12GiB (sizes in MiB "
     "by default)"),
    (["set", "nope", "3"], 2, f"meow: error: 'nope' is neither a setting nor NAME.ATTR "
                              f"(settings: {SETTINGS}; see meow set --help)"),
    (["set", "t1.command", "rm -rf /"], 2, "meow: error: cannot set 'command'..."),
    (["set", "t1.priority", "high"], 2, "meow: error: priority must be a whole number"),
    (["set", "nosuch.priority", "1"], 1, "meow: error: no task 'nosuch'"),
    # clean, completion, run
    (["clean"], 2, "meow: error: say which tasks to clean: --before WHEN, --after WHEN or "
                   "--all"),
    (["clean", "-b", "soon"], 2,
     "meow: error: bad time 'soon': use a date YYYY[-MM[-DD[ HH[:MM[:SS]]]]], a time back "
     "from now (30m, 12h, 7d, 2w) or today/yesterday"),
    (["completion", "tcsh"], 2, "meow: error: no completion for 'tcsh': use one of bash, zsh, "
                                "fish"),
    (["run"], 1, "meow: error: meowd is already running (pid ..."),
]


@pytest.fixture
def env(meow_env: MeowEnv) -> MeowEnv:
    meow_env.meow("create", "true", "-n", "t1", "-c", "0")
    meow_env.wait_status("t1", "done")
    return meow_env


def test_bad_inputs_get_one_line_and_a_documented_status(env: MeowEnv):
    failures = []
    for argv, status, line in BAD_INPUTS:
        result = env.meow(*argv, check=False)
        got = result.stderr.rstrip("\n")
        matches = got.startswith(line[:-3]) if line.endswith("...") else got == line
        if result.returncode != status or not matches or "\n" in got:
            failures.append(f"meow {' '.join(argv)}: exit {result.returncode}, "
                            f"stderr {result.stderr!r}")
    assert not failures, "\n".join(failures)
    assert env.meow("test").returncode == 0  # and the daemon is still fine


JUNK = ["", "-", "--", "-1", "x", "t1", "t1/", "[a,b]", "'", "%s", "-A", "--json", "9" * 30,
        "é", "..", "a.b", "--filter", "status>"]


def test_no_input_gives_a_traceback_or_an_undocumented_status(env: MeowEnv):
    """A second new-user pass: words no row above lists, after every command."""
    commands = ["create", "list", "show", "kill", "cancel", "resume", "remove", "watch", "set",
                "clean", "test", "devices", "completion"]
    failures = []
    for command, (a, b) in itertools.product(commands, [("x", "-1"), ("[a,b]", "--"),
                                                        ("status>", "..")]):
        argv = [command, a, b] if command != "watch" else [command, a]
        result = env.meow(*argv, check=False, timeout=20, cwd=str(env.home))
        if "Traceback" in result.stderr or result.returncode not in (0, 1, 2) or (
                result.returncode and not re.match(r"meow: (error|warning): ", result.stderr)):
            failures.append(f"meow {' '.join(argv)}: exit {result.returncode}, "
                            f"stderr {result.stderr!r}")
    for word in JUNK:
        result = env.meow("list", word, check=False)
        if "Traceback" in result.stderr or result.returncode not in (0, 1, 2):
            failures.append(f"meow list {word!r}: {result.returncode} {result.stderr!r}")
    assert not failures, "\n".join(failures)
    env.kill_leftovers()
