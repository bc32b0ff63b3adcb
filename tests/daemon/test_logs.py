"""Per-attempt logs and `meow watch`."""

import subprocess
from pathlib import Path

from tests.conftest import BIN, MeowEnv
from tests.daemon.test_create import gate


def test_stdout_and_stderr_go_to_per_attempt_logs(meow_env: MeowEnv):
    meow_env.meow("create", "echo out; echo err >&2", "-n", "logs", "-c", "0")
    meow_env.wait_status("logs", "done")
    with meow_env.client() as c:
        attempt = c.show("logs")["attempt_list"][-1]
    assert Path(attempt["stdout"]).read_text() == "out\n"
    assert Path(attempt["stderr"]).read_text() == "err\n"


def test_watch_follows_until_the_task_ends(meow_env: MeowEnv, tmp_path: Path):
    cmd = f"echo first; {gate(tmp_path, 'go')}; echo second; echo problem >&2"
    meow_env.meow("create", cmd, "-n", "w", "-c", "0")
    meow_env.wait_status("w", "running")
    watcher = subprocess.Popen([str(BIN / "meow"), "watch", "w"], env=meow_env.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    errwatch = subprocess.Popen([str(BIN / "meow"), "watch", "w", "-s", "stderr"],
                                env=meow_env.env, stdout=subprocess.PIPE, text=True)
    (tmp_path / "go").touch()
    out, err = watcher.communicate(timeout=20)
    assert out == "first\nsecond\n"
    assert "w done" in err
    assert errwatch.communicate(timeout=20)[0] == "problem\n"


def test_watch_collapses_progress_bars(meow_env: MeowEnv):
    meow_env.meow("create", r"printf '10%%\r50%%\r100%%\ndone\n'", "-n", "bar", "-c", "0")
    meow_env.wait_status("bar", "done")
    assert meow_env.meow("watch", "bar").stdout == "100%\ndone\n"
