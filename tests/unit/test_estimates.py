"""Runtime estimates: sources, the raise on overrun, and what counts as a similar task."""

import pytest

from meowd.core.estimates import (
    FEW_RUNS_FACTOR,
    HISTORY_LENGTH,
    LIMIT_GRACE_S,
    Estimate,
    command_stem,
    current,
    estimate,
    expected_end,
    format_duration,
    from_history,
    from_keys,
    from_limit,
    history_keys,
    name_stem,
)


def test_a_time_limit_wins_over_history():
    assert estimate(3600, [10, 20, 30]) == Estimate(3600.0, "limit")
    assert estimate(None, [10, 20, 30]).source == "history"
    assert estimate(None, []) is None


def test_history_is_a_high_quantile_of_recent_runs():
    runs = [float(x) for x in range(10, 110, 10)]  # 10..100
    assert from_history(runs).seconds == pytest.approx(91.0)  # 0.9 quantile, interpolated
    assert from_history(runs, quantile=0.5).seconds == pytest.approx(55.0)
    # Only the most recent runs count: an old slow era is forgotten.
    old_then_new = [10_000.0] * 100 + [60.0] * HISTORY_LENGTH
    assert from_history(old_then_new).seconds == 60.0


def test_few_runs_give_a_padded_maximum():
    assert from_history([100.0]).seconds == 100.0 * FEW_RUNS_FACTOR
    assert from_history([50.0, 100.0]).seconds == 100.0 * FEW_RUNS_FACTOR
    assert from_history([]) is None


@pytest.mark.parametrize(("est", "elapsed", "expected"), [
    (Estimate(600, "history"), 0, 600),
    (Estimate(600, "history"), 599, 600),
    (Estimate(600, "history"), 600, 1200),  # outlived: a lower bound, doubled
    (Estimate(600, "history"), 900, 1800),
    (Estimate(10, "history"), 20, 80),  # ... and at least a minute more
    (Estimate(600, "limit"), 600, 600 + LIMIT_GRACE_S),  # a limit: it is being stopped
    (Estimate(600, "limit"), 610, 610 + LIMIT_GRACE_S),
])
def test_an_outlived_estimate_is_raised(est, elapsed, expected):
    assert current(est, elapsed) == expected


def test_expected_end_is_always_after_now_while_running():
    est = Estimate(100, "history")
    assert expected_end(1000.0, est, 1050.0) == 1100.0
    for now in (1100.0, 1100.0 + 1e-9, 1250.0, 5000.0):
        assert expected_end(1000.0, est, now) > now
    assert expected_end(1000.0, None, 1050.0) is None
    # Floating point: started + estimate == now exactly must not stall a simulator.
    started, seconds = 0.1, 0.2
    end = expected_end(started, Estimate(seconds, "history"), started + seconds)
    assert end > started + seconds


@pytest.mark.parametrize(("command", "stem"), [
    ("python train.py --lr 0.1", "python train.py"),
    ("CUDA_VISIBLE_DEVICES=0 python -m pkg.train --lr 0.1", "python -m pkg.train"),
    ("/opt/venv/bin/python3.11 -u train.py x=1 y=2", "python train.py"),
    ("./run.sh 3", "run.sh"),
    ("env A=1 nohup python train.py", "python train.py"),
    ("torchrun --nproc_per_node 4 train.py --epochs 3", "torchrun train.py"),
    ("accelerate launch --multi_gpu scripts/finetune.py", "accelerate launch finetune.py"),
    ("uv run python eval.py", "uv run python eval.py"),
    ("bash -c 'sleep 3'", "bash -c sleep 3"),
    ("sleep 30", "sleep"),
])
def test_command_stem_drops_arguments(command, stem):
    assert command_stem(command) == stem


@pytest.mark.parametrize(("name", "stem"), [
    ("sweep_12", "sweep"), ("train-lr0.1-seed3", "train"), ("eval_3a9f2c", "eval"),
    ("job.3", "job"), ("run_7", "run"), ("trial-seed=4", "trial"),
    ("resnet50", "resnet50"), ("bert-base", "bert-base"), ("seed", "seed"),
])
def test_name_stem_drops_what_tells_runs_apart(name, stem):
    assert name_stem(name) == stem


def test_history_keys_most_specific_first():
    keys = history_keys("python train.py --lr 3", "train_4", "sweep-2/a")
    assert keys == ("sweep/a/train\tpython train.py", "train\tpython train.py",
                    "\tpython train.py")
    # A random default name says nothing: the command alone.
    assert history_keys("python train.py", None, "g") == ("\tpython train.py",)
    # Runs of one sweep share keys.
    assert history_keys("python t.py --lr 1", "t_1") == history_keys("python t.py --lr 2", "t_2")


def test_describe_and_durations():
    assert from_limit(7800).describe() == "~2h10m (time limit)"
    assert Estimate(2100, "history").describe() == "~35m (history)"
    assert [format_duration(s) for s in (45, 3600, 3 * 86400 + 4 * 3600)] == ["45s", "1h", "3d4h"]


def test_the_most_specific_key_with_enough_runs_wins():
    store = {"g/train\tpython t.py": [100.0], "train\tpython t.py": [10.0, 20.0, 30.0],
             "\tpython t.py": [1.0] * 10}
    keys = history_keys("python t.py", "train_1", "g")
    assert from_keys(lambda k: store.get(k, []), keys).seconds == pytest.approx(28.0)
    # No key with enough runs: the most specific one with any.
    store["train\tpython t.py"] = [10.0]
    store["\tpython t.py"] = [1.0]
    assert from_keys(lambda k: store.get(k, []), keys).seconds == 100.0 * FEW_RUNS_FACTOR
    assert from_keys(lambda k: [], keys) is None
