"""Render docs/meow-top.svg (the README picture) from `meow top --demo` data, headless.

    .venv/bin/python docs/make_screenshot.py
"""

import asyncio
from pathlib import Path

from meowcli.top import MeowTop, StaticSource, demo_state

T0 = 1_795_000_000.0


async def main() -> None:
    app = MeowTop(StaticSource(demo_state(T0)), now=lambda: T0)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        out = Path(__file__).parent
        app.save_screenshot(filename="meow-top.svg", path=str(out))
    print(out / "meow-top.svg")


if __name__ == "__main__":
    asyncio.run(main())
