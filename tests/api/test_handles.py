"""Python handles on queued tasks (cattino.handle), against a real daemon."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import cattino
from meowd.core.protocol import CreateRequest, TaskSpec
from tests.conftest import MeowEnv


@pytest.fixture
def api(meow_env: MeowEnv, monkeypatch: pytest.MonkeyPatch) -> MeowEnv:
    monkeypatch.setenv("MEOW_HOME", str(meow_env.home))
    return meow_env


def create(env: MeowEnv, *specs: TaskSpec) -> list[dict]:
    with env.client() as c:
        return c.call(CreateRequest(tuple(specs), "/tmp", dict(env.env)))


def test_a_handle_waits_reads_logs_and_usage(api: MeowEnv):
    [made] = create(api, TaskSpec("echo hello; exit 3", name="h", min_devices=0))
    by_id, by_name = cattino.handle(made["id"]), cattino.handle("h")
    assert by_id.id == by_name.id == made["id"]
    assert by_name.wait(timeout=30) == "failed"
    assert by_name.exit_code == 3 and by_name.status == "failed"
    assert by_name.logs().strip() == "hello"
    [row] = by_name.resource_usage()
    assert row["attempt"] == 1 and row["exit_code"] == 3


def test_wait_times_out_and_sync_context_kills_on_interrupt(api: MeowEnv):
    create(api, TaskSpec("sleep 60", name="long", min_devices=0))
    t = cattino.handle("long")
    with pytest.raises(TimeoutError):
        t.wait(timeout=0.2)
    with pytest.raises(KeyboardInterrupt), t.sync_context():
        raise KeyboardInterrupt
    assert t.wait(timeout=30) == "killed"


def test_unknown_task_is_an_error(api: MeowEnv):
    from meowd.core.errors import NotFound

    with pytest.raises(NotFound):
        cattino.handle("nope")


def test_remaining_time_and_graceful_timeout_inside_a_task(api: MeowEnv, tmp_path):
    out = tmp_path / "left"
    code = ("import cattino, sys; left = cattino.remaining_time(); "
            f"open({str(out)!r}, 'w').write(str(left)); raise cattino.GracefulTimeout()")
    create(api, TaskSpec(f"{sys.executable} -c \"{code}\"", name="g", min_devices=0,
                         time_limit=600))
    t = cattino.handle("g")
    assert t.wait(timeout=30) == "timeout"
    assert 590 < float(out.read_text()) <= 600
    # outside a task there is no deadline
    env = {k: v for k, v in os.environ.items() if k != "MEOW_DEADLINE"}
    assert subprocess.run([sys.executable, "-c", "import cattino; "
                           "assert cattino.remaining_time() is None"], env=env).returncode == 0
