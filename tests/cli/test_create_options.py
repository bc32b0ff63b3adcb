"""`meow create` has two parsers: the fast one (meowcli/create.py, no typer) and typer's.
Both read the options table (meowcli/options.py); here they must agree on every command
line of a table: the same CreateArgs, the same error, or the fast one steps aside (None)
and typer answers."""

from __future__ import annotations

import pytest
import typer.main

from meowcli.app import UsageError, app, typer_create_args
from meowcli.create import CreateArgs, fast_parse, task_spec
from meowcli.options import BY_DEST, CREATE_OPTIONS
from meowd.core.errors import BadRequest

CREATE = typer.main.get_command(app).commands["create"]  # type: ignore[attr-defined]


def typer_parse(argv: list[str]) -> CreateArgs:
    ctx = CREATE.make_context("create", list(argv))
    return typer_create_args(ctx.params)


def parsed(**kw: object) -> CreateArgs:
    return CreateArgs(**kw)  # type: ignore[arg-type]


AGREE = [
    (["echo"], parsed(input="echo")),
    (["echo", "hi", "there"], parsed(input="echo", args=["hi", "there"])),
    (["python train.py", "-n", "t", "--", "--lr", "0.2"],
     parsed(input="python train.py", task_name="t", args=["--lr", "0.2"])),
    (["-n", "t", "echo"], parsed(input="echo", task_name="t")),
    (["echo", "-p", "-3"], parsed(input="echo", priority=-3)),
    (["echo", "--priority=4"], parsed(input="echo", priority=4)),
    (["echo", "--task-name=a=b"], parsed(input="echo", task_name="a=b")),
    (["echo", "-M", "20GiB"], parsed(input="echo", requires_memory_per_device=20480)),
    (["echo", "-M", "0.5"], parsed(input="echo", requires_memory_per_device=0.5)),
    (["echo", "--requires-memory-per-device", "0"],
     parsed(input="echo", requires_memory_per_device=0)),
    (["echo", "-c", "0", "-m", "-g", "grp", "--cwd", "/tmp", "--enforce-memory", "--json",
      "--traceback"],
     parsed(input="echo", min_devices=0, multirun=True, as_group="grp", cwd="/tmp",
            enforce_memory=True, json=True, traceback=True)),
    (["echo", "--min-devices", "2", "--multirun", "--as-group", "g"],
     parsed(input="echo", min_devices=2, multirun=True, as_group="g")),
    (["echo", "--secret", "A=1", "--secret", "B"], parsed(input="echo", secrets=["A=1", "B"])),
    (["echo", "-n", "a", "-n", "b"], parsed(input="echo", task_name="b")),
    (["--", "echo", "-n", "x"], parsed(input="echo", args=["-n", "x"])),
    (["echo", "--", "-p", "5"], parsed(input="echo", args=["-p", "5"])),
    (["echo", "-n", "--"], parsed(input="echo", task_name="--")),
    (["echo", "-n", "-p"], parsed(input="echo", task_name="-p")),
    (["pipeline.py", "-m", "--", "--lr=[1,2]"],
     parsed(input="pipeline.py", multirun=True, args=["--lr=[1,2]"])),
    (["-"], parsed(input="-")),
]

SAME_ERROR = [
    (["echo", "-p", "x"], "-p/--priority must be a whole number, not 'x'"),
    (["echo", "-p", "1.5"], "-p/--priority must be a whole number, not '1.5'"),
    (["echo", "-c", "-1"], "-c/--min-devices must be 0 or more, not -1"),
    (["echo", "-M", "lots"], "-M/--requires-memory-per-device: not a memory size: 'lots' "
                             "(use MiB like 24000, or 24GiB)"),
    (["echo", "-M", "1.5"], "-M/--requires-memory-per-device: memory ratio '1.5' must be in "
                            "(0, 1]; give whole MiB for absolute sizes"),
]

TYPER_ONLY = [  # the fast parser steps aside; typer parses or refuses
    (["echo", "-nfoo"], parsed(input="echo", task_name="foo")),
    (["echo", "-mc", "0"], parsed(input="echo", multirun=True, min_devices=0)),
    (["echo", "--prio", "3"], "No such option: --prio"),
    (["echo", "-n"], "Option '-n' requires an argument"),
    (["echo", "--json=yes"], "Option '--json' does not take a value"),
    ([], "Missing argument 'COMMAND|TASK.py'"),
    (["-x", "echo"], "No such option: -x"),
]


@pytest.mark.parametrize(("argv", "expected"), AGREE, ids=[" ".join(a) for a, _ in AGREE])
def test_both_parsers_read_the_same(argv: list[str], expected: CreateArgs) -> None:
    assert fast_parse(argv) == expected
    assert typer_parse(argv) == expected


@pytest.mark.parametrize(("argv", "message"), SAME_ERROR,
                         ids=[" ".join(a) for a, _ in SAME_ERROR])
def test_both_parsers_refuse_alike(argv: list[str], message: str) -> None:
    with pytest.raises(BadRequest) as fast:
        fast_parse(argv)
    with pytest.raises(BadRequest) as slow:
        typer_parse(argv)
    assert fast.value.message == slow.value.message == message


@pytest.mark.parametrize(("argv", "expected"), TYPER_ONLY,
                         ids=[" ".join(a) or "(nothing)" for a, _ in TYPER_ONLY])
def test_the_fast_parser_steps_aside(argv: list[str], expected: CreateArgs | str) -> None:
    assert fast_parse(argv) is None
    if isinstance(expected, CreateArgs):
        assert typer_parse(argv) == expected
    else:
        with pytest.raises(UsageError) as exc:
            typer_parse(argv)
        assert expected in exc.value.format_message()


def test_every_option_of_the_table_is_a_typer_option() -> None:
    flags = {flag for param in CREATE.params for flag in getattr(param, "opts", ())
             if param.param_type_name == "option"}
    table = {flag for o in CREATE_OPTIONS for flag in o.flags}
    assert table == flags - {"-h", "--help"}
    for param in CREATE.params:
        if param.param_type_name == "option" and param.name != "help":
            row = BY_DEST["json" if param.name == "as_json" else param.name]
            assert param.help == row.help_text


def test_defaults_come_from_the_table() -> None:
    spec = task_spec(parsed(input="x"), "x", None)
    assert (spec["priority"], spec["min_devices"], spec["requires_memory_per_device"]) == (
        BY_DEST["priority"].effective, BY_DEST["min_devices"].effective,
        BY_DEST["requires_memory_per_device"].effective) == (0, 1, 0)
    # A task file's own values beat the defaults; the command line beats both.
    own = task_spec(parsed(input="x", priority=7), "x", None, priority=3, min_devices=0)
    assert (own["priority"], own["min_devices"]) == (7, 0)
