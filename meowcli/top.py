"""`meow top`: GPUs, the task tree and a task's log on one screen, pushed live by meowd.

The daemon pushes its whole state over a `subscribe` connection after every change (no
polling of the daemon here); a background thread receives states and hands them to the
app. If meowd goes away, the thread says so on screen and reconnects. Actions (cancel,
kill, ...) go through the same `Client` as the CLI commands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Log, Static

from meowcli import render
from meowd.core.units import format_mib

STATUS_STYLE = {
    "running": "bold green", "waiting": "yellow", "done": "blue", "failed": "bold red",
    "cancelled": "magenta", "killed": "red", "lost": "bold red reverse",
}
FINISHED = {"done", "failed", "killed", "lost", "cancelled", "timeout"}
BAR_WIDTH = 24


def memory_bar(device: dict[str, Any], width: int = BAR_WIDTH) -> Text:
    """meow tasks (green), other processes (red), reserved not yet used (yellow), free."""
    total = max(1, device["total_mib"])
    parts = [(device["used_by_meow_mib"], "green", "█"), (device["used_by_others_mib"], "red", "█"),
             (device["reserved_mib"], "yellow", "▒")]
    bar = Text()
    used_cells = 0
    for mib, style, char in parts:
        cells = round(width * mib / total)
        cells = min(cells, width - used_cells)
        bar.append(char * cells, style=style)
        used_cells += cells
    bar.append("·" * (width - used_cells), style="dim")
    return bar


def task_rows(tasks: list[dict[str, Any]], now: float, show_finished: bool,
              keep: Callable[[dict[str, Any]], bool] | None) -> list[tuple[str, list[Any]]]:
    """(row key, cells) for the task tree: a row per group, then its tasks, indented."""
    chosen = [t for t in tasks if (show_finished or t["status"] not in FINISHED)
              and (keep is None or keep(t))]
    chosen.sort(key=lambda t: (t["fullname"].split("/")[:-1], t["id"]))
    rows: list[tuple[str, list[Any]]] = []
    seen_groups: set[str] = set()
    for task in chosen:
        parts = task["fullname"].split("/")
        for depth in range(1, len(parts)):
            group = "/".join(parts[:depth])
            if group not in seen_groups:
                seen_groups.add(group)
                members = [t for t in chosen if t["fullname"].startswith(group + "/")]
                counts: dict[str, int] = {}
                for m in members:
                    counts[m["status"]] = counts.get(m["status"], 0) + 1
                summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                label = Text("  " * (depth - 1) + "▾ " + parts[depth - 1] + "/", style="bold")
                rows.append((f"group:{group}", [label, Text(summary, style="dim"), "", "", "",
                                                "", "", ""]))
        rows.append((f"task:{task['id']}", _task_cells(task, len(parts) - 1, now)))
    return rows


def _task_cells(task: dict[str, Any], depth: int, now: float) -> list[Any]:
    name = Text("  " * depth + task["name"])
    status = Text(task["status"], style=STATUS_STYLE.get(task["status"], ""))
    if task.get("held_for"):
        status.append(" (held)", style="cyan")
    gpus = ",".join(map(str, task["devices"])) if task["devices"] else (
        f"({task['min_devices']})" if task["min_devices"] else "cpu")
    asked = format_mib(task["requires_memory_per_device"]) if task["min_devices"] else "-"
    used = (task.get("usage") or {}).get("gpu_mib") or {}
    memory = f"{asked} / {format_mib(max(used.values()))}" if used else asked
    end = task["ended_at"] if task["ended_at"] is not None else now
    runtime = render.format_duration(end - task["started_at"]) if task["started_at"] else "-"
    note = task.get("warning") or task.get("why") or (
        task["reason"] if task["status"] in ("failed", "lost", "cancelled", "killed") else "")
    return [name, status, str(task["priority"]), gpus, memory, runtime, str(task["attempts"]),
            Text(note or "", style="yellow" if task.get("warning") else "dim")]


class Confirm(ModalScreen[bool]):
    BINDINGS = [("y", "answer(True)", "Yes"), ("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class Detail(ModalScreen[None]):
    BINDINGS = [("escape,q,enter", "close", "Close")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="detail"):
            yield Static(self.text, markup=False)

    def action_close(self) -> None:
        self.dismiss(None)


class MeowTop(App[None]):
    """The live monitor. `source` feeds states: a daemon subscription, or fixed data."""

    TITLE = "meow top"
    CSS = """
    #devices { height: auto; max-height: 12; }
    #tasks { height: 1fr; }
    #log { height: 10; border-top: solid $accent; }
    #status { height: 1; background: $boost; }
    #filter { dock: bottom; display: none; }
    #filter.shown { display: block; }
    #dialog, #detail { width: 90; height: auto; max-height: 90%; border: thick $accent;
                       background: $surface; padding: 1 2; }
    Confirm, Detail { align: center middle; }
    """
    BINDINGS = [
        Binding("c", "cancel", "Cancel"),
        Binding("k", "kill", "Kill"),
        Binding("r", "resume", "Resume"),
        Binding("x", "remove", "Remove"),
        Binding("plus,equals_sign", "priority(1)", "Pri+", key_display="+"),
        Binding("minus", "priority(-1)", "Pri-", key_display="-"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("f", "toggle_finished", "Finished"),
        Binding("d", "detail", "Detail"),
        Binding("l", "switch_log", "stdout/err"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, source: StateSource | None = None,
                 now: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.source = source or DaemonSource()
        self.now = now
        self.state: dict[str, Any] = {"tasks": [], "devices": {"devices": []}}
        self.show_finished = True
        self.filter_text = ""
        self.stream = "stdout"
        self.selected: str | None = None
        self._log_path: str | None = None
        self._log_size = -1

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting to meowd...", id="status")
        yield DataTable(id="devices", cursor_type="none", zebra_stripes=True)
        yield DataTable(id="tasks", cursor_type="row")
        yield Log(id="log", max_lines=2000)
        yield Input(placeholder="filter: text, or status==running, priority>1, name~re",
                    id="filter")
        yield Footer()

    def on_mount(self) -> None:
        devices = self.query_one("#devices", DataTable)
        devices.add_columns("GPU", "MEMORY (meow|others|reserved|free)", "USED / TOTAL",
                            "UTIL", "TASKS")
        tasks = self.query_one("#tasks", DataTable)
        tasks.add_columns("NAME", "STATUS", "PRI", "GPUS", "MEM ask/used", "RUNTIME", "TRIES",
                          "WHY / NOTE")
        self.source.start(self)
        self.set_interval(0.3, self.follow_log)
        self.set_interval(1.0, self._tick)

    def _tick(self) -> None:
        """Runtimes move on by the clock, not by the daemon: redraw while tasks run."""
        if any(t["status"] == "running" for t in self.state["tasks"]):
            self._fill_tasks()

    # -- states from the source ----------------------------------------------------------
    def set_connection(self, text: str) -> None:
        try:  # (from the source's thread: the app may be closing, its widgets gone)
            self.query_one("#status", Static).update(text)
        except NoMatches:
            pass

    def apply_state(self, state: dict[str, Any]) -> None:
        self.state = state
        tasks = state["tasks"]
        running = sum(t["status"] == "running" for t in tasks)
        waiting = sum(t["status"] == "waiting" for t in tasks)
        backend = state["devices"].get("backend") or "no GPUs"
        self.set_connection(f"meowd: {len(tasks)} tasks, {running} running, {waiting} waiting "
                            f"| devices: {backend}"
                            + (f" | filter: {self.filter_text}" if self.filter_text else "")
                            + ("" if self.show_finished else " | finished hidden"))
        self._fill_devices()
        self._fill_tasks()

    def _fill_devices(self) -> None:
        table = self.query_one("#devices", DataTable)
        table.clear()
        info = self.state["devices"]
        if not info.get("devices"):
            table.add_row("-", Text(info.get("hint") or "no GPUs", style="dim"), "", "", "")
            return
        for d in info["devices"]:
            used = d["used_by_meow_mib"] + d["used_by_others_mib"]
            util = "-" if d["utilization"] is None else f"{d['utilization']}%"
            table.add_row(str(d["index"]), memory_bar(d),
                          f"{format_mib(used)} / {format_mib(d['total_mib'])}", util,
                          ", ".join(d["tasks"]) or "-")

    def _fill_tasks(self) -> None:
        table = self.query_one("#tasks", DataTable)
        keep = _matcher(self.filter_text)
        rows = task_rows(self.state["tasks"], self.now(), self.show_finished, keep)
        selected = self.selected
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        keys = [key for key, _ in rows]
        if selected in keys:
            table.move_cursor(row=keys.index(selected), animate=False)
        elif rows:
            self.selected = keys[0]

    @on(DataTable.RowSelected, "#tasks")
    def selected_row(self, event: DataTable.RowSelected) -> None:
        self.action_detail()  # enter on a task opens its detail

    @on(DataTable.RowHighlighted, "#tasks")
    def highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.selected = event.row_key.value
            self._log_size = -1
            self.follow_log()

    # -- the log pane ----------------------------------------------------------------------
    def _selected_task(self) -> dict[str, Any] | None:
        if not self.selected or not self.selected.startswith("task:"):
            return None
        task_id = int(self.selected.split(":", 1)[1])
        return next((t for t in self.state["tasks"] if t["id"] == task_id), None)

    def follow_log(self) -> None:
        """Show the end of the selected task's log, progress bars collapsed."""
        try:
            log = self.query_one("#log", Log)
        except NoMatches:  # a highlight or tick that arrives as the app closes
            return
        task = self._selected_task()
        path = task.get(self.stream) if task else None
        if path != self._log_path:
            self._log_path, self._log_size = path, -1
            log.clear()
            log.border_title = f"{task['fullname']} {self.stream}" if task else "log"
        if not path:
            return
        try:
            size = Path(path).stat().st_size
        except OSError:
            return
        if size == self._log_size:
            return
        self._log_size = size
        with open(path, "rb") as f:
            f.seek(max(0, size - 65536))
            text = f.read().decode(errors="replace")
        log.clear()
        log.write_lines(render.collapse_progress(text).splitlines()[-500:])

    def action_switch_log(self) -> None:
        self.stream = "stderr" if self.stream == "stdout" else "stdout"
        self._log_path = None
        self.follow_log()

    # -- actions ---------------------------------------------------------------------------
    def _target(self) -> str | None:
        if self.selected is None:
            return None
        if self.selected.startswith("group:"):
            return self.selected.split(":", 1)[1]
        task = self._selected_task()
        return task["fullname"] if task else None

    @work(thread=True, exclusive=False)
    def _act(self, what: str, call: Callable[[Any], Any]) -> None:
        from meowcli.client import connect
        from meowd.core.errors import MeowError

        try:
            with connect(timeout=10) as client:
                result = call(client)
        except MeowError as exc:
            self.call_from_thread(self.notify, f"{what}: {exc.message}", severity="error")
            return
        if isinstance(result, dict) and "success" in result:
            out, err = render.render_bulk(what, result)
            self.call_from_thread(self.notify, err or out, severity="error" if err else
                                  "information")
        else:
            self.call_from_thread(self.notify, f"{what}: done")

    def _bulk(self, op: str) -> None:
        target = self._target()
        if target is not None:
            self._act(op, lambda c: getattr(c, op)(target, False))

    def action_cancel(self) -> None:
        self._bulk("cancel")

    def action_resume(self) -> None:
        self._bulk("resume")

    def action_kill(self) -> None:
        target = self._target()
        if target is not None:
            self.push_screen(Confirm(f"Kill {target}? (SIGTERM, then SIGKILL)"),
                             lambda yes: yes and self._bulk("kill"))

    def action_remove(self) -> None:
        target = self._target()
        if target is not None:
            self.push_screen(Confirm(f"Remove {target}? (a running task is killed)"),
                             lambda yes: yes and self._bulk("remove"))

    def action_priority(self, step: int) -> None:
        task = self._selected_task()
        if task is not None:
            value = task["priority"] + step
            self._act("priority", lambda c: c.set_task(task["fullname"], "priority", value))

    def action_toggle_finished(self) -> None:
        self.show_finished = not self.show_finished
        self.apply_state(self.state)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.value = self.filter_text
        box.focus()

    @on(Input.Submitted, "#filter")
    def filtered(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        event.input.remove_class("shown")
        self.query_one("#tasks", DataTable).focus()
        self.apply_state(self.state)

    def action_detail(self) -> None:
        task = self._selected_task()
        if task is None:
            return

        def fetch(client: Any) -> None:
            detail = client.show(task["fullname"])
            self.call_from_thread(self.push_screen, Detail(render.render_show(detail,
                                                                              self.now())))

        self._act("detail", fetch)

    def on_unmount(self) -> None:
        self.source.stop()


def _matcher(text: str) -> Callable[[dict[str, Any]], bool] | None:
    if not text:
        return None
    if any(op in text for op in ("==", "!=", ">", "<", "~")):
        from meowcli.filters import parse_filter
        from meowd.core.errors import MeowError

        try:
            return parse_filter(text)
        except MeowError:
            return lambda task: False
    needle = text.lower()
    return lambda task: needle in task["fullname"].lower() or needle == task["status"]


class StateSource:
    def start(self, app: MeowTop) -> None: ...

    def stop(self) -> None: ...


class StaticSource(StateSource):
    """A fixed state: snapshot tests and screenshots."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def start(self, app: MeowTop) -> None:
        app.set_connection("static data")
        app.apply_state(self.state)


def merge_state(state: dict[str, Any], pushed: Any) -> dict[str, Any]:
    """The full state after a push: a full state replaces; a delta ("since") replaces
    the tasks it carries, drops the removed ones and brings the devices."""
    if "since" not in pushed:
        return pushed
    tasks = {t["id"]: t for t in state.get("tasks", [])}
    for gone in pushed["removed"]:
        tasks.pop(gone, None)
    for task in pushed["tasks"]:
        tasks[task["id"]] = task
    return {**state, **{k: v for k, v in pushed.items() if k not in ("tasks", "removed",
                                                                       "since")},
            "tasks": sorted(tasks.values(), key=lambda t: t["id"])}


class DaemonSource(StateSource):
    """Subscribe to meowd in a background thread; reconnect whenever it goes away."""

    def __init__(self, retry: float = 0.5) -> None:
        self.retry = retry
        self._stop = threading.Event()
        self._client: Any = None

    def start(self, app: MeowTop) -> None:
        threading.Thread(target=self._run, args=(app,), name="meow-top", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._client is not None:
            try:
                self._client.close()
            except OSError:
                pass

    def _run(self, app: MeowTop) -> None:
        from meowcli.client import Client
        from meowd.core.errors import MeowError
        from meowd.core.protocol import SubscribeRequest

        while not self._stop.is_set():
            try:
                self._client = Client(timeout=None).connect()
                self._client.send(SubscribeRequest(deltas=True))
                state: dict[str, Any] = {}
                while not self._stop.is_set():
                    state = merge_state(state, self._client.receive())
                    app.call_from_thread(app.apply_state, state)
            except CancelledError:
                return  # the app shut down while a state was on its way
            except (MeowError, OSError, RuntimeError) as exc:
                if self._stop.is_set():
                    return
                message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                try:
                    app.call_from_thread(app.set_connection,
                                         f"meowd unreachable ({message}); reconnecting...")
                except (RuntimeError, CancelledError):
                    return  # the app is gone
                self._stop.wait(self.retry)


def demo_state(t0: float) -> dict[str, Any]:
    """A fixed, plausible state: `meow top --demo`, the snapshot test, the README picture."""
    T0 = t0
    return {
        "version": 1, "cpu_slots": 4,
        "devices": {"backend": "fake", "hint": None, "devices": [
            {"index": 0, "name": "Fake GPU 80GiB", "total_mib": 81920, "used_by_meow_mib": 30000,
             "used_by_others_mib": 10000, "reserved_mib": 20000, "free_mib": 21920,
             "utilization": 87, "tasks": ["exp/train"]},
            {"index": 1, "name": "Fake GPU 80GiB", "total_mib": 81920, "used_by_meow_mib": 0,
             "used_by_others_mib": 0, "reserved_mib": 0, "free_mib": 81920, "utilization": None,
             "tasks": []},
        ]},
        "tasks": [
            {"id": 1, "name": "train", "fullname": "exp/train", "status": "running", "priority": 2,
             "devices": [0], "min_devices": 1, "requires_memory_per_device": 50000,
             "usage": {"gpu_mib": {"0": 30000}}, "started_at": T0 - 3700, "ended_at": None,
             "attempts": 1, "reason": None, "warning": None, "why": None, "stdout": None},
            {"id": 2, "name": "eval", "fullname": "exp/eval", "status": "waiting", "priority": 0,
             "devices": [], "min_devices": 1, "requires_memory_per_device": 50000, "usage": {},
             "started_at": None, "ended_at": None, "attempts": 0, "reason": "waiting for exp/train",
             "warning": None, "why": "waiting for exp/train", "stdout": None},
            {"id": 3, "name": "big", "fullname": "big", "status": "waiting", "priority": 0,
             "devices": [], "min_devices": 2, "requires_memory_per_device": 70000, "usage": {},
             "started_at": None, "ended_at": None, "attempts": 0, "reason": None, "warning": None,
             "why": "GPUs 0,1 held for it until they have room", "held_for": True,
             "stdout": None},
            {"id": 4, "name": "prep", "fullname": "prep", "status": "failed", "priority": 0,
             "devices": [], "min_devices": 0, "requires_memory_per_device": 0, "usage": {},
             "started_at": T0 - 100, "ended_at": T0 - 40, "attempts": 2, "reason": "exit code 3",
             "warning": None, "why": None, "stdout": None},
        ],
    }
