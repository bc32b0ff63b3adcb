"""A secret never reaches a command line (issue 11): `${env:NAME}` for a secret would put
its value in the task's argv, which every user reads in `ps`. The task has the secret in
its environment; that is where it reads it."""

from __future__ import annotations

import pytest

from cattino.magics import SecretInCommand, resolve, secret_expansions
from meowd.core.errors import BadRequest
from tests.conftest import MeowEnv


def test_secret_expansions_names_the_secrets_a_command_would_expand():
    text = "run ${env:TOKEN} ${env:HOME} ${env:PASS,default} ${env: TOKEN } ${task_name}"
    assert secret_expansions(text, ["TOKEN", "PASS", ""]) == ["TOKEN", "PASS"]
    assert secret_expansions(text, []) == []
    assert secret_expansions("echo $TOKEN ${TOKEN}", ["TOKEN"]) == []  # the shell's, later


def test_resolve_refuses_a_secret_and_expands_the_rest(monkeypatch):
    monkeypatch.setenv("TOKEN", "s3cr3t-value")
    monkeypatch.setenv("PLAIN", "ok")
    assert resolve("echo ${env:PLAIN} ${task_name}", {"task_name": "t"},
                   secret_names=["TOKEN"]) == "echo ok t"
    with pytest.raises(SecretInCommand) as caught:
        resolve("curl -H ${env:TOKEN}", {}, secret_names=["TOKEN"])
    assert isinstance(caught.value, BadRequest)  # `meow: error: ...` in the CLI
    assert caught.value.message == (
        "${env:TOKEN} would write secret TOKEN into the command line, which every user on "
        "this machine can read (ps); the task has TOKEN in its environment: read it there "
        "instead")
    assert resolve("echo ${env:TOKEN}", {}) == "echo s3cr3t-value"  # not marked secret


def test_resolve_refuses_a_secret_reached_indirectly(monkeypatch):
    monkeypatch.setenv("TOKEN", "s3cr3t-value")
    monkeypatch.setenv("WHICH", "${env:TOKEN}")
    with pytest.raises(SecretInCommand):
        resolve("echo ${env:WHICH}", {}, secret_names=["TOKEN"])


def test_meow_create_refuses_a_secret_in_the_command(meow_env: MeowEnv, tmp_path):
    value = "s3cr3t-T0KEN-value"
    result = meow_env.meow("create", "echo ${env:API_TOKEN}", "-n", "sec", "-c", "0",
                           "--secret", f"API_TOKEN={value}", check=False, cwd=str(tmp_path))
    assert result.returncode == 2  # a bad value: a usage error
    assert result.stderr.strip().splitlines() == [
        "meow: error: ${env:API_TOKEN} would write secret API_TOKEN into the command line, "
        "which every user on this machine can read (ps); the task has API_TOKEN in its "
        "environment: read it there instead"]
    script = tmp_path / "tasks.py"
    script.write_text("import cattino\nfrom cattino.tasks import ProcTask\n"
                      "cattino.export(ProcTask('echo ${env:API_TOKEN}', task_name='f'))\n")
    from_file = meow_env.meow("create", str(script), "--secret", "API_TOKEN", check=False,
                              cwd=str(tmp_path), env_extra={"API_TOKEN": value})
    assert from_file.returncode == 2 and "would write secret API_TOKEN" in from_file.stderr
    assert meow_env.tasks() == {}
    # What to do instead works: the task reads the secret from its environment.
    meow_env.meow("create", 'test "$API_TOKEN" = ' + value, "-n", "env", "-c", "0",
                  "--secret", f"API_TOKEN={value}", cwd=str(tmp_path))
    meow_env.wait_status("env", "done")
