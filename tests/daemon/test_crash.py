"""Crash consistency: kill -9 the daemon at random moments, again and again, while 200
tasks are submitted and run. Every acknowledged task must be there exactly once, none
may run twice, none may be lost, and the database must pass PRAGMA integrity_check."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

from meowd.core.errors import MeowError
from meowd.core.protocol import CreateRequest, TaskSpec
from tests.conftest import MeowEnv, wait_for

TASKS = 200
KILLS = 20


def test_kill9_in_a_loop_loses_and_repeats_nothing(meow_env: MeowEnv, tmp_path: Path):
    ran = tmp_path / "ran.log"
    acked: set[str] = set()
    done_submitting = threading.Event()

    def submit() -> None:
        names = [f"t{i:03d}" for i in range(TASKS)]
        batches = [names[i:i + 5] for i in range(0, TASKS, 5)]
        for b, batch in enumerate(batches):
            specs = [TaskSpec(f"echo $MEOW_TASK_NAME >> {ran}; sleep 0.{random.randrange(10)}",
                              name=n, min_devices=0) for n in batch]
            # One id per batch, sent again after every failure: a daemon that died after
            # committing but before answering gives the first answer, never a conflict.
            request = CreateRequest(tuple(specs), str(tmp_path), {"PATH": "/usr/bin:/bin"},
                                    request_id=f"crash-batch-{b:04d}")
            while True:
                try:
                    with meow_env.client() as client:
                        created = client.call(request)
                    assert [t["fullname"] for t in created] == batch
                    acked.update(batch)
                    break
                except (MeowError, OSError):
                    time.sleep(0.05)  # daemon down: retry
        done_submitting.set()

    submitter = threading.Thread(target=submit)
    submitter.start()
    rng = random.Random(7)
    kills = 0
    while kills < KILLS or not done_submitting.is_set():
        time.sleep(rng.uniform(0.05, 0.4))
        meow_env.kill9()
        kills += 1
        meow_env.start()
    submitter.join()

    def settled() -> bool:
        tasks = meow_env.tasks()
        return len(tasks) == TASKS and all(t["status"] == "done" for t in tasks.values())

    wait_for(settled, 60, "every task to be done")
    tasks = meow_env.tasks()
    assert set(tasks) == acked == {f"t{i:03d}" for i in range(TASKS)}
    runs = Counter(ran.read_text().split())
    assert max(runs.values()) == 1, [n for n, c in runs.items() if c > 1]  # none ran twice
    assert set(runs) == acked  # and every one ran
    assert all(t["attempts"] == 1 for t in tasks.values())
    meow_env.stop()
    db = sqlite3.connect(meow_env.paths.database)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    print(f"\n{kills} kill -9s survived; {len(acked)} tasks, 0 lost, 0 run twice")
