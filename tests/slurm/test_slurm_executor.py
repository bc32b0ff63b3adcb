"""The Slurm executor against a real local Slurm (conftest.py): real sbatch/squeue/scancel,
real jobs, on a real event loop. Waits poll for a condition; nothing asserts on timing."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from meowd.core.reasons import EndReason
from meowd.executors.base import Exit, Handle, Launch, StartError
from meowd.executors.slurm import SlurmExecutor
from tests.slurm.conftest import SlurmCluster

WAIT = 90.0  # generous: a loaded 2-core CI box; the happy path takes about a second


class Exits:
    """The on_exit callback: records each attempt's Exit and wakes whoever waits for it."""

    def __init__(self) -> None:
        self.got: dict[int, Exit] = {}
        self.calls: list[int] = []
        self._events: dict[int, asyncio.Event] = {}

    def __call__(self, task_id: int, exit: Exit) -> None:
        self.calls.append(task_id)
        self.got[task_id] = exit
        self._event(task_id).set()

    def _event(self, task_id: int) -> asyncio.Event:
        return self._events.setdefault(task_id, asyncio.Event())

    async def wait(self, task_id: int, timeout: float = WAIT) -> Exit:
        try:
            await asyncio.wait_for(self._event(task_id).wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"task {task_id} did not end within {timeout:g} s") from None
        return self.got[task_id]


def make_launch(tmp: Path, task_id: int, command: str, **kw: object) -> Launch:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEOW_")}
    env.update(kw.pop("env", {}))  # type: ignore[arg-type]
    return Launch(
        task_id=task_id, attempt=1, fullname=f"slurm-test/task-{task_id}", command=command,
        cwd=str(tmp), env=env, stdout=str(tmp / f"{task_id}.stdout"),
        stderr=str(tmp / f"{task_id}.stderr"), exit_file=str(tmp / f"{task_id}.exit"),
        **kw,  # type: ignore[arg-type]
    )


async def until(condition: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def running(executor: SlurmExecutor, task_id: int) -> None:
    await until(lambda: executor.describe(task_id).get("state") == "RUNNING",
                f"task {task_id} to run")


@pytest.fixture
def logged(tmp_path: Path) -> tuple[list[str], Path]:
    """A command prefix that appends each Slurm command line to a log, then runs it."""
    script, log = tmp_path / "log-and-run", tmp_path / "slurm-calls.log"
    script.write_text('#!/bin/sh\nlog=$1; shift\nprintf "%s\\n" "$*" >> "$log"\nexec "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return [str(script), str(log)], log


def calls(log: Path, command: str) -> list[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.split()[0] == command]


@pytest.fixture
async def slurm(slurm_cluster: SlurmCluster, logged: tuple[list[str], Path],
                ) -> AsyncIterator[tuple[SlurmExecutor, Exits]]:
    """An executor polling every 0.2 s, its Slurm calls logged."""
    exits = Exits()
    executor = SlurmExecutor(exits, poll_interval=0.2, command_prefix=logged[0])
    runner = asyncio.create_task(executor.run())
    yield executor, exits
    runner.cancel()
    executor.detach_all()


# -- the slow one first: its job runs into its time limit while the other tests run --------
@pytest.fixture(scope="module")
def time_limited(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[tuple[Launch, Handle]]:
    """A job with a 1-minute limit (Slurm's smallest), submitted when this module starts;
    slurmctld checks limits every 30 s, so it ends 60-90 s later."""
    tmp = tmp_path_factory.mktemp("time-limit")
    launch = make_launch(tmp, 900, "echo started; sleep 600", time_limit=5)
    handle = SlurmExecutor(lambda *_: None).start(launch)
    yield launch, handle


@pytest.fixture(autouse=True, scope="module")
def _submit_time_limited_first(time_limited: tuple[Launch, Handle]) -> None:
    pass


# -- start, exit codes, environment ---------------------------------------------------------
async def test_exit_codes_logs_and_environment(slurm: tuple[SlurmExecutor, Exits],
                                               tmp_path: Path, logged: tuple[list[str], Path],
                                               ) -> None:
    executor, exits = slurm
    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")  # as in meowd
    secret = {"MEOW_TEST_SECRET": "s3cr3t-value"}
    ok = make_launch(tmp_path, 1, 'echo "out $MEOW_TEST_SECRET"; echo err >&2; pwd', env=secret)
    bad = make_launch(tmp_path, 2, "exit 3")
    handles = [await executor.start_async(ok), await executor.start_async(bad)]
    assert all(h.job_id and h.job_id.isdigit() for h in handles)

    assert (await exits.wait(1)).exit_code == 0
    failed = await exits.wait(2)
    assert failed.exit_code == 3 and failed.reason is None
    assert f"slurm job {handles[1].job_id} FAILED" in (failed.detail or "")
    assert Path(ok.stdout).read_text().splitlines() == ["out s3cr3t-value", str(tmp_path)]
    assert Path(ok.stderr).read_text() == "err\n"
    assert Path(ok.exit_file).read_text().strip() == "0"
    assert executor.describe(1)["job_id"] == handles[0].job_id
    assert executor.describe(1)["partition"] == "debug" and executor.describe(1)["node"]
    assert executor.describe(1)["state"] == "COMPLETED"
    # The environment travels through sbatch's own environment, never its command line.
    submitted = calls(logged[1], "sbatch")
    assert len(submitted) == 2 and f"--job-name={ok.fullname}" in submitted[0]
    assert not any("s3cr3t" in line for line in logged[1].read_text().splitlines())


async def test_gpus_come_from_slurm(slurm: tuple[SlurmExecutor, Exits], tmp_path: Path) -> None:
    executor, exits = slurm
    show = 'echo "$CUDA_VISIBLE_DEVICES|$SLURM_JOB_GPUS"'
    stale = {"CUDA_VISIBLE_DEVICES": "7,8", "NVIDIA_VISIBLE_DEVICES": "7,8"}
    two = make_launch(tmp_path, 1, show, min_devices=2, env=stale)
    none = make_launch(tmp_path, 2, show, min_devices=0, env=stale)
    await executor.start_async(two)
    await executor.start_async(none)
    assert (await exits.wait(1)).exit_code == 0
    assert (await exits.wait(2)).exit_code == 0
    visible, job_gpus = Path(two.stdout).read_text().strip().split("|")
    gpus = visible.split(",")
    assert len(set(gpus)) == 2 and set(gpus) <= {"0", "1", "2", "3"}
    assert visible == job_gpus
    assert Path(none.stdout).read_text().strip() == "|"


async def test_memory_time_and_options_reach_sbatch(slurm: tuple[SlurmExecutor, Exits],
                                                    slurm_cluster: SlurmCluster,
                                                    tmp_path: Path) -> None:
    executor, exits = slurm
    launch = make_launch(tmp_path, 1, "sleep 600", min_devices=1, memory_mib=1000,
                         time_limit=61, options={"partition": "debug", "extra": "--nice=5"})
    handle = await executor.start_async(launch)
    assert executor.tracks_memory  # local-slurm.sh: CR_Core_Memory
    job = slurm_cluster.run("scontrol", "show", "job", str(handle.job_id)).stdout
    assert "MemPerTres=gres:gpu:1000" in job
    assert "TimeLimit=00:02:00" in job  # 61 s rounds up to 2 minutes
    assert "Nice=5" in job and "Partition=debug" in job
    assert f"JobName={launch.fullname}" in job
    assert executor.signal(1, signal.SIGKILL)
    assert (await exits.wait(1)).reason == EndReason.KILLED


async def test_refused_submissions_raise_start_error(slurm: tuple[SlurmExecutor, Exits],
                                                     tmp_path: Path) -> None:
    executor, _ = slurm
    too_big = make_launch(tmp_path, 1, "true", min_devices=1, memory_mib=10_000_000)
    with pytest.raises(StartError, match="node configuration is not available"):
        await executor.start_async(too_big)
    with pytest.raises(StartError, match=r"(?i)invalid partition"):
        executor.start(make_launch(tmp_path, 2, "true", options={"partition": "nope"}))
    assert not executor.is_watching(1) and not executor.is_watching(2)


# -- signals ----------------------------------------------------------------------------------
async def test_kill_cancels_running_and_pending_jobs(slurm: tuple[SlurmExecutor, Exits],
                                                     tmp_path: Path) -> None:
    executor, exits = slurm
    run = make_launch(tmp_path, 1, "echo up; sleep 600")
    pending = make_launch(tmp_path, 2, "echo never", options={"extra": "--begin=now+3600"})
    await executor.start_async(run)
    await executor.start_async(pending)
    await running(executor, 1)
    assert executor.describe(2)["state"] == "PENDING"
    assert executor.signal(1, signal.SIGTERM)
    assert executor.signal(2, signal.SIGTERM)
    killed = await exits.wait(1)
    assert killed.reason == EndReason.KILLED and killed.exit_code == 128 + signal.SIGTERM
    never = await exits.wait(2)
    assert never.reason == EndReason.KILLED and never.exit_code is None
    assert not Path(pending.stdout).exists()
    assert not executor.signal(1, signal.SIGTERM)  # no longer watched


async def test_sigkill_stops_a_job_that_ignores_sigterm(slurm: tuple[SlurmExecutor, Exits],
                                                        tmp_path: Path) -> None:
    executor, exits = slurm
    stubborn = make_launch(tmp_path, 1, "trap '' TERM; echo up; sleep 600 & wait")
    await executor.start_async(stubborn)
    await running(executor, 1)
    await until(lambda: Path(stubborn.stdout).exists() and Path(stubborn.stdout).read_text(),
                "the job to print")
    assert executor.signal(1, signal.SIGKILL)
    assert (await exits.wait(1)).reason == EndReason.KILLED


async def test_other_signals_reach_the_command(slurm: tuple[SlurmExecutor, Exits],
                                               tmp_path: Path) -> None:
    executor, exits = slurm
    trapper = make_launch(tmp_path, 1, "trap 'echo got usr1; exit 5' USR1; echo up; "
                                       "while :; do sleep 0.1; done")
    await executor.start_async(trapper)
    await until(lambda: Path(trapper.stdout).exists() and Path(trapper.stdout).read_text(),
                "the job to print")
    assert executor.signal(1, signal.SIGUSR1)
    ended = await exits.wait(1)
    assert ended.exit_code == 5 and ended.reason is None
    assert "got usr1" in Path(trapper.stdout).read_text()


async def test_cancel_outside_meow_is_cancelled(slurm: tuple[SlurmExecutor, Exits],
                                                slurm_cluster: SlurmCluster,
                                                tmp_path: Path) -> None:
    executor, exits = slurm
    handle = await executor.start_async(make_launch(tmp_path, 1, "sleep 600"))
    await running(executor, 1)
    slurm_cluster.run("scancel", str(handle.job_id))
    assert (await exits.wait(1)).reason == EndReason.CANCELLED


async def test_failed_dependency_never_leaves_a_job_pending(slurm: tuple[SlurmExecutor, Exits],
                                                            tmp_path: Path) -> None:
    executor, exits = slurm
    first = await executor.start_async(make_launch(tmp_path, 1, "sleep 1; exit 1"))
    await executor.start_async(make_launch(tmp_path, 2, "echo never",
                                           options={"after_job_ids": str(first.job_id)}))
    assert (await exits.wait(1)).exit_code == 1
    after = await exits.wait(2)
    assert after.reason == EndReason.CANCELLED and after.exit_code is None
    assert "Dependency" in (after.detail or "")


# -- adoption -------------------------------------------------------------------------------
async def test_a_new_executor_adopts_running_and_ended_jobs(slurm_cluster: SlurmCluster,
                                                            tmp_path: Path) -> None:
    old = SlurmExecutor(Exits(), poll_interval=0.2)
    gate = tmp_path / "gate"
    waits = make_launch(tmp_path, 1, f"while [ ! -e {gate} ]; do sleep 0.1; done; exit 7")
    quick = make_launch(tmp_path, 2, "exit 4")
    handles = {1: await old.start_async(waits), 2: await old.start_async(quick)}
    await until(lambda: Path(quick.exit_file).exists(), "the quick job to end")
    old.detach_all()  # the daemon goes away; both jobs were never reported

    exits = Exits()
    new = SlurmExecutor(exits, poll_interval=0.2)
    assert new.adopt(1, handles[1], waits.exit_file)
    assert new.adopt(2, handles[2], quick.exit_file)
    assert not new.adopt(3, Handle(pid=123), str(tmp_path / "3.exit"))  # not a Slurm job
    runner = asyncio.create_task(new.run())
    try:
        assert (await exits.wait(2)).exit_code == 4  # ended while nobody watched
        await running(new, 1)
        gate.touch()
        assert (await exits.wait(1)).exit_code == 7
    finally:
        runner.cancel()
    assert sorted(exits.calls) == [1, 2]  # once each


async def test_jobs_slurm_forgot_end_by_exit_file_or_as_lost(slurm_cluster: SlurmCluster,
                                                             tmp_path: Path) -> None:
    exits = Exits()
    executor = SlurmExecutor(exits)
    (tmp_path / "1.exit").write_text("6\n")
    assert executor.adopt(1, Handle(job_id="987654"), str(tmp_path / "1.exit"))
    assert executor.adopt(2, Handle(job_id="987655"), str(tmp_path / "2.exit"))
    await executor.poll()
    assert exits.calls == []  # once might be a job too fresh to show; twice is gone
    await executor.poll()
    assert exits.got[1].exit_code == 6 and exits.got[1].reason is None
    assert exits.got[2].exit_code is None and exits.got[2].reason == EndReason.LOST


# -- one call per poll, and a broken Slurm --------------------------------------------------
async def test_one_squeue_call_per_poll_for_all_jobs(slurm_cluster: SlurmCluster,
                                                     logged: tuple[list[str], Path],
                                                     tmp_path: Path) -> None:
    prefix, log = logged
    exits = Exits()
    executor = SlurmExecutor(exits, command_prefix=prefix)  # polled by hand below
    gate = tmp_path / "gate"
    handles = [await executor.start_async(make_launch(
        tmp_path, i, f"while [ ! -e {gate} ]; do sleep 0.1; done; exit {i}"))
        for i in range(1, 7)]
    for n in range(1, 4):
        await executor.poll()
        squeues = calls(log, "squeue")
        assert len(squeues) == n
        assert f"--jobs={','.join(str(h.job_id) for h in handles)}" in squeues[-1]
    gate.touch()
    polls = 3
    while len(exits.got) < 6:
        await asyncio.sleep(0.2)
        await executor.poll()
        polls += 1
        assert polls < WAIT / 0.2, "jobs did not end"
    assert len(calls(log, "squeue")) == polls
    assert {t: e.exit_code for t, e in exits.got.items()} == {i: i for i in range(1, 7)}
    assert calls(log, "scontrol") == ["scontrol show config"]  # read once, then cached
    assert not calls(log, "sacct")  # no accounting here


async def test_broken_slurm_is_retried_not_fatal(slurm_cluster: SlurmCluster,
                                                 tmp_path: Path) -> None:
    broken, tries = tmp_path / "broken", tmp_path / "tries"
    broken.write_text(f'#!/bin/sh\necho "$1" >> {tries}\n'
                      'echo "slurm_load_jobs error: Unable to contact slurm controller" >&2\n'
                      'exit 1\n')
    hangs = tmp_path / "hangs"
    hangs.write_text("#!/bin/sh\nexec sleep 600\n")
    for script in (broken, hangs):
        script.chmod(0o755)

    exits = Exits()
    executor = SlurmExecutor(exits, poll_interval=0.1, command_prefix=[str(tmp_path / "none")])
    with pytest.raises(StartError, match="none"):
        await executor.start_async(make_launch(tmp_path, 9, "true"))
    handle = await SlurmExecutor(Exits()).start_async(make_launch(tmp_path, 1, "exit 2"))
    assert executor.adopt(1, handle, str(tmp_path / "1.exit"))
    await executor.poll()  # the command is missing
    executor.command_prefix, executor.command_timeout = [str(hangs)], 0.5
    await executor.poll()  # no answer in time
    executor.command_prefix, executor.command_timeout = [str(broken)], 10.0
    runner = asyncio.create_task(executor.run())
    try:
        await until(lambda: tries.exists() and len(tries.read_text().split()) >= 3,
                    "the poll loop to retry")  # Slurm answers with errors
        assert exits.calls == [] and executor.is_watching(1) and not runner.done()
        executor.command_prefix = []  # Slurm is back
        assert (await exits.wait(1)).exit_code == 2
    finally:
        runner.cancel()


# -- last: the job submitted when this module started ----------------------------------------
async def test_time_limit_ends_job_as_timeout(time_limited: tuple[Launch, Handle]) -> None:
    launch, handle = time_limited
    exits = Exits()
    executor = SlurmExecutor(exits, poll_interval=0.5)
    assert executor.adopt(launch.task_id, handle, launch.exit_file)
    runner = asyncio.create_task(executor.run())
    try:
        ended = await exits.wait(launch.task_id, timeout=180)
    finally:
        runner.cancel()
    assert ended.reason == EndReason.TIMEOUT
    assert "TIMEOUT" in (ended.detail or "")
    assert Path(launch.stdout).read_text().startswith("started")
