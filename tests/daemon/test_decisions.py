"""Controller decisions in milliseconds: an in-process controller with a real SQLite store,
real fake GPUs and a scripted executor (this file's own: it starts nothing, and the test
says when and how each attempt ends)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from meowd.config import Settings
from meowd.controller import Controller
from meowd.core.paths import resolve_paths
from meowd.core.protocol import CreateRequest, Selector, TaskSpec
from meowd.core.settings import parse_fake_gpus
from meowd.devices.fake import FakeBackend
from meowd.executors.base import Exit, Handle, Launch, StartError
from meowd.ledger import NullLedger
from meowd.store import Store


class ScriptedExecutor:
    """Records starts and signals; exits happen when the test calls `end`."""

    name = "local"

    def __init__(self, on_exit) -> None:
        self.on_exit = on_exit
        self.started: dict[int, Launch] = {}
        self.signals: list[tuple[int, int]] = []
        self.refuse: set[str] = set()

    def start(self, launch: Launch) -> Handle:
        if launch.fullname in self.refuse:
            raise StartError("refused by the script")
        self.started[launch.task_id] = launch
        return Handle(pid=None, job_id=f"job-{launch.task_id}-{launch.attempt}")

    def signal(self, task_id: int, sig: int) -> bool:
        if task_id not in self.started:
            return False
        self.signals.append((task_id, sig))
        return True

    def end(self, task_id: int, exit: Exit) -> None:
        del self.started[task_id]
        self.on_exit(task_id, exit)

    def adopt(self, task_id: int, handle: Handle, exit_file: str) -> bool:
        return False

    def is_watching(self, task_id: int) -> bool:
        return task_id in self.started

    def describe(self, task_id: int) -> dict[str, str]:
        return {}

    async def run(self) -> None:
        return None

    def detach_all(self) -> None:
        self.started.clear()


@pytest.fixture
async def ctl(tmp_path: Path):
    paths = resolve_paths({"MEOW_HOME": str(tmp_path)})
    paths.tasks.mkdir(parents=True)
    settings = Settings(fake_gpus="2x24GiB", max_attempts=3)
    store = Store(paths.database)
    backend = FakeBackend(parse_fake_gpus("2x24GiB"), paths.fake_gpu_holds)
    executors: dict[str, ScriptedExecutor] = {}

    def factory(on_exit, controller):
        executors["local"] = ScriptedExecutor(on_exit)
        return dict(executors)

    controller = Controller(paths, settings, store, backend, executors=factory,
                            ledger=NullLedger())
    await controller.start()
    controller.scripted = executors["local"]  # type: ignore[attr-defined]
    yield controller
    store.close()


def create(c: Controller, *specs: TaskSpec, request_id: str | None = None) -> list[dict]:
    return c.create(CreateRequest(tuple(specs), "/", {"HOME": "/root"}, request_id))


def task(c: Controller, name: str):
    return c.get(name)


async def test_an_ordinary_failure_is_retried_with_its_reason(ctl: Controller):
    create(ctl, TaskSpec("false", name="flaky", min_devices=0, max_retries=2))
    ex = ctl.scripted  # type: ignore[attr-defined]
    for attempt in (1, 2, 3):
        assert ctl.schedule() == 1
        t = task(ctl, "flaky")
        assert t.attempts == attempt
        ex.end(t.id, Exit(1))
    t = task(ctl, "flaky")
    assert t.status == "failed" and t.end_reason == "exit" and t.retries_used == 2
    rows = ctl.store.attempts(t.id)
    assert [(a.n, a.exit_code, a.end_reason) for a in rows] == [
        (1, 1, "exit"), (2, 1, "exit"), (3, 1, "exit")]
    assert "retry 1 of 2" in rows[0].reason


async def test_a_gpu_oom_scales_the_next_request(ctl: Controller, tmp_path: Path):
    create(ctl, TaskSpec("python train.py", name="big", requires_memory_per_device=10000,
                         max_retries=1))
    ctl.schedule()
    t = task(ctl, "big")
    attempt = ctl.running[t.id].attempt
    Path(attempt.stderr).parent.mkdir(parents=True, exist_ok=True)
    Path(attempt.stderr).write_text(
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    ctl.scripted.end(t.id, Exit(1))  # type: ignore[attr-defined]
    assert t.status == "waiting" and t.end_reason == "oom"
    assert t.requires_memory_per_device == 15000
    assert "GPU out of memory" in t.reason


async def test_a_stop_intent_decides_the_outcome_and_a_natural_end_does_not(ctl: Controller):
    create(ctl, TaskSpec("sleep 9", name="a", min_devices=0),
           TaskSpec("sleep 9", name="b", min_devices=0))
    ctl.schedule()
    a, b = task(ctl, "a"), task(ctl, "b")
    ctl.kill(Selector("a"), force=False)
    assert ctl.scripted.signals == [(a.id, signal.SIGTERM)]  # type: ignore[attr-defined]
    ctl.scripted.end(a.id, Exit(143))  # type: ignore[attr-defined]
    assert a.status == "killed" and a.end_reason == "killed"
    ctl.scripted.end(b.id, Exit(0))  # type: ignore[attr-defined]
    # b has ended: killing it now changes nothing
    result = ctl.kill(Selector("b"), force=True)
    assert b.status == "done" and result.no_op


async def test_a_start_failure_fails_only_that_task(ctl: Controller):
    ctl.scripted.refuse.add("bad")  # type: ignore[attr-defined]
    create(ctl, TaskSpec("true", name="bad", min_devices=0),
           TaskSpec("true", name="good", min_devices=0))
    assert ctl.schedule() == 1
    bad = task(ctl, "bad")
    assert bad.status == "failed" and bad.end_reason == "spawn"
    assert "refused by the script" in bad.reason
    assert task(ctl, "good").status == "running"


async def test_a_repeated_request_id_gets_the_first_answer(ctl: Controller):
    first = create(ctl, TaskSpec("true", min_devices=0), request_id="req-0123456789")
    again = create(ctl, TaskSpec("true", min_devices=0), request_id="req-0123456789")
    assert first == again and len(ctl.tasks) == 1


async def test_time_limit_sets_the_deadline_and_timeout_is_its_own_status(ctl: Controller):
    create(ctl, TaskSpec("sleep 99", name="slow", min_devices=0, time_limit=0.05))
    ctl.schedule()
    t = task(ctl, "slow")
    launch = ctl.scripted.started[t.id]  # type: ignore[attr-defined]
    assert float(launch.env["MEOW_DEADLINE"]) == pytest.approx(t.deadline, abs=0.01)
    for _ in range(100):
        if ctl.scripted.signals:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    assert ctl.scripted.signals == [(t.id, signal.SIGTERM)]  # type: ignore[attr-defined]
    ctl.scripted.end(t.id, Exit(143))  # type: ignore[attr-defined]
    assert t.status == "timeout" and t.end_reason == "timeout"


async def test_a_resumable_task_is_requeued_on_timeout(ctl: Controller):
    create(ctl, TaskSpec("train", name="r", min_devices=0, resumable=True))
    ctl.schedule()
    t = task(ctl, "r")
    ctl.scripted.end(t.id, Exit(124))  # type: ignore[attr-defined]  GracefulTimeout
    assert t.status == "waiting" and t.end_reason == "timeout"


async def test_retry_and_resume_say_what_fits(ctl: Controller):
    create(ctl, TaskSpec("false", name="f", min_devices=0))
    ctl.schedule()
    t = task(ctl, "f")
    ctl.scripted.end(t.id, Exit(2))  # type: ignore[attr-defined]
    resumed = ctl.resume(Selector("f"))
    assert resumed.no_op == ["f: not cancelled (failed)"]
    assert ctl.retry(Selector("f")).success == ["f"]
    assert t.status == "waiting"


async def test_dependency_waits_have_their_own_field(ctl: Controller):
    create(ctl, TaskSpec("true", name="a", min_devices=0),
           TaskSpec("true", name="b", min_devices=0, after=(0,)))
    a, b = task(ctl, "a"), task(ctl, "b")
    assert b.dependency == "waiting for a" and b.reason is None
    ctl.schedule()
    ctl.scripted.end(a.id, Exit(3))  # type: ignore[attr-defined]
    assert b.dependency == "blocked: a failed"
    assert ctl.public(b)["why"] == "blocked: a failed"


async def test_a_pass_that_fails_halfway_leaves_nothing_running_unstarted(ctl: Controller,
                                                                          monkeypatch):
    """A placement pass fails after recording one of two starts (its transaction rolls
    back): both tasks are back to waiting as before, not left "running" in memory with no
    process (they would hold their slots for good), and the next pass starts them."""
    create(ctl, TaskSpec("true", name="b", min_devices=0),
           TaskSpec("true", name="c", min_devices=0))
    real, calls = ctl.store.insert_attempt, []

    def insert_attempt(attempt):
        calls.append(attempt.task_id)
        if len(calls) == 2:  # b's start is recorded, then c's fails
            raise RuntimeError("scripted failure")
        real(attempt)

    monkeypatch.setattr(ctl.store, "insert_attempt", insert_attempt)
    with pytest.raises(RuntimeError, match="scripted"):
        ctl.schedule()
    b, c = task(ctl, "b"), task(ctl, "c")
    assert calls == [b.id, c.id] and ctl.scripted.started == {}  # type: ignore[attr-defined]
    for t in (b, c):
        assert (t.status, t.attempts, t.started_at, t.id in ctl.running) == (
            "waiting", 0, None, False)
        assert ctl.store.attempts(t.id) == []
    stored = {t.id: t for t in ctl.store.load_tasks()}
    assert [(stored[t.id].status, stored[t.id].attempts) for t in (b, c)] == [
        ("waiting", 0), ("waiting", 0)]
    monkeypatch.setattr(ctl.store, "insert_attempt", real)
    assert ctl.schedule() == 2 and (b.attempts, c.attempts) == (1, 1)


async def test_a_start_that_cannot_be_recorded_never_runs(ctl: Controller, monkeypatch):
    """The store refuses phase 1 (a full disk): nothing starts, since a start that is not
    recorded could run twice; every task waits as before, and runs once there is room."""
    import sqlite3

    create(ctl, TaskSpec("true", name="b", min_devices=0),
           TaskSpec("true", name="c", min_devices=0))
    real, calls = ctl.store.insert_attempt, []

    def insert_attempt(attempt):
        calls.append(attempt.task_id)
        if len(calls) == 2:
            raise sqlite3.OperationalError("database or disk is full")
        real(attempt)

    monkeypatch.setattr(ctl.store, "insert_attempt", insert_attempt)
    assert ctl.schedule() == 0 and ctl.store.degraded
    b, c = task(ctl, "b"), task(ctl, "c")
    assert ctl.scripted.started == {}  # type: ignore[attr-defined]
    for t in (b, c):
        assert (t.status, t.attempts, t.id in ctl.running) == ("waiting", 0, False)
    monkeypatch.setattr(ctl.store, "insert_attempt", real)
    assert ctl.store.flush() and not ctl.store.degraded
    stored = {t.id: t for t in ctl.store.load_tasks()}
    assert [(stored[t.id].status, stored[t.id].attempts) for t in (b, c)] == [
        ("waiting", 0), ("waiting", 0)]
    assert ctl.store.attempts(b.id) == []
    assert ctl.schedule() == 2 and ctl.store.attempts(b.id)[0].n == 1
