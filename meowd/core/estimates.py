"""How long a task will run, as placement needs it. Pure: no I/O, no clock.

Sources, best first (the issue's order):
- its time limit (`--time-limit`): an upper bound, since the task is stopped there;
- the history of similar tasks (`history_keys`): a high quantile of their runtimes,
  because runtimes are heavy-tailed and an estimate that is too short lets backfilled
  tasks delay the task they pass, while one that is too long only costs some backfill;
- else unknown (None): placement lets such a task pass a reserved one only where it
  leaves the reservation its memory.

An estimate a running task outlives is raised (`current`): from then on the elapsed time
is a lower bound, and a task that ran as long as expected is, with heavy tails, expected
to run about as long again. A time limit is never raised far: the task is being stopped.

The daemon stores the runtime of every task that ends done under each of its
`history_keys`, and asks `from_keys` (or `estimate`, when there is a time limit).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

QUANTILE = 0.9
"""History estimates are this quantile of past runtimes."""
MIN_RUNS = 3
"""Fewer past runs than this: the longest of them, times `FEW_RUNS_FACTOR`."""
FEW_RUNS_FACTOR = 2.0
HISTORY_LENGTH = 50
"""Only the most recent runs count: code and data change."""
OVERRUN_FACTOR = 2.0
"""An outlived history estimate becomes elapsed x this."""
MIN_REMAINING_S = 60.0
"""... and at least this much more."""
LIMIT_GRACE_S = 15.0
"""An outlived time limit: the task is being stopped, give it this long."""

Source = Literal["limit", "history"]


@dataclass(frozen=True)
class Estimate:
    seconds: float
    source: Source

    def describe(self) -> str:
        """`~2h10m (time limit)`, `~35m (history)`: how `meow show` says it."""
        source = "time limit" if self.source == "limit" else "history"
        return f"~{format_duration(self.seconds)} ({source})"


def from_limit(time_limit_s: float) -> Estimate:
    return Estimate(float(time_limit_s), "limit")


def from_history(runtimes: Sequence[float], quantile: float = QUANTILE) -> Estimate | None:
    """A high quantile of past runtimes (the most recent `HISTORY_LENGTH`); None if none."""
    recent = sorted(runtimes[-HISTORY_LENGTH:])
    if not recent:
        return None
    if len(recent) < MIN_RUNS:
        return Estimate(recent[-1] * FEW_RUNS_FACTOR, "history")
    # Linear interpolation between order statistics (numpy's default).
    at = quantile * (len(recent) - 1)
    low = int(at)
    high = min(low + 1, len(recent) - 1)
    return Estimate(recent[low] + (recent[high] - recent[low]) * (at - low), "history")


def estimate(time_limit_s: float | None, history: Sequence[float] = ()) -> Estimate | None:
    """The time limit when given, else history, else None."""
    if time_limit_s is not None:
        return from_limit(time_limit_s)
    return from_history(history)


def from_keys(runtimes: Callable[[str], Sequence[float]], keys: Sequence[str]
              ) -> Estimate | None:
    """History by the most specific key of `history_keys` with `MIN_RUNS` runs, else the
    most specific with any. `runtimes(key)`: past runtimes, oldest first (the store's)."""
    fallback: Sequence[float] = ()
    for key in keys:
        runs = runtimes(key)
        if len(runs) >= MIN_RUNS:
            return from_history(runs)
        if runs and not fallback:
            fallback = runs
    return from_history(fallback)


def current(estimate: Estimate, elapsed_s: float) -> float:
    """The estimate a task that has run `elapsed_s` runs with: raised once outlived,
    always to more than `elapsed_s`."""
    if elapsed_s < estimate.seconds:
        return estimate.seconds
    if estimate.source == "limit":
        return elapsed_s + LIMIT_GRACE_S
    return max(elapsed_s * OVERRUN_FACTOR, elapsed_s + MIN_REMAINING_S)


def expected_end(started_at: float, estimate: Estimate | None, now: float) -> float | None:
    """When a running task is expected to end (for `scheduler.Running.ends_at`): after
    `now` while it runs."""
    if estimate is None:
        return None
    if started_at + estimate.seconds > now:
        return started_at + estimate.seconds
    return started_at + current(estimate, max(estimate.seconds, now - started_at))


# -- what counts as "a similar task" -----------------------------------------------------
_WRAPPERS = {"env", "time", "nohup", "exec", "nice", "stdbuf"}
"""Skipped at the start: they run the command that follows."""
_INTERPRETERS = {"python", "bash", "sh", "zsh", "node", "ruby", "perl", "julia", "Rscript",
                 "uv", "poetry", "pipenv", "conda", "torchrun", "accelerate", "deepspeed",
                 "srun", "mpirun"}
"""Programs whose first argument (a script, a module, a subcommand) names the work."""
_SUBCOMMANDS = {"run", "launch", "exec"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")
_SUFFIX = re.compile(r"(?:[-_.](?:\d+|[0-9a-f]{6,})"
                     r"|[-_.]?(?:seed|lr|run|trial|rep)[-_=]?\d[\d.e-]*)+$", re.IGNORECASE)
_SCRIPT = re.compile(r"(/|\.(py|sh|jl|R|js|rb|pl|ipynb)$)")


def command_stem(command: str) -> str:
    """The program and what it runs, without arguments:
    `CUDA_VISIBLE_DEVICES=0 python -m pkg.train --lr 0.1` -> `python -m pkg.train`,
    `/opt/venv/bin/python3.11 train.py x=1` -> `python train.py`, `./run.sh 3` -> `run.sh`."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    words = [w for w in words if not _ASSIGNMENT.match(w)]  # env assignments, hydra args
    while words and os.path.basename(words[0]) in _WRAPPERS:
        words = words[1:]
    if not words:
        return command.strip()
    program = os.path.basename(words[0])
    program = re.sub(r"[\d.]+$", "", program) or program  # python3.11 -> python
    if program not in _INTERPRETERS:
        return program
    # An interpreter or launcher: what it runs is a module (-m), code (-c), the first
    # script, else its first plain word. Options and their values are skipped.
    stem, plain = [program], None
    rest = iter(words[1:])
    for word in rest:
        if word in ("-m", "-c"):
            return " ".join([*stem, word, next(rest, "")[:60]])
        if word.startswith("-"):
            continue
        if word in _SUBCOMMANDS or word in _INTERPRETERS:
            stem.append(word)
        elif _SCRIPT.search(word):
            return " ".join([*stem, os.path.basename(word)])
        elif plain is None:
            plain = word
    return " ".join(stem if plain is None else [*stem, plain])


def name_stem(name: str) -> str:
    """A task name less what tells runs apart: `sweep_12` -> `sweep`,
    `train-lr0.1-seed3` -> `train`, `eval_3a9f2c` -> `eval`."""
    return _SUFFIX.sub("", name) or re.sub(r"[-_.]\d+$", "", name) or name


@functools.lru_cache(maxsize=4096)
def history_keys(command: str, name: str | None = None,
                 group: str | None = None) -> tuple[str, ...]:
    """Keys to look runtimes up by, most specific first: group + name stem + command,
    name stem + command, command alone. `name` None: a random default name, which says
    nothing. Group names lose their run numbers too (`sweep-3/..` ~ `sweep-4/..`)."""
    cmd = command_stem(command)
    keys = []
    stem = name_stem(name) if name else None
    if group and stem:
        keys.append(f"{'/'.join(name_stem(part) for part in group.split('/'))}/{stem}\t{cmd}")
    if stem:
        keys.append(f"{stem}\t{cmd}")
    keys.append(f"\t{cmd}")
    return tuple(keys)  # cached (every end looks them up: shlex is slow), so immutable


def format_duration(seconds: float) -> str:
    """`45s`, `12m`, `2h10m`, `3d4h`."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m = s // 60
    if m < 60:
        return f"{m}m"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m" if m else f"{h}h"
    d, h = divmod(h, 24)
    return f"{d}d{h}h" if h else f"{d}d"
