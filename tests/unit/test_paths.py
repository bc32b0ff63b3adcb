"""meowd.core.paths spells paths without pathlib (start-up time), exactly as pathlib
would: client and daemon must agree on the socket's text (a long one is renamed by its
hash), and Paths' attributes are still `Path`s."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from hypothesis import given, settings
from hypothesis import strategies as st

from meowd.core.paths import Paths, clean, resolve_paths

PART = st.lists(st.sampled_from(["", "/", "//", "///", ".", "..", "a", "b c", "~"]),
                max_size=6).map("".join)


@settings(max_examples=1000)
@given(st.lists(PART, min_size=1, max_size=4))
def test_clean_is_pathlibs_spelling(parts: list[str]):
    assert clean(*parts) == str(PurePosixPath(*parts))


def test_meow_home_is_made_absolute_and_expanded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = resolve_paths({"MEOW_HOME": "./m//x/", "HOME": "/h"}, uid=1)
    assert paths.state == Path("./m//x/").absolute() and paths.socket_path == \
        str(tmp_path.resolve() / "m" / "x" / "meowd.sock")
    assert resolve_paths({"MEOW_HOME": "~/q"}).state == Path("~/q").expanduser()


def test_attributes_are_paths_and_equal_by_value():
    paths = resolve_paths({"XDG_RUNTIME_DIR": "/run/user/7/", "HOME": "/home/u"}, uid=7)
    assert isinstance(paths.socket, Path) and paths.socket_path == str(paths.socket)
    assert paths.config_files == (Path("/home/u/.config/meow/config.toml"),)
    assert paths.database == Path("/home/u/.local/state/meow/meow.db")
    assert paths == Paths(paths.state, paths.socket, paths.config_files)
