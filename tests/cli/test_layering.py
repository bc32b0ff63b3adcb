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


def test_create_does_not_load_typer(meow_env: MeowEnv):
    """The fast path, end to end (parse, autostart check, send), with -X importtime."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c",
         "import sys; from meowcli.main import main; main(sys.argv[1:])",
         "create", "true", "-n", "fast", "-c", "0", "-p", "1", "-M", "0"],
        env=meow_env.env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "created fast (id 1)\n"
    loaded = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
              if line.startswith("import time:")}
    assert not {m for m in loaded if m.split(".")[0] in ("typer", "rich", "click")}
    assert "meowd.core.protocol" not in loaded and "dataclasses" not in loaded
