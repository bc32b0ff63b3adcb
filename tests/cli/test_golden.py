"""Golden output of the CLI renderers. Regenerate with UPDATE_GOLDEN=1 after a deliberate change."""

import os
import time
from pathlib import Path

import pytest

from meowcli import render

GOLDEN = Path(__file__).parent / "golden"
T0 = 1_795_000_000.0


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text + "\n")
    assert text + "\n" == path.read_text()


def task(id, name, status, **kw):
    base = dict(id=id, name=name, fullname=name, command="python train.py", cwd="/work",
                env_hash="h", priority=0, min_devices=1, requires_memory_per_device=20000,
                status=status, devices=[], reserved_mib=[], exit_code=None, reason=None,
                created_at=T0 + id, started_at=None, ended_at=None, attempts=0)
    base.update(kw)
    return base


TASKS = [
    task(1, "train", "running", devices=[0, 1], min_devices=2, started_at=T0 + 10, priority=2,
         usage={"gpu_mib": {"0": 18000, "1": 17000}, "gpu_peak_mib": {"0": 21000, "1": 17500},
                "rss_mib": 900, "rss_peak_mib": 1200, "cpu_seconds": 88.5},
         warning="uses 21000MiB on GPU 0, over the 20000MiB it asked for"),
    task(2, "eval", "waiting", requires_memory_per_device=0.5, reason="waiting for train"),
    task(3, "prep", "done", min_devices=0, exit_code=0, started_at=T0 + 3, ended_at=T0 + 3725),
    task(4, "sweep-lr", "failed", devices=[1], exit_code=3, started_at=T0 + 4, ended_at=T0 + 70),
]


def test_list():
    check("list.txt", render.render_tasks(TASKS, now=T0 + 100))


def test_list_empty():
    assert render.render_tasks([], now=T0) == "no tasks"


def test_devices():
    result = {"backend": "fake", "hint": None, "devices": [
        {"index": 0, "name": "Fake GPU 80GiB", "total_mib": 81920, "used_by_meow_mib": 30000,
         "used_by_others_mib": 1000, "reserved_mib": 10000, "free_mib": 40920,
         "utilization": None, "tasks": ["train"]},
        {"index": 1, "name": "Fake GPU 80GiB", "total_mib": 81920, "used_by_meow_mib": 0,
         "used_by_others_mib": 0, "reserved_mib": 0, "free_mib": 81920, "utilization": 7,
         "tasks": []},
    ]}
    check("devices.txt", render.render_devices(result))


def test_bulk():
    result = {"success": ["a", "b"], "no_op": ["c: not running (done)"],
              "failure": [["zz", "no such task"]]}
    out, err = render.render_bulk("kill", result)
    check("bulk.txt", out + "\n--- stderr\n" + err)


def test_show():
    detail = {**TASKS[3], "task_home": "/state/tasks/4", "env_keys": ["HOME", "PATH"], "pid": None,
              "attempt_list": [{"n": 1, "devices": [1], "exit_code": 3, "started_at": T0 + 4,
                                "ended_at": T0 + 64, "end_reason": "exit", "memory": 20000,
                                "reason": "exit code 3",
                                "usage": {"gpu_peak_mib": {"1": 4096}},
                                "stdout": "/state/tasks/4/attempt-1.stdout.log",
                                "stderr": "/state/tasks/4/attempt-1.stderr.log"}],
              "end_reason": "exit",
              "reason": "exit code 3", "depends_on_names": ["prep"],
              "usage": {"gpu_mib": {}, "gpu_peak_mib": {"1": 4096}, "rss_mib": 0,
                        "rss_peak_mib": 2048, "cpu_seconds": 12.25}}
    check("show.txt", render.render_show(detail, now=T0 + 100))


def test_collapse_progress():
    assert render.collapse_progress("a\n 10%|#  | 1/10\r 50%|### | 5/10\r100%|####| 10/10\nb") \
        == "a\n100%|####| 10/10\nb"


def test_show_waiting_says_why_and_how_long():
    detail = {**TASKS[1], "task_home": "/state/tasks/2", "env_keys": [], "pid": None,
              "attempt_list": [], "why": "no 1 GPU(s) with 50% free; GPUs 0,1 held for train"}
    text = render.render_show(detail, now=T0 + 200)
    check("show_waiting.txt", text)
    assert "waiting (3m18s so far): no 1 GPU(s) with 50% free; GPUs 0,1 held for train" in text


def test_show_running_has_live_and_peak_memory():
    detail = {**TASKS[0], "task_home": "/state/tasks/1", "env_keys": ["PATH"], "pid": 4242,
              "reserved_mib": [20000, 20000], "attempt_list": []}
    text = render.render_show(detail, now=T0 + 100)
    check("show_running.txt", text)
    assert "runtime     1m30s so far" in text and "18000MiB now, peak 21000MiB" in text


def test_show_finished_has_peaks_not_live_memory():
    text = render.render_show({**TASKS[3], "task_home": "/t", "env_keys": [], "attempt_list": [],
                               "usage": {"gpu_mib": {"1": 0}, "gpu_peak_mib": {"1": 4096},
                                         "rss_mib": 11, "rss_peak_mib": 2048,
                                         "cpu_seconds": 1.0}}, now=T0 + 100)
    assert "now" not in text
    assert "GPU 1: peak 4GiB" in text and "peak RSS 2GiB" in text
    assert "runtime     1m06s" in text


def test_resume_of_a_failed_task_points_to_retry():
    out, _ = render.render_bulk("resume", {"success": [], "failure": [],
                                           "no_op": ["x: not cancelled (failed)",
                                                     "y: not cancelled (running)"]})
    assert out == ("unchanged: x: not cancelled (failed); y: not cancelled (running); to run "
                   "it again: meow retry x")
    out, _ = render.render_bulk("resume", {"success": [], "failure": [],
                                           "no_op": ["x: not cancelled (failed)",
                                                     "y: not cancelled (killed)"]})
    assert out == ("unchanged: x: not cancelled (failed); y: not cancelled (killed)\n"
                   "to run a task that ended again: meow retry NAME")
