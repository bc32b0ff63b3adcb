"""Everything `meow create` does beyond shipping one command: multirun expansion,
magic strings, `-g` groups, and Cattino task files (`meow create task.py`).

All of it runs here, in the user's process; the daemon receives plain task specs.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from meowd.core.errors import BadRequest, MeowError
from meowd.core.naming import random_name


class TaskFileError(MeowError):
    """A task file that raised, exited or exported nothing usable: the command line was
    fine, the file was not (exit status 1, not 2)."""

    code = "task_file"


_LIST = re.compile(r"^(?P<key>[^=\[\]]+=)?\[(?P<body>.*)\]$", re.DOTALL)


def split_params(body: str) -> list[str]:
    """`a, [b,c], "d,e"` -> ['a', '[b,c]', '"d,e"']: commas inside brackets or quotes
    do not split."""
    parts, depth, quote, current = [], 0, "", []
    for char in body:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if quote or depth:
        raise BadRequest(f"unbalanced brackets or quotes in multirun list [{body}]")
    parts.append("".join(current).strip())
    return parts


def multirun(args: list[str]) -> list[list[str]]:
    """Cartesian expansion of every `[a,b]` or `key=[a,b]` argument (Cattino's -m)."""
    choices: list[list[str]] = []
    for arg in args:
        match = _LIST.match(arg)
        if match is None:
            choices.append([arg])
            continue
        values = split_params(match.group("body"))
        if values == [""]:
            raise BadRequest(f"empty multirun list in {arg!r}")
        key = match.group("key") or ""
        choices.append([key + value for value in values])
    return [list(combo) for combo in itertools.product(*choices)]


def resolve(text: str, name: str, group: str | None, run_dir: str) -> str:
    from cattino.magics import resolve as resolve_magic

    fullname = f"{group}/{name}" if group else name
    secrets = os.environ.get("MEOW_SECRET_KEYS", "").split(",")  # never into a command line
    return resolve_magic(text, {"task_name": name, "fullname": fullname, "run_dir": run_dir},
                         secret_names=secrets)


def numbered(name: str | None, count: int, n: int) -> str | None:
    """-n NAME with several tasks: NAME_1, NAME_2... (Cattino would create duplicates)."""
    if name is None or count == 1:
        return name
    return f"{name}_{n + 1}"


def not_lists(args: list[str]) -> list[str]:
    """Arguments that look like a multirun list but are not one (`[1,2`): with -m they
    are passed on as they are, which is worth a warning."""
    return [a for a in args if "[" in a and _LIST.match(a) is None]


def multirun_params(args: list[str]) -> list[str]:
    """For each combination of `multirun(args)`, the values that vary, as the user wrote
    them: `--lr=0.1 --bs 32` for `--lr=[0.1,0.2] --bs [32,64]`."""
    labels: list[list[str]] = []
    for n, arg in enumerate(args):
        match = _LIST.match(arg)
        if match is None:
            continue
        key = match.group("key") or ""
        flag = args[n - 1] + " " if not key and n and args[n - 1].startswith("-") else ""
        labels.append([flag + key + value for value in split_params(match.group("body"))])
    return [" ".join(combo) for combo in itertools.product(*labels)] if labels else [""]


def command_specs(args: Any, run_dir: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Specs for a command input, one per multirun combination, and each one's
    parameters ("" without multirun)."""
    from meowcli.create import build_command, task_spec

    combos = multirun(args.args) if args.multirun else [args.args]
    params = multirun_params(args.args) if args.multirun else [""]
    specs = []
    for n, combo in enumerate(combos):
        command = build_command(args.input, combo)
        name = numbered(args.task_name, len(combos), n)
        if "${" in command:
            name = name or random_name()
            command = resolve(command, name, args.as_group, run_dir)
        specs.append(task_spec(args, command, name, args.as_group))
    return specs, params


# -- task files -------------------------------------------------------------------------------
def taskfile_specs(args: Any, state_dir: Path, hook_timeout: float) -> list[dict[str, Any]]:
    """Run the script once per multirun combination and turn its exports into specs."""
    from cattino._capture import groups_of, leaves, run_script

    script = os.path.abspath(args.input)
    combos = multirun(args.args) if args.multirun else [args.args]
    specs: list[dict[str, Any]] = []
    for combo in combos:
        seed = secrets.randbits(63)
        try:
            objects = run_script(script, combo, seed)
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise TaskFileError(f"{args.input} exited with {exc.code} while creating tasks") \
                    from None
            objects = []
        except MeowError:
            raise
        except Exception as exc:
            raise _script_error(exc, script, args.traceback) from None
        if not objects:
            raise TaskFileError(f"{args.input} exported no tasks: call cattino.export(task) in it, "
                             f"or run it as a command: meow create \"python {args.input}\"")
        found = leaves(objects)
        run_dir = None
        if any(_needs_runner(leaf) for leaf in found):
            run_dir = _snapshot(script, combo, seed, len(found), state_dir, hook_timeout)
        edges = _edges(objects)
        order = _topological(found, edges)
        index = {id(leaf): len(specs) + k for k, leaf in enumerate(order)}
        position = {id(leaf): n for n, leaf in enumerate(found)}
        for leaf in order:  # predecessors first: the protocol wants earlier indices
            specs.append(_leaf_spec(args, leaf, position[id(leaf)], run_dir, state_dir, index,
                                    edges, len(found), groups_of(leaf)))
    names = [(s["group"] or "") + "/" + s["name"] for s in specs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1).lstrip("/")
        raise TaskFileError(f"task fullname {dup!r} is exported twice (a multirun without "
                         "${task_name} in names? give each task its own name)")
    return specs


def _topological(leaves: list[Any], edges: list[tuple[Any, Any]]) -> list[Any]:
    """Leaves with every predecessor first, otherwise in export order (cycles were
    refused when the groups were built)."""
    preds: dict[int, set[int]] = {id(leaf): set() for leaf in leaves}
    for u, v in edges:
        preds[id(v)].add(id(u))
    done: set[int] = set()
    order: list[Any] = []
    while len(order) < len(leaves):
        for leaf in leaves:
            if id(leaf) not in done and preds[id(leaf)] <= done:
                done.add(id(leaf))
                order.append(leaf)
                break
    return order


def _script_error(exc: BaseException, script: str, traceback: bool) -> TaskFileError:
    """One line at the user's own code (`boom.py:2: ValueError: oops`); with --traceback
    the user's frames (never meow's or runpy's) are printed first."""
    from cattino._capture import describe_error, user_frames

    line, trace = describe_error(exc, script)
    if traceback:
        print(trace, end="", file=sys.stderr)
    elif len(user_frames(exc)) > 1:
        line += " (--traceback shows the calls that led there)"
    return TaskFileError(line)


def _needs_runner(leaf: Any) -> bool:
    from cattino._capture import groups_of
    from cattino.tasks import ProcTask

    if isinstance(leaf, ProcTask) and leaf.is_callable:
        return True
    return leaf.overrides_hooks() or any(g.overrides_hooks() for g in groups_of(leaf))


def _edges(objects: list[Any]) -> list[tuple[Any, Any]]:
    from cattino.tasks import TaskGroup

    edges: list[tuple[Any, Any]] = []
    for obj in objects:
        if isinstance(obj, TaskGroup):
            edges += obj.edges()
    return edges


def _leaf_spec(args: Any, leaf: Any, n: int, run_dir: Path | None, state_dir: Path,
               index: dict[int, int], edges: list[tuple[Any, Any]], count: int,
               groups: list[Any]) -> dict[str, Any]:
    from cattino.tasks import DeviceRequiredTask, ProcTask
    from meowcli.create import task_spec

    name = numbered(args.task_name, count, n) or leaf.name
    group_parts = ([args.as_group] if args.as_group else []) + [g.name for g in groups]
    group = "/".join(group_parts) or None
    if run_dir is not None and _needs_runner(leaf):
        command = (f"{shlex.quote(sys.executable)} -m cattino._runner "
                   f"{shlex.quote(str(run_dir))} {n}")
    elif isinstance(leaf, ProcTask):
        command = resolve(leaf.cmd, name, group, str(state_dir / "tasks"))
    else:
        raise TaskFileError(f"{leaf.fullname}: a {type(leaf).__name__} has nothing to run; "
                         "use ProcTask (a command or a callable)")
    device = isinstance(leaf, DeviceRequiredTask)
    after = sorted({index[id(u)] for u, v in edges if v is leaf})
    return task_spec(
        args, command, name, group, priority=leaf.priority,
        min_devices=leaf.min_devices if device else 0,
        memory=leaf.requires_memory_per_device if device else 0,
        after=after, env=dict(getattr(leaf, "env", {}) or {}),
        time_limit=getattr(leaf, "time_limit", None),
        max_retries=getattr(leaf, "max_retries", None),
        resumable=bool(getattr(leaf, "resumable", False)),
        executor=getattr(leaf, "executor", None),
    )


def _snapshot(script: str, argv: list[str], seed: int, leaves_count: int, state_dir: Path,
              hook_timeout: float) -> Path:
    """Keep what the runner needs: a copy of the script (later edits must not change
    queued tasks) and how it was run."""
    runs = state_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True, mode=0o700)
    run_dir = runs / f"{Path(script).stem}-{secrets.token_hex(6)}"
    run_dir.mkdir(mode=0o700)
    shutil.copyfile(script, run_dir / "script.py")
    (run_dir / "meta.json").write_text(json.dumps({
        "script": script, "argv": argv, "seed": seed, "leaves": leaves_count,
        "hook_timeout": hook_timeout,
    }))
    return run_dir
