"""Daemon settings: what they are, their defaults, and their validation. Pure.

Both sides use this module: meowd applies settings, `meow set` checks them before it
sends or saves them. Reading and writing the config file is I/O and lives elsewhere
(`meowd/config.py` for the daemon); here are only the text <-> data functions.

`check_setting` says whether a value is well-formed; `check_setting_on_machine` says
whether it makes sense on this machine (GPU indices that exist, CPU slots that let
CPU tasks run).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from meowd.core.errors import BadRequest


@dataclass
class Settings:
    """Every setting with its default; SETTING_HELP says what each one does."""

    fake_gpus: str | None = None
    cpu_slots: int = max(1, os.cpu_count() or 1)
    poll_interval: float = 1.0
    kill_grace: float = 10.0
    visible_devices: list[int] | None = None
    starvation_guard: bool = True
    reserve_after: float = 0.0
    placement: str = "spread"
    head_of_line: bool = False
    cascade_cancel_on_failure: bool = False
    override_exist_tasks: str = "forbid"
    shutdown_on_complete: bool = False
    hook_timeout: float = 300.0
    max_attempts: int = 10
    default_time_limit: float = 0.0
    oom_scale: float = 1.5
    kill_leftovers: bool = True
    retention_days: float = 0.0
    executor: str = "local"
    slurm_partition: str = ""
    slurm_account: str = ""
    slurm_extra: str = ""
    slurm_poll_interval: float = 10.0
    backfill: str = "easy"
    fairness: str = "fcfs"


SETTING_HELP = {
    "fake_gpus": "Simulated GPUs, e.g. 4x80GiB or 2x24GiB,1x12GiB; none turns them off "
                 "(env MEOW_FAKE_GPUS wins). Takes effect when meowd restarts.",
    "cpu_slots": "How many tasks that need no GPU (-c 0) may run at once.",
    "poll_interval": "Seconds between device polls (NVML has no change events for memory).",
    "kill_grace": "Seconds between SIGTERM and SIGKILL when meow stops a task.",
    "visible_devices": "GPU indices meow may use, e.g. [0, 1]; all: every GPU. Others are "
                       "left to other users.",
    "starvation_guard": "Hold GPUs for the first task that keeps being overtaken, so it "
                        "cannot starve.",
    "reserve_after": "Seconds a blocked task waits before GPUs are held for it.",
    "placement": "spread (fewest tasks per GPU, then tightest fit), pack (tightest fit), "
                 "first (by index).",
    "head_of_line": "Cattino's strict order: nothing starts past a task that does not fit.",
    "cascade_cancel_on_failure": "Cancel every successor of a failed task (otherwise they "
                                 "wait, blocked).",
    "override_exist_tasks": "A new task whose fullname exists: forbid, rename (name_1, "
                            "name_2...), allow (replace it).",
    "shutdown_on_complete": "Exit the daemon once no task is waiting or running.",
    "hook_timeout": "Seconds an on_start/on_end hook may run before it counts as failed.",
    "max_attempts": "How often exit code 100 (cattino.exit_and_retry()) may requeue a task.",
    "default_time_limit": "How long a task may run when it sets no --time-limit (90s, 2h, "
                          "1d2h; 0: unlimited).",
    "oom_scale": "After a GPU out-of-memory ending with retries left, the next attempt asks "
                 "this much more memory (clamped to the largest GPU).",
    "kill_leftovers": "Stop what a task leaves running in its cgroup (or process tree) when "
                      "its main process ends, before its GPUs are handed on.",
    "retention_days": "Forget finished tasks (with their logs) this many days after they "
                      "ended (0: keep them).",
    "executor": "Where tasks run unless they say: local (this machine's GPUs) or slurm "
                "(sbatch).",
    "slurm_partition": "Partition for Slurm jobs (empty: the cluster's default).",
    "slurm_account": "Account for Slurm jobs (empty: the user's default).",
    "slurm_extra": "More sbatch arguments for every job, shell-quoted (e.g. --qos=high).",
    "slurm_poll_interval": "Seconds between squeue calls (one call for all jobs).",
    "backfill": "How later tasks may pass a blocked one: easy (only where they end before "
                "its reserved start, or use GPUs it does not need), conservative (never delay "
                "any of the first blocked tasks), guard (hold GPUs, runtimes ignored), none "
                "(plain first fit).",
    "fairness": "Between users' queues waiting for the same GPUs: fcfs (first come, first "
                "served), round_robin (users take turns at equal priority) or equal_share "
                "(the user holding the fewest GPUs goes first).",
}
"""What each setting does, for `meow set --help` and the README."""

SETTING_NAMES = tuple(f.name for f in fields(Settings))

RESTART_SETTINGS = frozenset({"fake_gpus"})
"""Settings that take effect only when meowd starts again."""

_MINIMUM = {"poll_interval": 0.05, "hook_timeout": 0.1, "oom_scale": 1.0,
            "slurm_poll_interval": 1.0}
_FREE_TEXT = frozenset({"slurm_partition", "slurm_account", "slurm_extra"})
"""Settings that take any one line of text."""
"""Floors where 0 would be harmful (a poll interval of 0 spins the daemon)."""

_CHOICES = {
    "placement": ("spread", "pack", "first"),
    "override_exist_tasks": ("forbid", "rename", "allow"),
    "executor": ("local", "slurm"),
    "fairness": ("fcfs", "round_robin", "equal_share"),
    "backfill": ("easy", "conservative", "guard", "none"),
}

_OFF = ("none", "off", "")
"""`fake_gpus` values that mean no fake GPUs."""

DEFAULT_FAKE_GPUS = "4x24GiB"
"""What `make demo`, and a first run on a machine without NVIDIA GPUs, simulate."""


# -- fake GPUs -----------------------------------------------------------------------------------
_PART = re.compile(r"^\s*(?:(\d+)\s*x\s*)?(\S+?)\s*$", re.IGNORECASE)


def parse_fake_gpus(spec: str) -> list[int]:
    """`4x80GiB` -> [81920]*4; `2x24GiB,1x12GiB` -> three devices; sizes default to MiB."""
    from meowd.core.units import parse_size_mib

    totals: list[int] = []
    usage = "use e.g. 4x80GiB or 2x24GiB,1x12GiB (sizes in MiB by default)"
    for part in spec.split(","):
        match = _PART.match(part)
        if not match or not part.strip():
            raise BadRequest(f"bad fake GPUs {spec!r}: {usage}")
        count = int(match.group(1) or 1)
        try:
            size = parse_size_mib(match.group(2))
        except BadRequest:
            raise BadRequest(f"bad fake GPUs {spec!r}: {usage}") from None
        if count < 1 or size < 1:
            raise BadRequest(f"bad fake GPUs {spec!r}: count and size must be positive")
        if len(totals) + count > 4096:  # (checked before a list of `count` is made)
            raise BadRequest("at most 4096 fake GPUs")
        totals.extend([size] * count)
    return totals


# -- one setting ---------------------------------------------------------------------------------
def check_setting(key: str, value: Any) -> Any:
    """A validated value for one setting, or BadRequest saying what is expected.
    For visible_devices and fake_gpus, None (typed `all` / `none`) means the default."""
    if key not in SETTING_NAMES:
        raise BadRequest(f"unknown setting {key!r} (settings: {', '.join(SETTING_NAMES)})")
    default = getattr(Settings, key)
    if key == "visible_devices":
        if isinstance(value, str) and value.lower() in ("none", "all"):
            return None
        if value is not None and not (
            isinstance(value, list)
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
        ):
            raise BadRequest("visible_devices must be a list of GPU indices, e.g. [0, 1] "
                             "(or `all`)")
        return None if value is None else sorted(set(value))
    if key == "fake_gpus":
        if value is None or (isinstance(value, str) and value.strip().lower() in _OFF):
            return None
        if not isinstance(value, str):
            raise BadRequest(f"bad fake GPUs {value!r}: use e.g. 4x80GiB or 2x24GiB,1x12GiB "
                             "(or none)")
        parse_fake_gpus(value)
        return value.strip()
    if key in _FREE_TEXT:
        if not isinstance(value, str) or "\x00" in value or "\n" in value:
            raise BadRequest(f"{key} must be one line of text")
        return value
    if key == "default_time_limit" and isinstance(value, str):
        from meowd.core.units import parse_duration

        value = 0.0 if value.strip() in ("0", "none", "off") else parse_duration(value)
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


def parse_setting_value(text: str) -> Any:
    """What a user typed after `meow set KEY`: `true`, `3`, `-3`, `0.5`, `[0, 1]` as TOML
    reads them, anything else as the text itself. Never evaluated."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def check_setting_on_machine(key: str, value: Any, gpus: Sequence[int] | None) -> str | None:
    """Check a value that passed `check_setting` against this machine.

    `gpus`: the indices of every GPU meowd sees ([] when it sees none; None when unknown,
    which skips the GPU checks). Raises BadRequest for a value that cannot work here;
    returns one line saying the consequence of a value that works but surprises (a
    warning), or None."""
    if key == "visible_devices" and value is not None:
        if gpus is not None and not gpus:
            return ("no GPUs are visible to meow here: visible_devices applies once meowd "
                    "sees GPUs")
        if not value:
            return "visible_devices = []: meow may use no GPU, so no GPU task will start"
        if gpus is not None:
            missing = [i for i in value if i not in gpus]
            if missing:
                raise BadRequest(
                    f"visible_devices: no GPU {', '.join(map(str, missing))} here "
                    f"(meowd sees {len(gpus)} GPU(s): {_ranges(gpus)})")
    if key == "cpu_slots" and value == 0:
        return ("cpu_slots = 0: tasks without GPUs (-c 0) will wait until cpu_slots is "
                "raised")
    if key == "max_attempts" and value == 0:
        return "max_attempts = 0: exit code 100 (exit_and_retry) fails the task instead"
    return None


def _ranges(indices: Sequence[int]) -> str:
    items = sorted(indices)
    if items and items == list(range(items[0], items[-1] + 1)) and len(items) > 2:
        return f"{items[0]}-{items[-1]}"
    return ", ".join(map(str, items))


# -- the config file as text ---------------------------------------------------------------------
def parse_config(text: str, where: str) -> dict[str, Any]:
    """The settings in a config file's text, each checked; BadRequest naming `where`."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"cannot read config {where}: {exc}") from None
    checked = {}
    for key, value in data.items():
        try:
            checked[key] = check_setting(key, value)
        except BadRequest as exc:
            raise BadRequest(f"{where}: {exc.message}") from None
    return checked


def settings_from(config: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Defaults, then the config file's values, then the environment (MEOW_FAKE_GPUS)."""
    settings = Settings()
    for key, value in config.items():
        if value is not None:
            setattr(settings, key, value)
    if environ.get("MEOW_FAKE_GPUS"):
        settings.fake_gpus = environ["MEOW_FAKE_GPUS"]
    return settings


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # a TOML basic string for what settings hold


def config_with(text: str, key: str, value: Any) -> str:
    """A config file's text with one setting changed (None removes it), others kept."""
    data: dict[str, Any] = tomllib.loads(text) if text.strip() else {}
    if value is None:
        data.pop(key, None)
    else:
        data[key] = value
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in sorted(data.items()))
