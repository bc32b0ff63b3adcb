"""Daemon settings: defaults, then the config file (TOML), then the environment."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from meowd.core.errors import BadRequest
from meowd.core.paths import Paths
from meowd.core.units import parse_duration


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
    visible_devices: list[int] | None = None
    """GPU indices meow may use (None: all). Others are left to other users."""
    starvation_guard: bool = True
    """Hold GPUs for the first task that keeps being overtaken, so it cannot starve."""
    reserve_after: float = 0.0
    """Seconds a blocked task waits before GPUs are held for it."""
    placement: str = "spread"
    """spread (fewest tasks per GPU, then tightest fit), pack (tightest fit), first (by index)."""
    head_of_line: bool = False
    """Cattino's strict order: nothing starts past a task that does not fit."""
    cascade_cancel_on_failure: bool = False
    """Cancel every successor of a failed task (otherwise they wait, blocked)."""
    override_exist_tasks: str = "forbid"
    """A new task whose fullname exists: forbid, rename (name_1, name_2...), allow (replace)."""
    shutdown_on_complete: bool = False
    """Exit the daemon once no task is waiting or running."""
    hook_timeout: float = 300.0
    """Seconds an on_start/on_end hook may run before it counts as failed."""
    max_attempts: int = 10
    """How often exit code 100 (`cattino.exit_and_retry()`) may requeue one task."""
    default_time_limit: float = 0.0
    """Seconds a task may run when it sets no `--time-limit` (0: unlimited)."""
    oom_scale: float = 1.5
    """After a GPU out-of-memory ending with retries left, the next attempt asks this much
    more memory (clamped to the largest GPU)."""
    kill_leftovers: bool = True
    """Stop what a task leaves running in its cgroup/tree when its main process ends."""
    retention_days: float = 0.0
    """Forget finished tasks (and their logs) this many days after they ended (0: keep)."""
    executor: str = "local"
    """Where tasks run unless they say: local (this machine's GPUs) or slurm (sbatch)."""
    slurm_partition: str = ""
    """Partition for Slurm jobs (empty: the cluster's default)."""
    slurm_account: str = ""
    """Account for Slurm jobs (empty: the user's default)."""
    slurm_extra: str = ""
    """More sbatch arguments for every job, shell-quoted (e.g. `--qos=high --constraint=a100`)."""
    slurm_poll_interval: float = 10.0
    """Seconds between squeue calls (one call for all jobs)."""


_MINIMUM = {"poll_interval": 0.05, "hook_timeout": 0.1, "oom_scale": 1.0,
            "slurm_poll_interval": 1.0}
_FREE_TEXT = frozenset({"slurm_partition", "slurm_account", "slurm_extra"})
"""Floors where 0 would be harmful (a poll interval of 0 spins the daemon)."""

_CHOICES = {
    "placement": ("spread", "pack", "first"),
    "override_exist_tasks": ("forbid", "rename", "allow"),
    "executor": ("local", "slurm"),
}


def check_setting(key: str, value: Any) -> Any:
    """A validated value for one setting, or BadRequest saying what is expected."""
    known = {f.name: f for f in fields(Settings)}
    if key not in known:
        raise BadRequest(f"unknown setting {key!r} (known: {', '.join(known)})")
    default = getattr(Settings(), key)
    if key == "visible_devices":
        if value is not None and not (
            isinstance(value, list)
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
        ):
            raise BadRequest("visible_devices must be a list of GPU indices, e.g. [0, 1]")
        return value
    if key == "fake_gpus":
        if value is not None and not isinstance(value, str):
            raise BadRequest("fake_gpus must be a string such as 4x80GiB")
        return value
    if key in _FREE_TEXT:
        if not isinstance(value, str) or "\x00" in value or "\n" in value:
            raise BadRequest(f"{key} must be one line of text")
        return value
    if key == "default_time_limit" and isinstance(value, str):
        value = parse_duration(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise BadRequest(f"{key} must be true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadRequest(f"{key} must be a whole number >= 0")
    elif isinstance(default, float):
        floor = _MINIMUM.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                floor <= value < float("inf")):
            raise BadRequest(f"{key} must be a number >= {floor:g}")
        value = float(value)
    elif isinstance(default, str) and (not isinstance(value, str) or value not in _CHOICES[key]):
        raise BadRequest(f"{key} must be one of: {', '.join(_CHOICES[key])}")
    return value


def load_settings(paths: Paths, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    settings = Settings()
    for path in paths.config_files:
        if not path.is_file():
            continue
        try:
            data: dict[str, Any] = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise BadRequest(f"cannot read config {path}: {exc}") from None
        for key, value in data.items():
            try:
                setattr(settings, key, check_setting(key, value))
            except BadRequest as exc:
                raise BadRequest(f"{path}: {exc.message}") from None
        break
    if env.get("MEOW_FAKE_GPUS"):
        settings.fake_gpus = env["MEOW_FAKE_GPUS"]
    return settings


RESTART_SETTINGS = frozenset({"fake_gpus"})
"""Settings that take effect only when meowd starts again."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # a TOML basic string for what settings hold


def save_setting(paths: Paths, key: str, value: Any) -> Path:
    """Write one setting into the config file (None removes it), keeping the others."""
    path = paths.config_files[0]
    data: dict[str, Any] = {}
    if path.is_file():
        data = tomllib.loads(path.read_text())
    if value is None:
        data.pop(key, None)
    else:
        data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in sorted(data.items())))
    tmp.replace(path)
    return path
