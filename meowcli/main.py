"""Entry point of `meow`. `create` and the frequent commands, in their common forms, take
fast paths (meowcli/create.py, meowcli/quick.py); everything else goes to typer."""

from __future__ import annotations

import sys

_QUICK = frozenset({"list", "show", "test", "wait", "watch", "kill", "cancel", "resume",
                    "retry", "remove"})


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["create"]:
        from meowcli.create import fast_main

        code = fast_main(argv[1:])
        if code is not None:
            sys.exit(code)
    elif argv[:1] and argv[0] in _QUICK:
        from meowcli.quick import main as quick_main

        code = quick_main(argv)
        if code is not None:
            sys.exit(code)
    from meowcli.app import run

    sys.exit(run(argv))
