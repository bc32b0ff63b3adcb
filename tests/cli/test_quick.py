"""The quick path (meowcli/quick.py) and typer give the same output and exit status for the
plain forms of the frequent commands; anything else goes to typer."""

from __future__ import annotations

import pytest
import typer.main

from meowcli.app import app
from meowcli.options import QUICK_OPTIONS
from meowcli.quick import _parse
from tests.conftest import MeowEnv

SAME = [
    ["list"], ["list", "--json"], ["show", "ok"], ["show", "bad", "--json"], ["show", "nope"],
    ["test"], ["test", "ok"], ["test", "nope"], ["wait", "ok"], ["wait", "ok", "bad"],
    ["wait", "nope"], ["wait", "ok", "--timeout", "5"], ["wait", "--timeout=0.5", "ok"],
    ["wait", "--timeout", "-1", "ok"], ["wait", "--timeout", "nan", "ok"], ["wait"],
    ["wait", "-A", "--json"], ["wait", "--all", "--timeout", "0"], ["kill", "ok"],
    ["kill", "-f", "ok"], ["kill", "--force", "--json", "bad"], ["kill"], ["kill", "-A", "^o"],
    ["cancel", "nope"], ["cancel", "--all", "zz.*"], ["resume", "bad"], ["resume", "-A"],
    ["retry", "ok"], ["retry", "nope", "--json"], ["remove", "nope"], ["list", "--json", "--json"],
    ["watch", "ok"], ["watch", "bad"], ["watch", "ok", "-s", "stderr"], ["watch", "nope"],
    ["watch", "--stream=stdout", "bad"], ["watch", "ok", "--stream", "x"],
    ["list", "--all"], ["list", "--json", "--all"], ["list", "--all", "--all"],
]


def test_quick_and_typer_agree(meow_env: MeowEnv):
    meow_env.meow("create", "echo ok", "-n", "ok", "-c", "0")
    meow_env.meow("create", "exit 3", "-n", "bad", "-c", "0")
    meow_env.wait_status("ok", "done")
    meow_env.wait_status("bad", "failed")
    for argv in SAME:
        assert _parse(argv) is not None, argv
        quick = meow_env.meow(*argv, check=False)
        slow = meow_env.meow(*argv, check=False, env_extra={"MEOW_SLOW_CLI": "1"})
        assert (quick.returncode, quick.stdout, quick.stderr) == \
            (slow.returncode, slow.stdout, slow.stderr), argv


@pytest.mark.parametrize("argv", [
    ["list", "ok"], ["list", "--filter", "x"], ["show"], ["show", "a", "b"], ["kill", "-Af", "x"],
    ["kill", "a", "b"], ["wait", "--timeout", "x", "a"], ["wait", "--timeout"], ["show", "--help"],
    ["list", "-h"], ["create", "true"], ["devices"], ["test", "--json"], ["cancel", "-f", "x"],
    ["show", "--", "-x"], ["kill", "--force=1", "x"], ["test", "a", "b"], ["wait", "-x"],
    ["watch", "a", "b"], ["watch", "-s"], ["watch", "-f", "x"],
    ["show", "ok", "--all"], ["list", "ok", "--all"],
])
def test_other_forms_go_to_typer(argv: list[str]):
    assert _parse(argv) is None


def test_the_option_rows_are_the_typer_options():
    """Each command's quick rows are options of its typer command, with the same help;
    any other option of that command makes the quick path step aside."""
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name, rows in QUICK_OPTIONS.items():
        params = {flag: p for p in commands[name].params if p.param_type_name == "option"
                  for flag in p.opts}
        for row in rows:
            assert {flag: params[flag].help for flag in row.flags} == \
                dict.fromkeys(row.flags, row.help), (name, row.flags)
        for flag in set(params) - {f for row in rows for f in row.flags}:
            assert _parse([name, flag, "x", "y"]) is None, (name, flag)
