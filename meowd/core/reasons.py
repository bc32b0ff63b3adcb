"""Why an attempt ended: one typed reason per ending, shown in `meow show` and `--json`."""

from __future__ import annotations

from enum import StrEnum


class EndReason(StrEnum):
    EXIT = "exit"  # the command exited by itself (code 0 or not)
    OOM = "oom"  # GPU out of memory (CUDA/PyTorch/JAX/TF message, or NVML peak at the total)
    HOST_OOM = "host_oom"  # the kernel's (or the cgroup's) OOM killer
    TIMEOUT = "timeout"  # its time limit ran out (or it exited with GRACEFUL_TIMEOUT_EXIT)
    KILLED = "killed"  # `meow kill`
    CANCELLED = "cancelled"  # `meow cancel` while it ran
    REMOVED = "removed"  # `meow remove` while it ran
    ENFORCED = "enforced"  # stopped for using more GPU memory than it asked (--enforce-memory)
    DEPENDENCY = "dependency"  # never ran: a predecessor failed (cascade)
    LOST = "lost"  # its process vanished while no daemon watched; no exit code
    SPAWN = "spawn"  # could not be started at all
    NODE_FAIL = "node_fail"  # the node it ran on failed (Slurm)
    REQUEUE = "requeue"  # it asked to be run again (exit code 100, `exit_and_retry()`)
