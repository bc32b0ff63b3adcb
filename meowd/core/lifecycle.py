"""How an attempt ends and what follows, as pure decisions (no I/O, no clock).

Why an attempt was stopped (`StopIntent`, set by the controller before it signals) and
how it ended (exit code, the executor's own reason, what its stderr and peaks said) give
one `Outcome`: the task's next status, the typed reason, the words the user reads, and
whether the task is queued again (and with how much memory). Every rule lives in
`decide`, so a new executor or a new kind of ending is one more row, not a new branch
in the controller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from meowd.core.models import RETRY_EXIT_CODE, TaskStatus
from meowd.core.reasons import EndReason

GRACEFUL_TIMEOUT_EXIT = 124
"""Exit code of a task that caught its time-limit SIGTERM and stopped cleanly
(`cattino.GracefulTimeout`, as GNU timeout's 124): recorded as timed out, not failed."""


class StopIntent(StrEnum):
    """Why meowd is stopping a running attempt."""

    KILL = "kill"
    CANCEL = "cancel"
    REMOVE = "remove"
    ENFORCE = "enforce"
    TIMEOUT = "timeout"


_INTENT: dict[StopIntent, tuple[TaskStatus, EndReason, str]] = {
    StopIntent.KILL: (TaskStatus.KILLED, EndReason.KILLED, "killed by the user"),
    StopIntent.CANCEL: (TaskStatus.CANCELLED, EndReason.CANCELLED, "cancelled while running"),
    StopIntent.REMOVE: (TaskStatus.KILLED, EndReason.REMOVED, "removed while running"),
    StopIntent.ENFORCE: (TaskStatus.FAILED, EndReason.ENFORCED, "over its GPU memory"),
    StopIntent.TIMEOUT: (TaskStatus.TIMEOUT, EndReason.TIMEOUT, "time limit reached"),
}

# The messages CUDA and the frameworks print when a GPU allocation fails.
GPU_OOM = re.compile(
    r"CUDA out of memory|torch\.(?:cuda\.)?OutOfMemoryError|RESOURCE_EXHAUSTED"
    r"|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation|out of memory on device"
    r"|ResourceExhaustedError"
)
"""Not a bare `OutOfMemoryError`: Java's (java.lang.OutOfMemoryError) is host memory."""


@dataclass(frozen=True)
class Ending:
    """What is known about how an attempt ended."""

    exit_code: int | None
    intent: StopIntent | None = None
    executor_reason: EndReason | None = None
    """The executor's word (Slurm TIMEOUT, NODE_FAIL, OUT_OF_MEMORY...)."""
    gpu_oom: bool = False
    host_oom: bool = False
    note: str | None = None
    """A line the task left (its hook runner), shown as the reason or warning."""


@dataclass(frozen=True)
class Rules:
    """The task's own retry rules, with the settings already folded in."""

    attempts: int
    """Attempts made so far, this one included."""
    max_retries: int = 0
    """Failed attempts run again at most this many times."""
    max_attempts: int = 3
    """Cap on exit-code-100 requeues (Cattino's `exit_and_retry`)."""
    resumable: bool = False
    """Requeued on timeout (its run directory kept), within `max_retries` or 3."""
    retries_used: int = 0
    """Automatic retries already spent (exit-100 requeues do not count)."""


@dataclass(frozen=True)
class Outcome:
    status: TaskStatus
    reason: EndReason
    text: str | None
    """What the user reads (None for a clean success)."""
    retry: bool = False
    """Queue the task again as a new attempt; `status` is then WAITING."""
    scale_memory: bool = False
    """The retry needs more GPU memory (it ran out)."""


RESUMABLE_DEFAULT_RETRIES = 3


def decide(ending: Ending, rules: Rules) -> Outcome:
    """The one table: intent x exit status x reason -> outcome."""
    code = ending.exit_code
    if ending.intent is not None and ending.intent is not StopIntent.TIMEOUT:
        status, reason, text = _INTENT[ending.intent]
        return Outcome(status, reason, ending.note if ending.intent is StopIntent.ENFORCE
                       and ending.note else text)
    timed_out = (ending.intent is StopIntent.TIMEOUT
                 or ending.executor_reason is EndReason.TIMEOUT
                 or code == GRACEFUL_TIMEOUT_EXIT)
    if code == 0 and not timed_out:
        return Outcome(TaskStatus.DONE, EndReason.EXIT, None)
    if code == RETRY_EXIT_CODE and not timed_out and ending.executor_reason is None:
        if rules.attempts < rules.max_attempts:
            return Outcome(TaskStatus.WAITING, EndReason.REQUEUE,
                           f"requeued: exit code {RETRY_EXIT_CODE} (attempt {rules.attempts} "
                           f"of at most {rules.max_attempts})", retry=True)
        return Outcome(TaskStatus.FAILED, EndReason.REQUEUE,
                       f"exit code {RETRY_EXIT_CODE} again after {rules.attempts} attempts "
                       "(max_attempts); not requeued")
    retries_left = rules.max_retries - rules.retries_used
    if timed_out:
        allowed = (max(rules.max_retries, RESUMABLE_DEFAULT_RETRIES) - rules.retries_used
                   if rules.resumable else 0)
        if allowed > 0:
            return Outcome(TaskStatus.WAITING, EndReason.TIMEOUT,
                           _retry_text("time limit reached; resumed", rules,
                                       max(rules.max_retries, RESUMABLE_DEFAULT_RETRIES)),
                           retry=True)
        return Outcome(TaskStatus.TIMEOUT, EndReason.TIMEOUT, "time limit reached")
    reason, text = _failure(ending)
    if reason is EndReason.LOST:
        return Outcome(TaskStatus.LOST, reason, text)
    if retries_left > 0:
        return Outcome(TaskStatus.WAITING, reason, _retry_text(text, rules, rules.max_retries),
                       retry=True,
                       scale_memory=reason is EndReason.OOM)
    return Outcome(TaskStatus.FAILED, reason, text)


def _failure(ending: Ending) -> tuple[EndReason, str]:
    code = ending.exit_code
    suffix = "" if code is None else f" (exit code {code})"
    if ending.executor_reason is EndReason.NODE_FAIL:
        return EndReason.NODE_FAIL, "its node failed" + suffix
    if ending.gpu_oom:
        return EndReason.OOM, "GPU out of memory" + suffix
    if ending.host_oom or ending.executor_reason is EndReason.HOST_OOM:
        return EndReason.HOST_OOM, "killed by the out-of-memory killer (host memory)" + suffix
    if ending.executor_reason is EndReason.CANCELLED:
        return EndReason.CANCELLED, "cancelled outside meow" + suffix
    if code is None:
        return EndReason.LOST, ending.note or "it vanished and left no exit code"
    if ending.note:
        return EndReason.EXIT, f"{ending.note}{suffix}"
    return EndReason.EXIT, f"exit code {code}"


def _retry_text(text: str, rules: Rules, allowed: int) -> str:
    return f"{text}; retry {rules.retries_used + 1} of {allowed}"


def scaled_memory(request: int | float, factor: float, largest_mib: int) -> int | float:
    """The next attempt's memory after a GPU OOM: MiB or a ratio, clamped to the largest
    GPU (a ratio to 1.0). A request of 0 (nothing reserved) becomes a quarter GPU."""
    if isinstance(request, float):
        return min(1.0, max(request * factor, 0.01))
    if request <= 0:
        return max(1, largest_mib // 4)
    return min(largest_mib, max(request + 1, int(request * factor)))


def stderr_says_gpu_oom(tail: str) -> bool:
    return GPU_OOM.search(tail) is not None
