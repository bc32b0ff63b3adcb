"""Run attempts as Slurm batch jobs: sbatch to start, one squeue per poll to follow them all,
scancel to signal, and the job id in the Handle to find them again after a daemon restart.

meowd runs where the Slurm commands work (a cluster's login node). Each attempt is a batch
script fed to `sbatch --parsable` on its standard input; the script runs the task's command
in an inner shell and writes its exit status to the attempt's exit file, as the local
executor's wrapper does. The task's environment (secrets included) reaches the job through
sbatch's own environment and `--export=ALL`, never through the command line.

Every `poll_interval` seconds one `squeue -t all -j ID,ID,...` reports every watched job,
ended ones included (slurmctld keeps them for MinJobAge, 300 s by default), with its exit
status. A job that slurmctld no longer knows (the daemon was down longer than that) is looked
up with one `sacct` call where accounting is configured; otherwise its exit file says how it
ended, or it is reported lost. A slow or broken Slurm (command missing, timeout, controller
down) is logged and retried at the next poll; it never stops the daemon.

The interface methods are synchronous (base.Executor); the ones that talk to Slurm from the
event loop have a non-blocking form: `start_async` (sbatch in a subprocess the loop awaits),
`signal` (schedules scancel and returns), `run` (the poll loop).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shlex
import shutil
import signal as signals
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from meowd.core.reasons import EndReason
from meowd.executors.base import Exit, ExitCallback, Handle, Launch, StartError
from meowd.executors.local import read_exit_file

log = logging.getLogger("meowd.executor.slurm")

# The batch script. sbatch reads #SBATCH directives only up to the first command, so the
# `trap` line ends them: a command that contains "#SBATCH" lines stays the user's text.
# The exit file of an earlier run of the same job (Slurm requeues preempted jobs) is removed
# first. The traps are handlers, not "ignore": the command gets default dispositions, and the
# script outlives scancel's SIGTERM long enough to record the command's status.
SCRIPT = """#!/bin/sh
trap : HUP INT TERM USR1 USR2
rm -f -- {exit_file}
cd -- {cwd} || exit 127
/bin/sh -c {command}
rc=$?
echo "$rc" > {exit_file}
exit "$rc"
"""

# Placed by Slurm's GRES inside the job; meow's local values must not leak into it.
_DEVICE_VARS = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL",
                "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ZE_AFFINITY_MASK")
# Which cluster the client commands talk to: the daemon's view wins, so sbatch submits to the
# cluster that squeue polls.
_CLIENT_VARS = ("SLURM_CONF",)
_MEM_FLAGS = ("--mem", "--mem-per-cpu", "--mem-per-gpu")

ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "RESIZING", "REQUEUED",
    "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT", "STOPPED", "SIGNALING", "STAGE_OUT",
    "RESV_DEL_HOLD", "POWER_UP_NODE", "UPDATE_DB",
})
STATE_REASONS: dict[str, EndReason | None] = {
    "COMPLETED": None,  # the exit code says it all
    "FAILED": None,
    "TIMEOUT": EndReason.TIMEOUT,
    "DEADLINE": EndReason.TIMEOUT,
    "CANCELLED": EndReason.CANCELLED,  # KILLED when meow asked for it
    "OUT_OF_MEMORY": EndReason.HOST_OOM,
    "NODE_FAIL": EndReason.NODE_FAIL,
    "BOOT_FAIL": EndReason.NODE_FAIL,
    "PREEMPTED": EndReason.REQUEUE,  # preempted without requeue by Slurm: meow runs it again
    "REVOKED": EndReason.LOST,  # a federation sibling ran it elsewhere
}
FINAL_STATES = frozenset(STATE_REASONS)


class SlurmUnavailable(Exception):
    """A Slurm command could not run or did not answer in time."""


@dataclass
class _Job:
    task_id: int
    job_id: str
    exit_file: str
    state: str = "UNKNOWN"
    partition: str = ""
    node: str = ""
    reason: str = ""
    stop_requested: bool = False
    """meow asked to stop it (SIGTERM/SIGKILL): CANCELLED then means KILLED."""
    missing: int = 0
    """Consecutive polls in which neither squeue nor sacct knew the job."""
    unsent: list[int] = field(default_factory=list)
    """Signals whose scancel failed because Slurm was unavailable; retried at each poll."""


@dataclass(frozen=True)
class JobRow:
    job_id: str
    state: str
    exit_code: int | None
    """128+N when the batch script was killed by signal N; None when Slurm has none."""
    node: str = ""
    partition: str = ""
    reason: str = ""


def exit_from_status(raw: int) -> int:
    """squeue's exit_code is a wait status: 768 is exit 3, 9 is killed by SIGKILL (137)."""
    sig = raw & 0x7F
    return 128 + sig if sig else (raw >> 8) & 0xFF


def exit_from_pair(text: str) -> int | None:
    """sacct/scontrol's ExitCode `rc:sig`."""
    rc, _, sig = text.partition(":")
    try:
        code, signum = int(rc), int(sig or 0)
    except ValueError:
        return None
    return 128 + signum if signum else code


def parse_squeue(text: str) -> dict[str, JobRow]:
    """Rows of `squeue -O JobID:|,State:|,exit_code:|,NodeList:|,Partition:|,Reason:|`."""
    rows = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 6:
            continue
        job_id, state, raw, node, partition, reason = (p.strip() for p in parts[:6])
        try:
            code: int | None = exit_from_status(int(raw))
        except ValueError:
            code = None
        rows[job_id] = JobRow(job_id, state.split()[0] if state else "", code, node,
                              partition, "" if reason == "None" else reason)
    return rows


def parse_sacct(text: str) -> dict[str, JobRow]:
    """Rows of `sacct -X -n -P -o JobID,State,ExitCode,NodeList,Partition,Reason`."""
    rows = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        job_id, state, code, node, partition = (p.strip() for p in parts[:5])
        reason = parts[5].strip() if len(parts) > 5 else ""
        # "CANCELLED by 1000"; a requeued job appears once per run: the last row wins.
        rows[job_id] = JobRow(job_id, state.split()[0] if state else "", exit_from_pair(code),
                              "" if node == "None assigned" else node, partition,
                              "" if reason == "None" else reason)
    return rows


def parse_config(text: str) -> dict[str, str]:
    """`scontrol show config`: `Key = Value` lines."""
    config = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            config[key.strip()] = value.strip()
    return config


def _job_id(stdout: str) -> str:
    """`sbatch --parsable` prints `ID` or `ID;CLUSTER`."""
    lines = stdout.strip().splitlines()
    job_id = lines[-1].split(";")[0].strip() if lines else ""
    if not job_id.isdigit():
        raise StartError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return job_id


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


class SlurmExecutor:
    """One Slurm batch job per attempt.

    on_exit(task_id, Exit) is called on the event loop once per attempt. partition, account
    and extra (sbatch arguments) apply to every job; a Launch's options override them per task:
    `partition`, `account`, `extra` (a shell-quoted string, appended after the executor's own)
    and `after_job_ids` (comma-separated: the job waits for them to succeed and is cancelled by
    Slurm if one fails). command_prefix runs every Slurm command through a wrapper (tests log
    the calls this way); command_timeout bounds each call.
    """

    name = "slurm"

    def __init__(
        self, on_exit: ExitCallback, *, partition: str | None = None,
        account: str | None = None, extra: Sequence[str] = (), poll_interval: float = 10.0,
        command_prefix: Sequence[str] = (), command_timeout: float = 60.0,
    ) -> None:
        self._on_exit = on_exit
        self.partition = partition or None
        self.account = account or None
        self.extra = list(extra)
        self.poll_interval = poll_interval
        self.command_prefix = list(command_prefix)
        self.command_timeout = command_timeout
        self._jobs: dict[int, _Job] = {}
        self.config: dict[str, str] | None = None
        """The cluster's `scontrol show config`, read once (at the first start or poll)."""
        self._background: set[asyncio.Task[None]] = set()
        self._unavailable = False
        self._ended: dict[int, dict[str, str]] = {}

    # -- the cluster's configuration ------------------------------------------------------
    @property
    def tracks_memory(self) -> bool:
        """Memory is a consumable resource (SelectTypeParameters CR_*_Memory)."""
        return "MEMORY" in (self.config or {}).get("SelectTypeParameters", "").upper()

    @property
    def has_accounting(self) -> bool:
        """slurmdbd-backed accounting: sacct knows jobs that slurmctld has forgotten."""
        storage = (self.config or {}).get("AccountingStorageType", "")
        return storage not in ("", "accounting_storage/none")

    def _store_config(self, rc: int, out: str, err: str) -> None:
        if rc != 0:
            raise SlurmUnavailable(f"scontrol show config: {_last_line(err) or f'exit {rc}'}")
        self.config = parse_config(out)
        log.info("slurm: memory %s, accounting %s",
                 "tracked" if self.tracks_memory else "not tracked",
                 "on" if self.has_accounting else "off")

    async def _ensure_config(self) -> None:
        if self.config is None:
            self._store_config(*await self._run("scontrol", "show", "config"))

    def _ensure_config_sync(self) -> None:
        if self.config is None:
            self._store_config(*self._run_sync("scontrol", "show", "config"))

    # -- commands -------------------------------------------------------------------------
    def _argv(self, args: tuple[str, ...]) -> list[str]:
        """The command line, its program found on the daemon's PATH (sbatch gets the task's
        environment, whose PATH may not lead to Slurm)."""
        argv = [*self.command_prefix, *args]
        if os.sep not in argv[0]:
            argv[0] = shutil.which(argv[0]) or argv[0]
        return argv

    async def _run(self, *args: str, stdin: str | None = None,
                   env: dict[str, str] | None = None) -> tuple[int, str, str]:
        argv = self._argv(args)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise SlurmUnavailable(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None),
                self.command_timeout,
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SlurmUnavailable(f"{args[0]}: no answer in {self.command_timeout:g} s") from None
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            raise
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    def _run_sync(self, *args: str, stdin: str | None = None,
                  env: dict[str, str] | None = None) -> tuple[int, str, str]:
        argv = self._argv(args)
        try:
            done = subprocess.run(
                argv, input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True, text=True, errors="replace", env=env,
                timeout=self.command_timeout,
            )
        except OSError as exc:
            raise SlurmUnavailable(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(f"{args[0]}: no answer in {self.command_timeout:g} s") from None
        return done.returncode, done.stdout, done.stderr

    # -- start ----------------------------------------------------------------------------
    def sbatch_args(self, launch: Launch) -> list[str]:
        """The sbatch command line for an attempt (no secrets: the environment goes apart)."""
        opts = launch.options
        args = ["sbatch", "--parsable", f"--job-name={launch.fullname}",
                f"--output={launch.stdout}", f"--error={launch.stderr}", "--open-mode=append",
                f"--chdir={launch.cwd}", "--export=ALL"]
        partition = opts.get("partition") or self.partition
        account = opts.get("account") or self.account
        if partition:
            args.append(f"--partition={partition}")
        if account:
            args.append(f"--account={account}")
        if launch.min_devices > 0:
            args.append(f"--gres=gpu:{launch.min_devices}")
        if launch.time_limit is not None and launch.time_limit > 0:
            args.append(f"--time={max(1, math.ceil(launch.time_limit / 60))}")
        after = [j.strip() for j in opts.get("after_job_ids", "").split(",") if j.strip()]
        if after:
            args += [f"--dependency=afterok:{':'.join(after)}", "--kill-on-invalid-dep=yes"]
        extra = [*self.extra, *shlex.split(opts.get("extra", ""))]
        user_sets_memory = any(a.split("=")[0] in _MEM_FLAGS for a in extra)
        if (launch.memory_mib and launch.min_devices > 0 and self.tracks_memory
                and not user_sets_memory):
            args.append(f"--mem-per-gpu={launch.memory_mib}M")
        return args + extra

    def job_environment(self, launch: Launch) -> dict[str, str]:
        """sbatch's environment, which --export=ALL hands to the job."""
        env = {k: v for k, v in launch.env.items()
               if not (k in _DEVICE_VARS or k.startswith("SLURM_"))}
        for key in _CLIENT_VARS:
            if key in os.environ:
                env[key] = os.environ[key]
        if launch.min_devices == 0:
            env["CUDA_VISIBLE_DEVICES"] = ""  # as meow's local `-c 0`: no GPU
        return env

    @staticmethod
    def script(launch: Launch) -> str:
        return SCRIPT.format(exit_file=shlex.quote(launch.exit_file),
                             cwd=shlex.quote(launch.cwd), command=shlex.quote(launch.command))

    async def start_async(self, launch: Launch) -> Handle:
        """Submit the attempt without blocking the loop; raises StartError."""
        try:
            await self._ensure_config()
            result = await self._run(*self.sbatch_args(launch), stdin=self.script(launch),
                                     env=self.job_environment(launch))
        except SlurmUnavailable as exc:
            raise StartError(str(exc)) from None
        return self._submitted(launch, *result)

    def start(self, launch: Launch) -> Handle:
        """Submit the attempt; blocks up to command_timeout (prefer start_async on the loop)."""
        try:
            self._ensure_config_sync()
            result = self._run_sync(*self.sbatch_args(launch), stdin=self.script(launch),
                                    env=self.job_environment(launch))
        except SlurmUnavailable as exc:
            raise StartError(str(exc)) from None
        return self._submitted(launch, *result)

    def _submitted(self, launch: Launch, rc: int, out: str, err: str) -> Handle:
        if rc != 0:
            raise StartError(_last_line(err) or f"sbatch exited {rc}")
        job_id = _job_id(out)
        self._jobs[launch.task_id] = _Job(launch.task_id, job_id, launch.exit_file,
                                          state="PENDING")
        self._ended.pop(launch.task_id, None)
        log.info("task %d: slurm job %s submitted", launch.task_id, job_id)
        return Handle(job_id=job_id)

    # -- signal ---------------------------------------------------------------------------
    def signal(self, task_id: int, sig: int) -> bool:
        """SIGTERM: cancel the job (Slurm sends SIGTERM to all its processes, SIGKILL after
        KillWait; a pending job is just removed). SIGKILL: SIGKILL to every process of the job
        now, then cancel. Any other signal goes to the batch script and all its children and
        steps (`scancel --full --signal`). scancel runs in the background; False when the task
        is not watched here."""
        job = self._jobs.get(task_id)
        if job is None:
            return False
        if sig in (signals.SIGTERM, signals.SIGKILL):
            job.stop_requested = True
        task = asyncio.get_running_loop().create_task(self._send(job, sig))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return True

    async def _send(self, job: _Job, sig: int) -> None:
        if sig == signals.SIGKILL:
            calls = [("scancel", "--full", "--signal=KILL", job.job_id), ("scancel", job.job_id)]
        elif sig == signals.SIGTERM:
            calls = [("scancel", job.job_id)]
        else:
            calls = [("scancel", "--full", f"--signal={signals.Signals(sig).name[3:]}",
                      job.job_id)]
        for call in calls:
            try:
                rc, _, err = await self._run(*call)
            except SlurmUnavailable as exc:
                log.warning("task %d: %s failed (%s); retrying at the next poll",
                            job.task_id, " ".join(call), exc)
                job.unsent.append(sig)
                return
            if rc != 0:  # e.g. already ended, or a signal to a pending job
                log.info("task %d: %s: %s", job.task_id, " ".join(call), _last_line(err))

    # -- adopt ----------------------------------------------------------------------------
    def adopt(self, task_id: int, handle: Handle, exit_file: str) -> bool:
        """Watch a job submitted by an earlier daemon. True whenever the Handle has a job id:
        the next poll reports how it ended if it did (from Slurm, sacct, or its exit file),
        so a job that ended while no daemon watched still gets its exit code."""
        if not handle.job_id:
            return False
        self._jobs[task_id] = _Job(task_id, handle.job_id, exit_file)
        self._ended.pop(task_id, None)
        return True

    def is_watching(self, task_id: int) -> bool:
        return task_id in self._jobs

    def describe(self, task_id: int) -> dict[str, str]:
        job = self._jobs.get(task_id)
        if job is None:
            return dict(self._ended.get(task_id, {}))
        return self._describe(job)

    @staticmethod
    def _describe(job: _Job) -> dict[str, str]:
        facts = {"job_id": job.job_id, "partition": job.partition, "node": job.node,
                 "state": job.state}
        if job.reason:
            facts["reason"] = job.reason
        return {k: v for k, v in facts.items() if v}

    def detach_all(self) -> None:
        """Stop watching (daemon shutdown); the jobs keep running. A scancel already under
        way is left to finish."""
        self._jobs.clear()

    # -- follow ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Poll every poll_interval seconds until cancelled; errors are logged, never raised."""
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("slurm poll failed")
            await asyncio.sleep(self.poll_interval)

    async def poll(self) -> None:
        """One look at every watched job: one squeue call, plus one sacct call for the jobs
        slurmctld forgot when accounting exists. Reports ended jobs through on_exit."""
        if not self._jobs:
            return
        try:
            await self._ensure_config()
            for job in list(self._jobs.values()):
                unsent, job.unsent = job.unsent, []
                for sig in unsent:  # a failure queues it again, for the next poll
                    await self._send(job, sig)
            jobs = list(self._jobs.values())
            if not jobs:
                return
            rows = await self._squeue([job.job_id for job in jobs])
            forgotten = [job for job in jobs if job.job_id not in rows]
            if forgotten and self.has_accounting:
                rows.update(await self._sacct([job.job_id for job in forgotten]))
        except SlurmUnavailable as exc:
            if not self._unavailable:
                log.warning("slurm unavailable (%s): retrying every %g s", exc,
                            self.poll_interval)
            self._unavailable = True
            return
        if self._unavailable:
            log.info("slurm answers again")
            self._unavailable = False
        for job in jobs:
            if self._jobs.get(job.task_id) is not job:
                continue  # detached or ended meanwhile
            row = rows.get(job.job_id)
            if row is None:
                self._forgotten(job)
            else:
                self._seen(job, row)

    async def _squeue(self, job_ids: list[str]) -> dict[str, JobRow]:
        rc, out, err = await self._run(
            "squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}",
            "--Format=JobID:|,State:|,exit_code:|,NodeList:|,Partition:|,Reason:|",
        )
        if rc != 0:
            # With a single id squeue fails for a job it does not know (with several it
            # just leaves it out).
            if len(job_ids) == 1 and "Invalid job id" in err:
                return {}
            raise SlurmUnavailable(f"squeue: {_last_line(err) or f'exit {rc}'}")
        return parse_squeue(out)

    async def _sacct(self, job_ids: list[str]) -> dict[str, JobRow]:
        rc, out, err = await self._run(
            "sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={','.join(job_ids)}",
            "--format=JobID,State,ExitCode,NodeList,Partition,Reason",
        )
        if rc != 0:
            raise SlurmUnavailable(f"sacct: {_last_line(err) or f'exit {rc}'}")
        return parse_sacct(out)

    def _seen(self, job: _Job, row: JobRow) -> None:
        job.missing = 0
        job.state, job.reason = row.state, row.reason
        job.node = row.node or job.node
        job.partition = row.partition or job.partition
        if row.state in FINAL_STATES:
            self._finish(job, self._exit(job, row))
        elif row.state not in ACTIVE_STATES:
            log.warning("task %d: slurm job %s in unknown state %s; still watching",
                        job.task_id, job.job_id, row.state)

    def _exit(self, job: _Job, row: JobRow) -> Exit:
        reason = STATE_REASONS[row.state]
        if row.state == "CANCELLED" and job.stop_requested:
            reason = EndReason.KILLED
        code = read_exit_file(job.exit_file)
        # A job that never ran (cancelled while pending) has status 0: no exit code.
        if code is None and row.exit_code is not None and (
                row.state in ("COMPLETED", "FAILED") or row.exit_code != 0):
            code = row.exit_code
        if row.state == "FAILED" and not code:
            reason = EndReason.SPAWN  # Slurm could not launch it (output file, chdir...)
        detail = f"slurm job {job.job_id} {row.state}"
        if row.reason:
            detail += f" ({row.reason})"
        if row.node:
            detail += f" on {row.node}"
        return Exit(code, reason, detail)

    def _forgotten(self, job: _Job) -> None:
        """Neither squeue nor sacct knows the job: slurmctld purged it (MinJobAge) and there
        is no accounting. Seen twice in a row before it counts (a fresh submission may take a
        moment to show everywhere)."""
        job.missing += 1
        if job.missing < 2:
            return
        code = read_exit_file(job.exit_file)
        if code is not None:
            self._finish(job, Exit(code, None, f"slurm job {job.job_id}: forgotten by Slurm; "
                                               "status from its exit file"))
        else:
            self._finish(job, Exit(None, EndReason.LOST,
                                   f"slurm job {job.job_id}: unknown to Slurm, no exit file"))

    def _finish(self, job: _Job, exit: Exit) -> None:
        del self._jobs[job.task_id]
        self._ended[job.task_id] = self._describe(job)
        while len(self._ended) > 10_000:
            del self._ended[next(iter(self._ended))]
        log.info("task %d: %s, exit code %s", job.task_id, exit.detail, exit.exit_code)
        self._on_exit(job.task_id, exit)
