"""The config file, as the CLI reads and writes it when no daemon is running (and for
settings the CLI itself needs, such as hook_timeout). What the settings mean and how
they are checked is in `meowd.core.settings`; meowd has its own reader (meowd/config.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from meowd.core.errors import BadRequest
from meowd.core.paths import Paths
from meowd.core.settings import Settings, config_with, parse_config, settings_from


def config_path(paths: Paths) -> Path:
    return paths.config_files[0]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadRequest(f"cannot read config {path}: {exc}") from None


def read_config(paths: Paths) -> dict[str, Any]:
    for path in paths.config_files:
        text = _read(path)
        if text is not None:
            return parse_config(text, str(path))
    return {}


def load_settings(paths: Paths) -> Settings:
    return settings_from(read_config(paths), os.environ)


def save_setting(paths: Paths, key: str, value: Any) -> Path:
    """Write one (checked) setting into the config file; None removes it."""
    path = config_path(paths)
    text = config_with(_read(path) or "", key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
