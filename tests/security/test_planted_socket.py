"""Another user plants /tmp/meow-$UID before us (issue 11): the client sends nothing to
a directory or a process that is not ours, and the daemon neither follows a planted
symlink nor listens in a planted directory. Real CLI, real daemon, a real second user,
at the real default path (in a private /tmp, see conftest)."""

from __future__ import annotations

import stat

from tests.security.conftest import PrivateTmp, wait_gone

SECRET = "s3cr3t-T0KEN-4711"
CREATE = ("create", "echo hi", "-n", "t", "-c", "0", "--secret", f"API_TOKEN={SECRET}")


def one_error_line(result, prefix: str = "meow: error: ") -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


def test_planted_directory_gets_no_request(private_tmp: PrivateTmp, attacker_user):
    attack = private_tmp.attack("plant-dir", attacker_user)
    created = private_tmp.meow(*CREATE)
    listed = private_tmp.meow("list")
    caught = attack.report()
    assert caught == {"connections": 0, "received": ""}
    error = one_error_line(created)
    assert error.startswith("meow: error: refusing to use /tmp/meow-0: it belongs to "
                            f"uid {attacker_user.pw_uid} (meowtest), not to you"), error
    assert "MEOW_HOME" in error
    assert one_error_line(listed) == error
    # Refused, not "not running": no daemon was started behind the planted directory.
    assert not private_tmp.path("/tmp/victim-home/.local/state/meow").exists()


def test_listener_of_another_user_gets_no_request(private_tmp: PrivateTmp, attacker_user):
    # The directory looks right (root's, 0700) but the listener is the other user's:
    # the peer check (SO_PEERCRED) refuses it before a byte is sent.
    attack = private_tmp.attack("foreign-peer", attacker_user)
    created = private_tmp.meow(*CREATE)
    caught = attack.report()
    assert caught == {"connections": 1, "received": ""}
    error = one_error_line(created)
    assert error.startswith("meow: error: refusing to talk to /tmp/meow-0/meowd.sock: the "
                            f"process listening there runs as uid {attacker_user.pw_uid} "
                            "(meowtest), not as you"), error


def test_daemon_does_not_follow_a_planted_symlink(private_tmp: PrivateTmp, attacker_user):
    # A directory of the victim's that the link points to: meowd used to chmod it 0700
    # and unlink the meowd.sock in it.
    private_tmp.run(["sh", "-c", "mkdir -m 755 /tmp/precious && echo keep > "
                     "/tmp/precious/meowd.sock"])
    attack = private_tmp.attack("plant-symlink", attacker_user, "/tmp/precious")
    started = private_tmp.meowd()
    listed = private_tmp.meow("list")
    attack.report()
    assert started.returncode == 2
    assert started.stderr.strip().splitlines()[-1] == (
        "meowd: refusing to listen in /tmp/meow-0: it is a symbolic link, and another user "
        "may have planted it; have it removed (rm -r /tmp/meow-0, as root if it is not "
        "yours) or set MEOW_HOME (or XDG_RUNTIME_DIR) to a directory of your own")
    precious = private_tmp.path("/tmp/precious")
    assert stat.S_IMODE(precious.stat().st_mode) == 0o755
    assert (precious / "meowd.sock").read_text() == "keep\n"
    assert "it is a symbolic link" in one_error_line(listed)


def test_daemon_does_not_listen_in_a_planted_directory(private_tmp: PrivateTmp,
                                                        attacker_user):
    attack = private_tmp.attack("plant-dir", attacker_user)
    started = private_tmp.meowd()
    caught = attack.report()
    assert started.returncode == 2
    last = started.stderr.strip().splitlines()[-1]
    assert last.startswith("meowd: refusing to listen in /tmp/meow-0: it belongs to "
                           f"uid {attacker_user.pw_uid} (meowtest)"), last
    planted = private_tmp.path("/tmp/meow-0")
    # Root could have chmod-ed it, or replaced the attacker's socket: it did neither.
    assert stat.S_IMODE(planted.stat().st_mode) == 0o777
    assert planted.stat().st_uid == attacker_user.pw_uid
    assert stat.S_ISSOCK((planted / "meowd.sock").lstat().st_mode)
    assert caught["received"] == ""


def test_default_socket_directory_is_private(private_tmp: PrivateTmp):
    """The control: with nobody in the way, `meow create` starts meowd at /tmp/meow-0,
    private, and `meow exit` removes the socket it made."""
    created = private_tmp.meow("create", "echo hi", "-n", "t", "-c", "0")
    assert created.returncode == 0, created.stderr
    directory = private_tmp.path("/tmp/meow-0")
    st = directory.lstat()
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert stat.S_IMODE((directory / "meowd.sock").lstat().st_mode) == 0o600
    assert private_tmp.meow("exit").returncode == 0
    assert wait_gone(directory / "meowd.sock")  # its own socket: meowd removes it
    assert directory.is_dir()
