"""meowd with the Slurm executor, end to end against the real local Slurm: task files with
groups and hooks, failures, time limits, kill, and a `kill -9` of meowd while jobs run."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from meowd.core.protocol import CreateRequest, TaskSpec
from tests.conftest import MeowEnv, _make_env
from tests.slurm.conftest import SlurmCluster

PIPELINE = """
from cattino.tasks import ProcTask, TaskGroup
import cattino

class Hooked(ProcTask):
    def on_start(self):
        open("{log}", "a").write(f"start {{self.name}}\\n")

    def on_end(self):
        open("{log}", "a").write(f"end {{self.name}}\\n")

first = Hooked("echo first >> {log}; echo gpus=$CUDA_VISIBLE_DEVICES >> {log}; exit {code}",
               task_name="first", min_devices=2, requires_memory_per_device=1000)
second = ProcTask("echo second >> {log}", task_name="second", min_devices=1)
cattino.export(TaskGroup([first, second], execute_strategy="sequential", group_name="pipe"))
"""


@pytest.fixture
def slurm_env(slurm_cluster: SlurmCluster) -> Iterator[MeowEnv]:
    """A daemon (no local GPUs) whose tasks go to the local Slurm, polled every second."""
    for env in _make_env(None):
        env.home.mkdir(parents=True, exist_ok=True)
        (env.home / "config.toml").write_text(
            'executor = "slurm"\nslurm_poll_interval = 1.0\n')
        env.start()
        yield env


def create(env: MeowEnv, *specs: TaskSpec) -> list[dict]:
    with env.client() as c:
        return c.call(CreateRequest(tuple(specs), "/tmp", dict(env.env)))


def test_a_sequential_group_with_hooks_runs_in_order_on_slurm(slurm_env: MeowEnv,
                                                              tmp_path: Path):
    log = tmp_path / "log"
    script = tmp_path / "pipeline.py"
    script.write_text(textwrap.dedent(PIPELINE.format(log=log, code=0)))
    slurm_env.meow("create", str(script), cwd=str(tmp_path))
    first = slurm_env.wait_status("pipe/first", "done", timeout=90)
    slurm_env.wait_status("pipe/second", "done", timeout=90)
    lines = log.read_text().splitlines()
    assert lines[:2] == ["start first", "first"]
    gpus = lines[2].removeprefix("gpus=").split(",")
    assert len(gpus) == 2  # from Slurm's GRES, not from meow's local placement
    assert lines[3:] == ["end first", "second"]
    assert first["executor"] == "slurm"
    detail = json.loads(slurm_env.meow("show", "pipe/first", "--json").stdout)
    assert detail["attempt_list"][0]["job_id"]


def test_a_failed_first_task_never_leaves_the_second_pending(slurm_env: MeowEnv,
                                                             tmp_path: Path):
    log = tmp_path / "log"
    script = tmp_path / "pipeline.py"
    script.write_text(textwrap.dedent(PIPELINE.format(log=log, code=3)))
    slurm_env.meow("set", "cascade_cancel_on_failure", "true")
    slurm_env.meow("create", str(script), cwd=str(tmp_path))
    first = slurm_env.wait_status("pipe/first", "failed", timeout=90)
    assert first["exit_code"] == 3
    second = slurm_env.wait_status("pipe/second", "cancelled", timeout=30)
    assert second["end_reason"] == "dependency"


def test_kill_cancels_the_job_and_a_restarted_meowd_readopts(slurm_env: MeowEnv,
                                                             tmp_path: Path):
    go = tmp_path / "go"
    create(slurm_env,
           TaskSpec("sleep 300", name="victim", min_devices=1),
           TaskSpec(f"while [ ! -e {go} ]; do sleep 0.2; done; exit 5", name="survivor",
                    min_devices=1))
    slurm_env.wait_status("victim", "running", timeout=60)
    slurm_env.wait_status("survivor", "running", timeout=60)
    with slurm_env.client() as c:
        job = c.show("survivor")["attempt_list"][0]["job_id"]
    assert job
    slurm_env.meow("kill", "victim")
    assert slurm_env.wait_status("victim", "killed", timeout=60)["end_reason"] == "killed"
    slurm_env.kill9()
    go.touch()
    slurm_env.start()
    task = slurm_env.wait_status("survivor", "failed", timeout=90)
    assert task["exit_code"] == 5 and task["attempts"] == 1


def test_a_time_limit_ends_the_job_as_timeout(slurm_env: MeowEnv):
    # meowd's own deadline stops the job (Slurm's --time rounds up to a whole minute)
    create(slurm_env, TaskSpec("sleep 300", name="slow", min_devices=0, time_limit=3))
    task = slurm_env.wait_status("slow", "timeout", timeout=90)
    assert task["end_reason"] == "timeout"
