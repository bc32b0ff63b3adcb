"""`meow list --json`: the daemon encodes the tasks and sends the JSON raw after its reply
(ReplyWithTail); the CLI copies it to stdout. The bytes are the ones the CLI wrote when it
encoded the rows itself."""

from __future__ import annotations

import io
import json

import pytest

from meowcli.render import task_maps
from meowd.core.errors import BadRequest
from meowd.core.protocol import PROTOCOL_VERSION, ListRequest, TaskSpec, request_from_wire
from tests.conftest import MeowEnv, wait_for


def _fill(env: MeowEnv) -> None:
    env.meow("create", "sleep 60  # é✓", "-n", "run", "-c", "0")
    env.meow("create", "echo 'quote \" back\\\\slash'", "-n", "done", "-c", "0")
    env.meow("create", "true", "-n", "gpu", "-c", "1", "-M", "1GiB", "--time-limit", "1h",
             "--after", "run")
    env.wait_status("done", "done")


def test_daemon_json_is_what_the_cli_wrote_itself(meow_env: MeowEnv):
    _fill(meow_env)
    with meow_env.client() as c:
        def stable():
            # Usage samples change a running task at any time: only a CLI call between two
            # equal listings has one answer to compare with.
            before = c.listing(recent=False)
            out = meow_env.meow("list", "--json").stdout.encode()
            return before == c.listing(recent=False) and (before, out)
        reply, out = wait_for(stable, 20, "two equal listings around the CLI call")
    maps = task_maps(reply)
    assert out == json.dumps(maps, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    assert [t["fullname"] for t in maps] == ["run", "done", "gpu"]
    assert "é✓" in out.decode()  # UTF-8 as it is, not \\u escapes


def test_the_tail_streams_through_a_connection_and_a_plain_reply_is_kept(meow_env: MeowEnv):
    _fill(meow_env)
    message = {"v": PROTOCOL_VERSION, "op": "list", "args": {"columns": True, "json": True}}
    with meow_env.client() as c:
        out = io.BytesIO()
        reply = c.call_wire(message, tail_to=out)
        assert reply["tail_bytes"] == len(out.getvalue()) > 0 and reply["total"] == 3
        assert [t["id"] for t in json.loads(out.getvalue())] == [1, 2, 3]
        # The connection is in step afterwards: the next request gets its own reply.
        assert c.ping()["pid"] > 0
        # A reply with no tail (what a daemon from before sends) comes back whole.
        plain = io.BytesIO()
        reply = c.call_wire({**message, "args": {"columns": True}}, tail_to=plain)
        assert plain.getvalue() == b"" and len(reply["rows"]) == 3


@pytest.mark.parametrize("args", [{"json": True}, {"columns": True, "recent": True,
                                                   "json": True}])
def test_json_needs_columns_and_the_whole_list(args: dict):
    with pytest.raises(BadRequest):
        request_from_wire({"v": PROTOCOL_VERSION, "op": "list", "args": args})
    assert ListRequest(columns=True, json=True).to_args() == {"columns": True,
                                                               "recent": False, "json": True}


def test_a_reader_that_stops_early_ends_quietly_on_both_sides(meow_env: MeowEnv):
    """`meow list --json | head -c 20`: the CLI exits 0 with nothing on stderr (the pipe
    closed, not meowd), and meowd only drops that connection: no error, no stray frame."""
    import subprocess

    from tests.conftest import BIN

    with meow_env.client() as c:
        c.create([TaskSpec("true", None, 0, 0) for _ in range(400)], "/", {})
    cli = subprocess.Popen([str(BIN / "meow"), "list", "--json"], env=meow_env.env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert cli.stdout is not None and cli.stdout.read(20).startswith(b'[{"id":1,')
    cli.stdout.close()  # well before the ~280 KB are written
    assert cli.wait(30) == 0
    assert cli.stderr is not None and cli.stderr.read() == b""
    with meow_env.client() as c:
        assert c.ping()["pid"] > 0 and len(c.list()) == 400
    log = meow_env.daemon_log()
    assert "could not be stored" not in log and "handler failed" not in log, log


def test_an_ended_tasks_row_is_kept_until_the_task_changes(meow_env: MeowEnv, tmp_path):
    """meowd keeps ended tasks' rows encoded: a retry (or any change) must show."""
    meow_env.meow("create", f"test -e {tmp_path / 'ok'} || exit 3", "-n", "flaky", "-c", "0")
    meow_env.meow("create", "true", "-n", "gone", "-c", "0")
    meow_env.wait_status("flaky", "failed")
    meow_env.wait_status("gone", "done")

    def listed() -> bytes:
        return meow_env.meow("list", "--json").stdout.encode()

    first = listed()
    assert listed() == first  # the second from the kept rows
    assert {t["fullname"]: t["status"] for t in json.loads(first)} == {"flaky": "failed",
                                                                       "gone": "done"}
    (tmp_path / "ok").touch()
    meow_env.meow("retry", "flaky")
    meow_env.wait_status("flaky", "done")
    meow_env.meow("remove", "gone")
    after = json.loads(listed())
    assert [(t["fullname"], t["status"], t["attempts"]) for t in after] == [("flaky", "done", 2)]
