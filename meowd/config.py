"""The config file: read it into Settings, write one setting back (TOML). The daemon and
the CLI (`meow set` while no meowd runs, a first run's fake GPUs, hook_timeout) both use
this reader and writer; it imports nothing but meowd.core.

What settings exist and how they are checked is pure and lives in `meowd.core.settings`;
it is re-exported here for the daemon's modules.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meowd.core.errors import BadRequest
from meowd.core.paths import Paths
from meowd.core.settings import (
    RESTART_SETTINGS,
    Settings,
    check_setting,
    check_setting_on_machine,
    config_with,
    parse_config,
    settings_from,
)

__all__ = ["RESTART_SETTINGS", "Settings", "check_setting", "check_setting_on_machine",
           "load_settings", "save_setting"]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadRequest(f"cannot read config {path}: {exc}") from None


def load_settings(paths: Paths, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then the first config file that exists, then the environment."""
    config: dict[str, Any] = {}
    for path in paths.config_files:
        text = _read(path)
        if text is not None:
            config = parse_config(text, str(path))
            break
    return settings_from(config, os.environ if environ is None else environ)


def save_setting(paths: Paths, key: str, value: Any) -> Path:
    """Write one setting into the config file (None removes it), keeping the others."""
    path = paths.config_files[0]
    text = config_with(_read(path) or "", key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
