import pytest

from meowd.core.errors import BadRequest
from meowd.core.models import (
    TRANSITIONS,
    IllegalTransition,
    Task,
    TaskStatus,
    check_transition,
    validate_name,
)


def test_every_status_has_a_transition_entry():
    assert set(TRANSITIONS) == set(TaskStatus)


@pytest.mark.parametrize(("old", "new"), [
    ("waiting", "running"), ("running", "done"), ("running", "killed"), ("running", "lost"),
    ("cancelled", "waiting"), ("waiting", "cancelled"), ("running", "waiting"),
    # `meow retry`: the unsuccessful endings can run again
    ("killed", "waiting"), ("failed", "waiting"), ("lost", "waiting"), ("timeout", "waiting"),
    ("running", "timeout"),
])
def test_allowed(old, new):
    check_transition(TaskStatus(old), TaskStatus(new))


@pytest.mark.parametrize(("old", "new"), [
    ("done", "running"), ("waiting", "done"), ("lost", "running"),
    ("cancelled", "running"), ("done", "waiting"), ("timeout", "running"),
    ("waiting", "timeout"),
])
def test_refused(old, new):
    with pytest.raises(IllegalTransition):
        check_transition(TaskStatus(old), TaskStatus(new))


def test_task_transition_records_reason_and_wire_status_is_lowercase():
    task = Task(1, "a", "a", "true", "/", "h")
    task.transition(TaskStatus.RUNNING)
    task.transition(TaskStatus.FAILED, "exit code 2")
    wire = task.to_wire()
    assert wire["status"] == "failed" and wire["reason"] == "exit code 2"


@pytest.mark.parametrize("name", ["", "a b", "a/b", "..", "123", "backend", "x" * 129, "-"])
def test_bad_names(name):
    if name == "-":
        assert validate_name(name) == "-"
        return
    with pytest.raises(BadRequest):
        validate_name(name)


def test_log_filter_masks_registered_secrets():
    import logging

    from meowd.secrets import RedactingFilter, redact, secret_values

    env = {"MEOW_SECRET_KEYS": "TOKEN,SHORT", "TOKEN": "abcd-1234", "SHORT": "1"}
    assert secret_values(env) == {"abcd-1234"}  # too-short values would mask everything
    assert redact("x abcd-1234 y", {"abcd-1234"}) == "x *** y"
    record = logging.LogRecord("meowd", logging.INFO, __file__, 1, "cmd %s failed",
                               ("curl -H abcd-1234",), None)
    f = RedactingFilter()
    f.secrets.add("abcd-1234")
    assert f.filter(record) and record.getMessage() == "cmd curl -H *** failed"
