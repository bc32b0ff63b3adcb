"""The pure rules behind the socket checks: which directory may hold the socket, and
which frames may be large."""

from __future__ import annotations

import os
import stat

import msgpack
import pytest

from meowd.core.errors import FrameTooLarge
from meowd.core.framing import HEADER, FrameDecoder, announced_op, encode_frame
from meowd.core.paths import resolve_paths, unsafe_directory

ME = os.getuid()


def st(mode: int, uid: int = ME, gid: int = 12345) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 2, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(("result", "problem"), [
    (st(stat.S_IFDIR | 0o700), None),
    (st(stat.S_IFDIR | 0o755), None),
    (st(stat.S_IFLNK | 0o777), "is a symbolic link"),
    (st(stat.S_IFREG | 0o600), "is not a directory"),
    (st(stat.S_IFDIR | 0o777), "is writable by other users (mode 0777)"),
    (st(stat.S_IFDIR | 0o1733), "is writable by other users (mode 1733)"),
    (st(stat.S_IFDIR | 0o770, gid=12345), "is writable by other users (mode 0770)"),
])
def test_unsafe_directory(result, problem):
    assert unsafe_directory(result, ME) == problem


def test_a_directory_of_another_user_is_refused_and_roots_only_when_allowed():
    assert unsafe_directory(st(stat.S_IFDIR | 0o700, uid=ME + 1), ME).startswith(
        f"belongs to uid {ME + 1}")
    root_dir = st(stat.S_IFDIR | 0o700, uid=0)
    assert unsafe_directory(root_dir, 4242, root_ok=True) is None
    assert unsafe_directory(root_dir, 4242) is not None


def test_group_write_is_tolerated_for_a_user_private_group():
    import grp
    import pwd

    me = pwd.getpwuid(ME)
    try:
        private = grp.getgrgid(me.pw_gid)
    except KeyError:
        pytest.skip("no group entry for our primary gid")
    if private.gr_name != me.pw_name or set(private.gr_mem) - {me.pw_name}:
        pytest.skip("our primary group is not a user private group")
    assert unsafe_directory(st(stat.S_IFDIR | 0o770, gid=me.pw_gid), ME) is None


def test_the_default_socket_directory_is_never_resolved_through_a_link():
    assert str(resolve_paths({"HOME": "/h"}, uid=5).socket) == "/tmp/meow-5/meowd.sock"


def test_meow_home_link_is_resolved_for_the_socket(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    paths = resolve_paths({"MEOW_HOME": str(tmp_path / "link")}, uid=5)
    assert paths.state == tmp_path / "link"
    assert paths.socket == tmp_path / "real" / "meowd.sock"


@pytest.mark.parametrize(("prefix", "op"), [
    (msgpack.packb({"v": 1, "op": "create", "args": {}}), "create"),
    (msgpack.packb({"op": "list"}), "list"),
    (msgpack.packb({"v": 1, "op": "create"})[:6], None),  # more bytes needed
    (b"", None),
    (msgpack.packb([1, 2]), ""),
    (msgpack.packb({"op": 3}), ""),
    (msgpack.packb({"a": 1, "b": 2, "c": 3, "d": 4, "op": "create"}), ""),  # too late
    (b"\xc1\xc1", ""),
])
def test_announced_op(prefix, op):
    assert announced_op(prefix) == op


def test_a_large_frame_is_buffered_only_for_a_create():
    decoder = FrameDecoder(max_small_frame=1000)
    big = encode_frame({"v": 1, "op": "create", "args": {"x": "y" * 5000}})
    frames = []
    for i in range(0, len(big), 7):  # byte by byte-ish: the op is judged once known
        frames += decoder.feed(big[i:i + 7])
    assert frames == [big[HEADER.size:]] and decoder.pending == 0
    listing = encode_frame({"v": 1, "op": "list", "args": {"x": "y" * 5000}})
    with pytest.raises(FrameTooLarge, match="for any request but create"):
        FrameDecoder(max_small_frame=1000).feed(listing[:300])
    small = encode_frame({"v": 1, "op": "list", "args": {"x": "y" * 500}})
    assert FrameDecoder(max_small_frame=1000).feed(small) == [small[HEADER.size:]]


def test_a_large_frame_hiding_its_op_is_refused():
    # "op" only after a long first value: not judged a create within the first bytes.
    payload = msgpack.packb({"pad": "z" * 400, "op": "create"})
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_small_frame=100).feed(HEADER.pack(len(payload)) + payload)
