"""Entry point of `meow`. `create` takes a fast path; everything else goes to typer."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["create"]:
        from meowcli.create import fast_main

        code = fast_main(argv[1:])
        if code is not None:
            sys.exit(code)
    from meowcli.app import run

    sys.exit(run(argv))
