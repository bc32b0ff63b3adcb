"""`meow top` against a real daemon (Pilot), as a snapshot, and in a real terminal (tmux)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from meowcli.top import Detail, MeowTop, StaticSource, demo_state
from tests.conftest import BIN, MeowEnv, wait_for

T0 = 1_795_000_000.0


@pytest.fixture
def top_env(meow_env: MeowEnv, monkeypatch: pytest.MonkeyPatch) -> MeowEnv:
    """The app runs in this process: point it at the test daemon."""
    for key in ("MEOW_HOME", "MEOW_FAKE_GPUS"):
        monkeypatch.setenv(key, meow_env.env[key])
    return meow_env


async def until(pilot, condition, timeout: float = 10.0, what: str = "the screen") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def select(pilot, app: MeowTop, row: int, key: str) -> None:
    """Move the cursor and wait until the app took it: a state pushed in between refills
    the table around the task selected before, which a key press would then act on."""
    async def moved() -> bool:
        app.query_one("#tasks", DataTable).move_cursor(row=row)
        await pilot.pause(0.05)
        return app.selected == key

    deadline = time.monotonic() + 10
    while not await moved():
        if time.monotonic() > deadline:
            raise AssertionError(f"the cursor never stayed on {key}")


def rows(app: MeowTop) -> dict[str, list[str]]:
    table = app.query_one("#tasks", DataTable)
    return {row.key.value: [str(c) for c in table.get_row(row.key)]
            for row in table.ordered_rows}


def status_line(app: MeowTop) -> str:
    return str(app.query_one("#status", Static).render())


async def test_panels_fill_and_actions_change_tasks(top_env: MeowEnv, tmp_path: Path):
    top_env.meow("create", "for i in 1 2 3; do echo line $i; done; sleep 60", "-n", "train",
                 "-c", "2", "-M", "20000", "-g", "exp")
    top_env.meow("create", "sleep 60", "-n", "eval", "-M", "20000", "-g", "exp")
    app = MeowTop()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: "task:2" in rows(app), what="the tasks")
        assert app.query_one("#devices", DataTable).row_count == 2
        assert rows(app)["group:exp"][0].strip() == "▾ exp/"
        await until(pilot, lambda: rows(app)["task:1"][1] == "running")
        assert "held" in rows(app)["task:2"][1] or "no 1 GPU" in rows(app)["task:2"][7]
        # the log pane follows the selected task (train is the first task row)
        await select(pilot, app, 1, "task:1")
        await until(pilot, lambda: "line 3" in "\n".join(app.query_one("#log").lines),
                    what="train's log")
        # cancel the waiting task from the keyboard
        await select(pilot, app, 2, "task:2")
        await pilot.press("c")
        await until(pilot, lambda: rows(app)["task:2"][1] == "cancelled", what="cancelled")
        assert top_env.status("exp/eval") == "cancelled"
        await pilot.press("r", "plus")
        await until(pilot, lambda: top_env.tasks()["exp/eval"]["priority"] == 1,
                    what="priority +1")
        await pilot.press("d")  # the full detail of the task
        await until(pilot, lambda: isinstance(app.screen, Detail), what="the detail view")
        assert "task 2: exp/eval" in str(app.screen.query_one(Static).render())
        await pilot.press("escape")
        # kill asks first
        await select(pilot, app, 1, "task:1")
        await pilot.press("k")
        await pilot.pause(0.2)
        assert top_env.status("exp/train") == "running"
        await pilot.press("y")
        await until(pilot, lambda: rows(app)["task:1"][1] == "killed", what="killed")


async def test_filter_and_finished_toggle(top_env: MeowEnv):
    top_env.meow("create", "true", "-n", "quick", "-c", "0")
    top_env.meow("create", "sleep 60", "-n", "slow", "-c", "0")
    top_env.wait_status("quick", "done")
    app = MeowTop()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: {"task:1", "task:2"} <= set(rows(app)))
        await pilot.press("slash", *"status==running", "enter")
        await until(pilot, lambda: set(rows(app)) == {"task:2"}, what="the filter")
        await pilot.press("slash", *["backspace"] * 20, "enter")
        await until(pilot, lambda: set(rows(app)) == {"task:1", "task:2"})
        await pilot.press("f")
        await until(pilot, lambda: set(rows(app)) == {"task:2"}, what="finished hidden")
    top_env.kill_leftovers()


async def test_reconnects_after_a_daemon_restart(top_env: MeowEnv):
    app = MeowTop()
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: status_line(app).startswith("meowd: 0 tasks"))
        top_env.kill9()
        await until(pilot, lambda: "reconnecting" in status_line(app), what="reconnecting")
        top_env.start()
        top_env.meow("create", "true", "-n", "after", "-c", "0")
        await until(pilot, lambda: "task:1" in rows(app), what="the task after restart")
        assert status_line(app).startswith("meowd: 1 tasks")


def static_app() -> MeowTop:
    return MeowTop(StaticSource(demo_state(T0)), now=lambda: T0)


def test_main_screen_snapshot(snap_compare):
    assert snap_compare(static_app(), terminal_size=(120, 30))


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (make test does)")
def test_draws_in_a_real_terminal(meow_env: MeowEnv):
    meow_env.meow("create", "sleep 60", "-n", "in-tmux", "-c", "0")
    session = f"meow-top-{time.monotonic_ns()}"
    env = " ".join(f"{k}={v}" for k, v in meow_env.env.items() if k.startswith("MEOW_"))
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30",
                    f"env {env} TERM=xterm-256color {BIN / 'meow'} top"], check=True)
    try:
        def screen() -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                  capture_output=True, text=True).stdout

        wait_for(lambda: "in-tmux" in screen() and "GPU" in screen(), 20, "meow top to draw")
        subprocess.run(["tmux", "resize-window", "-t", session, "-x", "90", "-y", "24"])
        wait_for(lambda: "in-tmux" in screen(), 10, "a redraw after the resize")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        wait_for(lambda: subprocess.run(["tmux", "has-session", "-t", session],
                                        capture_output=True).returncode != 0, 10, "q to quit")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    meow_env.kill_leftovers()
