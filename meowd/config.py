"""Daemon settings: defaults, then the config file (TOML), then the environment."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from meowd.core.errors import BadRequest
from meowd.core.paths import Paths


@dataclass
class Settings:
    fake_gpus: str | None = None
    """Simulated GPUs, e.g. `4x80GiB` or `2x24GiB,1x12GiB` (env MEOW_FAKE_GPUS wins)."""
    cpu_slots: int = max(1, os.cpu_count() or 1)
    """How many tasks that need no GPU (`-c 0`) may run at once."""
    poll_interval: float = 1.0
    """Seconds between device polls (NVML has no change events for memory)."""
    kill_grace: float = 10.0
    """Seconds between SIGTERM and SIGKILL when the daemon stops tasks itself."""


def load_settings(paths: Paths, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    settings = Settings()
    known = {f.name: f for f in fields(Settings)}
    for path in paths.config_files:
        if not path.is_file():
            continue
        try:
            data: dict[str, Any] = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise BadRequest(f"cannot read config {path}: {exc}") from None
        for key, value in data.items():
            if key not in known:
                raise BadRequest(f"{path}: unknown setting {key!r} (known: {', '.join(known)})")
            setattr(settings, key, value)
        break
    if env.get("MEOW_FAKE_GPUS"):
        settings.fake_gpus = env["MEOW_FAKE_GPUS"]
    return settings
