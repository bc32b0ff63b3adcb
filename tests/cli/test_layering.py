"""ARCHITECTURE.md's direction of imports, checked: the CLI talks to the daemon only
through the socket and `meowd.core`; devices do not import daemon config; `meow create`
does not load typer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import MeowEnv

ROOT = Path(__file__).resolve().parents[2]

CLI_MAY_IMPORT = {
    "meowd": "the version string in meowd/__init__.py",
    "meowd.systemd": "`meow daemon install-systemd` renders unit files (pure text)",
    "meowd.config": "the config file's one reader and writer (meowd.core only; `meow set` "
                    "and a first run write it while no meowd runs)",
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_cli_imports_only_meowd_core():
    wrong = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "meowcli").glob("*.py"))
        for name in imported(path)
        if name.startswith("meowd") and not name.startswith("meowd.core")
        and name not in CLI_MAY_IMPORT
    }
    assert not wrong


def test_devices_do_not_import_daemon_config():
    for path in (ROOT / "meowd" / "devices").glob("*.py"):
        assert not {n for n in imported(path) if n.startswith("meowd.config")}, path


def loaded_modules(meow_env: MeowEnv, *argv: str) -> set[str]:
    """The modules `meow ARGV` loads, end to end (parse, connect, send, print)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c",
         "import sys; from meowcli.main import main; main(sys.argv[1:])", *argv],
        env=meow_env.env, capture_output=True, text=True, timeout=30)
    assert result.returncode in (0, 1), result.stderr
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:")}


HEAVY = {"typer", "click", "rich", "textual", "psutil", "asyncio", "dataclasses", "typing",
         "pathlib", "re", "shlex", "json", "subprocess", "meowd.core.protocol"}
"""What the fast paths never load: each costs a share of Python's own start-up."""

FAST_FORMS = [
    ("create", "true", "-n", "other", "-c", "0", "-p", "1", "-M", "20GiB", "--after", "fast",
     "--time-limit", "1h30m", "--retries", "2"),
    ("list",), ("show", "fast"), ("kill", "fast"), ("cancel", "fast"), ("resume", "fast"),
    ("retry", "fast"), ("wait", "fast"), ("test",), ("remove", "other"), ("kill", "-f", "fast"),
    ("wait", "fast", "--timeout", "5"), ("cancel", "-A", "^fa"), ("test", "fast"),
    ("watch", "fast"),
]


def test_the_fast_paths_load_nothing_heavy(meow_env: MeowEnv):
    """`meow create` and the frequent commands with their common options never load
    typer (nor pathlib, typing, re...); `--json` loads json, and with it re."""
    first = loaded_modules(meow_env, "create", "true", "-n", "fast", "-c", "0")
    assert not {m for m in first if m.split(".")[0] in HEAVY or m in HEAVY}
    assert meow_env.meow("list", "fast").stdout.count("fast") == 1
    for argv in FAST_FORMS:
        loaded = loaded_modules(meow_env, *argv)
        assert not {m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY}, argv
    for argv in (("list", "--json"), ("show", "fast", "--json")):
        loaded = loaded_modules(meow_env, *argv)
        assert not {m for m in loaded if m.split(".")[0] in HEAVY - {"json", "re"}}, argv

