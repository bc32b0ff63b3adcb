"""Another user's side of the planted-socket attacks, run inside the tests' private /tmp:

    python -m tests.security.attacker MODE UID GID PATH [TARGET]

It starts as root, imports all it needs, then becomes UID:GID (the interpreter under
/root is unreadable afterwards), prints "ready" once the trap is set, and on EOF on stdin
prints what it caught as JSON: {"connections": n, "received": "<bytes as latin-1>"}.

Modes:
- plant-dir: create PATH's directory 0777 and listen on PATH, as the other user.
- foreign-peer: PATH's directory is made by root, 0700, as a legitimate one would be;
  the socket is bound there, then the other user listens on it (SO_PEERCRED names the
  process that called listen), as if the directory check had been raced.
- plant-symlink: make PATH's directory a symlink to TARGET.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys


def drop(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def listen_until_eof(listener: socket.socket) -> dict[str, object]:
    listener.setblocking(False)
    clients: list[socket.socket] = []
    received = b""
    connections = 0
    stdin = sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([stdin, listener, *clients], [], [])
        if listener in readable:
            conn, _ = listener.accept()
            conn.setblocking(False)
            clients.append(conn)
            connections += 1
        for conn in [c for c in clients if c in readable]:
            try:
                data = conn.recv(1 << 16)
            except OSError:
                data = b""
            if data:
                received += data
            else:
                clients.remove(conn)
                conn.close()
        if stdin in readable and not os.read(stdin, 4096):
            return {"connections": connections, "received": received.decode("latin-1")}


def main() -> None:
    mode, uid, gid, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    directory = os.path.dirname(path)
    report: dict[str, object] = {}
    if mode == "plant-dir":
        drop(uid, gid)
        os.mkdir(directory)
        os.chmod(directory, 0o777)
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        os.chmod(path, 0o777)
        listener.listen(16)
        print("ready", flush=True)
        report = listen_until_eof(listener)
    elif mode == "foreign-peer":
        os.mkdir(directory, 0o700)
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        os.chmod(path, 0o666)
        drop(uid, gid)
        listener.listen(16)
        print("ready", flush=True)
        report = listen_until_eof(listener)
    elif mode == "plant-symlink":
        drop(uid, gid)
        os.symlink(sys.argv[5], directory)
        print("ready", flush=True)
        sys.stdin.read()
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
