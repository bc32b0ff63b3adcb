"""systemd integration without dependencies: sd_notify and socket activation.

- `notify("READY=1")` sends a datagram to $NOTIFY_SOCKET (Type=notify units); a no-op
  when meowd was not started by systemd.
- `inherited_socket()` returns the listening socket systemd passed (LISTEN_FDS /
  LISTEN_PID, first fd 3), as meowd.socket does for socket activation.
- `unit_files()` renders the user units `meow daemon install-systemd` writes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

SD_LISTEN_FDS_START = 3


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
        return True
    except OSError:
        return False


def inherited_socket(environ: Mapping[str, str] | None = None) -> socket.socket | None:
    """The AF_UNIX listening socket passed by systemd, if it was meant for this process."""
    env = os.environ if environ is None else environ
    try:
        count = int(env.get("LISTEN_FDS", "0"))
        pid = int(env.get("LISTEN_PID", "0"))
    except ValueError:
        return None
    if count < 1 or pid != os.getpid():
        return None
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # tasks must not believe the socket is theirs
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise OSError(f"inherited fd {SD_LISTEN_FDS_START} is not a Unix stream socket")
    os.set_inheritable(sock.fileno(), False)
    return sock


SERVICE = """\
# meow daemon, user unit. Written by `meow daemon install-systemd`.
# KillMode=process: stopping or restarting meowd stops only meowd; running tasks keep
# running and the next meowd re-adopts them (their exit codes are never lost).
[Unit]
Description=meow GPU task queue daemon
Requires=meowd.socket
After=meowd.socket

[Service]
Type=notify
NotifyAccess=main
ExecStart={meowd}
Environment=PYTHONUNBUFFERED=1
{environment}KillMode=process
KillSignal=SIGTERM
TimeoutStopSec=30
Restart=on-failure
RestartSec=2

[Install]
WantedBy=default.target
"""

SOCKET = """\
# meow daemon socket, user unit. Written by `meow daemon install-systemd`.
# systemd owns the socket: `meow` connects at once, even while meowd (re)starts.
[Unit]
Description=meow GPU task queue socket

[Socket]
ListenStream={socket}
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=true

[Install]
WantedBy=sockets.target
"""


def unit_files(meowd: str, socket_path: str, environment: Mapping[str, str]) -> dict[str, str]:
    """The two user units; `environment` carries MEOW_* settings of the installing shell
    (MEOW_HOME, MEOW_FAKE_GPUS) so the unit's meowd uses the same state and socket."""
    lines = "".join(f"Environment={key}={value}\n" for key, value in sorted(environment.items()))
    return {
        "meowd.service": SERVICE.format(meowd=meowd, environment=lines),
        "meowd.socket": SOCKET.format(socket=socket_path),
    }
