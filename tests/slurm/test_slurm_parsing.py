"""What the Slurm executor reads from Slurm's output and what it hands sbatch: pure, no
cluster needed (the real-Slurm tests are in test_slurm_executor.py)."""

from __future__ import annotations

import pytest

from meowd.core.reasons import EndReason
from meowd.executors.base import Launch
from meowd.executors.slurm import (
    STATE_REASONS,
    JobRow,
    SlurmExecutor,
    exit_from_pair,
    exit_from_status,
    parse_config,
    parse_sacct,
    parse_squeue,
)


@pytest.mark.parametrize(("raw", "code"), [(0, 0), (768, 3), (35072, 137), (9, 137), (15, 143)])
def test_squeue_exit_status(raw: int, code: int) -> None:
    assert exit_from_status(raw) == code


@pytest.mark.parametrize(("pair", "code"), [("0:0", 0), ("3:0", 3), ("0:15", 143),
                                            ("0:9", 137), ("", None), ("x:y", None)])
def test_sacct_exit_code(pair: str, code: int | None) -> None:
    assert exit_from_pair(pair) == code


def test_parse_squeue() -> None:
    # Slurm 22.05's output for --Format=JobID:|,State:|,exit_code:|,NodeList:|,Partition:|,Reason:|
    out = ("4|COMPLETED|0|vm|debug|None|\n1|FAILED|768|vm|debug|NonZeroExitCode|\n"
           "3|PENDING|0||debug|DependencyNeverSatisfied|\n")
    assert parse_squeue(out) == {
        "4": JobRow("4", "COMPLETED", 0, "vm", "debug", ""),
        "1": JobRow("1", "FAILED", 3, "vm", "debug", "NonZeroExitCode"),
        "3": JobRow("3", "PENDING", 0, "", "debug", "DependencyNeverSatisfied"),
    }


def test_parse_sacct_last_row_wins_and_by_user_dropped() -> None:
    out = ("12|NODE_FAIL|0:0|n1|gpu|None\n12|CANCELLED by 1000|0:15|n2|gpu|None\n"
           "13|TIMEOUT|0:0|None assigned|gpu|TimeLimit\n")
    rows = parse_sacct(out)
    assert rows["12"] == JobRow("12", "CANCELLED", 143, "n2", "gpu", "")
    assert rows["13"] == JobRow("13", "TIMEOUT", 0, "", "gpu", "TimeLimit")


def test_state_reasons() -> None:
    assert STATE_REASONS["TIMEOUT"] == EndReason.TIMEOUT
    assert STATE_REASONS["OUT_OF_MEMORY"] == EndReason.HOST_OOM
    assert STATE_REASONS["NODE_FAIL"] == EndReason.NODE_FAIL
    assert STATE_REASONS["CANCELLED"] == EndReason.CANCELLED
    assert STATE_REASONS["COMPLETED"] is None and STATE_REASONS["FAILED"] is None


def _launch(**kw: object) -> Launch:
    defaults: dict[str, object] = dict(
        task_id=1, attempt=1, fullname="sweep/lr-0.1", command="python train.py", cwd="/w",
        env={"HOME": "/root", "TOKEN": "secret", "CUDA_VISIBLE_DEVICES": "0",
             "SLURM_JOB_ID": "5", "SLURM_CONF": "/user/slurm.conf", "SBATCH_ACCOUNT": "lab"},
        stdout="/l/1.out", stderr="/l/1.err", exit_file="/l/1.exit")
    return Launch(**{**defaults, **kw})  # type: ignore[arg-type]


def _executor(select: str = "CR_Core_Memory", **kw: object) -> SlurmExecutor:
    executor = SlurmExecutor(lambda *_: None, **kw)  # type: ignore[arg-type]
    executor.config = parse_config(f"SelectTypeParameters    = {select}\n"
                                   "AccountingStorageType   = accounting_storage/none\n")
    return executor


def test_sbatch_arguments() -> None:
    args = _executor(partition="gpu", account="lab", extra=["--qos=normal"]).sbatch_args(
        _launch(min_devices=2, memory_mib=20000, time_limit=90))
    assert args == [
        "sbatch", "--parsable", "--job-name=sweep/lr-0.1", "--output=/l/1.out",
        "--error=/l/1.err", "--open-mode=append", "--chdir=/w", "--export=ALL",
        "--partition=gpu", "--account=lab", "--gres=gpu:2", "--time=2",
        "--mem-per-gpu=20000M", "--qos=normal"]
    assert not any("secret" in a for a in args)


def test_sbatch_arguments_follow_the_cluster_and_the_task() -> None:
    tracked = _executor(partition="gpu")
    untracked = _executor("CR_Core")
    launch = _launch(min_devices=1, memory_mib=1000, time_limit=1, options={
        "partition": "short", "extra": "--mem=4G --constraint='a100|h100'",
        "after_job_ids": "7, 8"})
    args = tracked.sbatch_args(launch)
    assert "--partition=short" in args and "--partition=gpu" not in args
    assert "--time=1" in args  # at least a minute
    assert args[-2:] == ["--mem=4G", "--constraint=a100|h100"]
    assert not any(a.startswith("--mem-per-gpu") for a in args)  # the user's --mem wins
    assert "--dependency=afterok:7:8" in args and "--kill-on-invalid-dep=yes" in args
    assert not any(a.startswith("--mem-per-gpu") for a in untracked.sbatch_args(
        _launch(min_devices=1, memory_mib=1000)))
    no_gpu = tracked.sbatch_args(_launch(min_devices=0, memory_mib=1000))
    assert not any(a.startswith(("--gres", "--mem", "--time")) for a in no_gpu)


def test_job_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", "/daemon/slurm.conf")
    env = _executor().job_environment(_launch(min_devices=1))
    assert env == {"HOME": "/root", "TOKEN": "secret", "SBATCH_ACCOUNT": "lab",
                   "SLURM_CONF": "/daemon/slurm.conf"}
    monkeypatch.delenv("SLURM_CONF")
    env = _executor().job_environment(_launch(min_devices=0))
    assert env["CUDA_VISIBLE_DEVICES"] == "" and "SLURM_CONF" not in env


def test_script_quotes_everything() -> None:
    script = SlurmExecutor.script(_launch(command="echo 'it''s' \"$HOME\"; #SBATCH --x",
                                          cwd="/dir with space", exit_file="/l/a b.exit"))
    lines = script.splitlines()
    assert lines[1].startswith("trap ")  # ends sbatch's #SBATCH scanning before the command
    assert "cd -- '/dir with space' || exit 127" in lines
    assert "echo \"$rc\" > '/l/a b.exit'" in lines
