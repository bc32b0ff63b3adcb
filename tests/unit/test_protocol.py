import pytest

from meowd.core.errors import BadRequest, ProtocolError
from meowd.core.paths import resolve_paths
from meowd.core.protocol import (
    PROTOCOL_VERSION,
    CreateRequest,
    KillRequest,
    Selector,
    TaskSpec,
    request_from_wire,
    request_to_wire,
)


def test_round_trip():
    req = CreateRequest((TaskSpec("echo hi", "a", 2, 1, 0.5),), "/tmp", {"A": "1"})
    assert request_from_wire(request_to_wire(req)) == req
    kill = KillRequest(Selector("a.*", True), force=True)
    assert request_from_wire(request_to_wire(kill)) == kill


@pytest.mark.parametrize("message", [
    {"v": PROTOCOL_VERSION, "op": "nope"},
    {"v": PROTOCOL_VERSION, "op": "create", "args": {"tasks": [], "cwd": "/"}},
    {"v": PROTOCOL_VERSION, "op": "create", "args": {"tasks": [{"command": 3}], "cwd": "/"}},
    {"v": PROTOCOL_VERSION, "op": "create", "args": {"tasks": [{"command": "x"}], "cwd": "rel"}},
    {"v": PROTOCOL_VERSION, "op": "create",
     "args": {"tasks": [{"command": "x", "priority": True}], "cwd": "/"}},
    {"v": PROTOCOL_VERSION, "op": "create",
     "args": {"tasks": [{"command": "x", "requires_memory_per_device": 1.5}], "cwd": "/"}},
    {"v": PROTOCOL_VERSION, "op": "create",
     "args": {"tasks": [{"command": "x", "name": "a b"}], "cwd": "/"}},
    {"v": PROTOCOL_VERSION, "op": "create",
     "args": {"tasks": [{"command": "x"}], "cwd": "/", "env": {"A": 1}}},
    {"v": PROTOCOL_VERSION, "op": "kill", "args": {}},
    {"v": PROTOCOL_VERSION, "op": "kill", "args": {"target": 5}},
    {"v": PROTOCOL_VERSION, "op": "list", "args": []},
])
def test_bad_requests(message):
    with pytest.raises(BadRequest):
        request_from_wire(message)


@pytest.mark.parametrize("version", [None, 0, 2, "1"])
def test_wrong_version(version):
    with pytest.raises(ProtocolError):
        request_from_wire({"v": version, "op": "ping"})


def test_paths_meow_home_and_xdg():
    p = resolve_paths({"MEOW_HOME": "/x/m"}, uid=7)
    assert str(p.socket) == "/x/m/meowd.sock" and str(p.database) == "/x/m/meow.db"
    p = resolve_paths({"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/7"}, uid=7)
    assert str(p.state) == "/home/u/.local/state/meow"
    assert str(p.socket) == "/run/user/7/meow/meowd.sock"
    p = resolve_paths({"HOME": "/home/u"}, uid=7)
    assert str(p.socket) == "/tmp/meow-7/meowd.sock"


def test_long_socket_path_moves_to_a_short_stable_one():
    home = "/tmp/" + "d" * 150
    p1, p2 = resolve_paths({"MEOW_HOME": home}, uid=3), resolve_paths({"MEOW_HOME": home}, uid=3)
    assert len(str(p1.socket)) < 100 and p1.socket == p2.socket
    assert str(p1.state) == home


def test_fast_create_message_is_a_valid_create_request():
    from meowcli.create import CreateArgs, create_message

    args = CreateArgs("python train.py", ["--lr", "0.2 x"], "t", 3, 0.5, 2)
    request = request_from_wire(create_message(args, "/w", {"A": "b"}))
    assert request == CreateRequest(
        (TaskSpec("python train.py --lr '0.2 x'", "t", 3, 2, 0.5),), "/w", {"A": "b"})
