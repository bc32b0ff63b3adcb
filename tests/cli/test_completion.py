"""`meow completion bash`: bash's own completion function, sourced from the script meow
prints, completes subcommands, options and task names (from a running daemon, never
starting one)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import BIN, MeowEnv

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def complete(env: MeowEnv, *words: str) -> list[str]:
    """What bash offers for the last word of `words`, through meow's completion function."""
    quoted = " ".join(f"'{w}'" for w in words)
    script = (f'source <(meow completion bash)\n'
              f'COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n'
              f'_meow_completion meow\n'
              f'printf "%s\\n" "${{COMPREPLY[@]}}"\n')
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                            env={**env.env, "PATH": f"{BIN}:{env.env.get('PATH', '')}"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_bash_completes_subcommands_options_and_task_names(meow_env: MeowEnv):
    meow_env.meow("create", "true", "-n", "train", "-g", "exp", "-c", "0")
    meow_env.meow("create", "true", "-n", "trial", "-c", "0")
    assert complete(meow_env, "meow", "sh") == ["show"]
    assert complete(meow_env, "meow", "c") == ["create", "cancel", "clean", "completion"]
    assert complete(meow_env, "meow", "create", "x", "--pri") == ["--priority"]
    assert complete(meow_env, "meow", "show", "tr") == ["trial"]
    assert complete(meow_env, "meow", "kill", "ex") == ["exp/", "exp/train"]
    assert complete(meow_env, "meow", "completion", "") == ["bash", "zsh", "fish"]


def test_task_names_never_start_a_daemon(meow_home: MeowEnv):
    assert complete(meow_home, "meow", "show", "") == []
    assert complete(meow_home, "meow", "wat") == ["watch"]
    assert not meow_home.paths.socket.exists()


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_name_meow(shell: str):
    script = subprocess.run([str(BIN / "meow"), "completion", shell], capture_output=True,
                            text=True, check=True).stdout
    assert "_MEOW_COMPLETE=complete_" + shell in script
    if shell == "zsh":
        assert "compdef _meow_completion meow" in script
