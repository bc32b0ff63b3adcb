"""The quick path (meowcli/quick.py) and typer give the same output and exit status for the
plain forms of the frequent commands; anything else goes to typer."""

from __future__ import annotations

import pytest

from meowcli.quick import _parse
from tests.conftest import MeowEnv

SAME = [
    ["list"], ["list", "--json"], ["list", "--all"], ["list", "--json", "--all"],
    ["show", "ok"], ["show", "bad", "--json"], ["show", "nope"],
    ["test"], ["wait", "ok"], ["wait", "ok", "bad"], ["wait", "nope"], ["kill", "ok"],
    ["cancel", "nope"], ["resume", "bad"], ["retry", "ok"], ["retry", "nope", "--json"],
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
    ["list", "ok"], ["list", "--filter", "x"], ["show"], ["show", "a", "b"], ["kill", "-f", "x"],
    ["kill", "-A"], ["test", "x"], ["wait", "--all"], ["show", "--help"], ["list", "-h"],
    ["wait"], ["kill"], ["create", "true"], ["devices"], ["test", "--json"],
    ["list", "--all", "--all"], ["show", "ok", "--all"], ["list", "ok", "--all"],
])
def test_other_forms_go_to_typer(argv: list[str]):
    assert _parse(argv) is None
