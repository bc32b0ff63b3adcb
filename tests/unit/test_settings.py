"""meowd.core.settings: checks of one value, checks against the machine, and the config
file as text. Pure: no daemon, no files."""

from __future__ import annotations

import pytest

from meowd.core.errors import BadRequest
from meowd.core.settings import (
    SETTING_HELP,
    SETTING_NAMES,
    Settings,
    check_setting,
    check_setting_on_machine,
    config_with,
    parse_config,
    parse_fake_gpus,
    parse_setting_value,
    settings_from,
)


def test_every_setting_is_documented():
    assert tuple(SETTING_HELP) == SETTING_NAMES


@pytest.mark.parametrize(("key", "text", "value"), [
    ("max_attempts", "3", 3),
    ("cpu_slots", "0", 0),
    ("poll_interval", "2", 2.0),
    ("starvation_guard", "false", False),
    ("placement", "pack", "pack"),
    ("visible_devices", "[1, 0, 1]", [0, 1]),
    ("visible_devices", "all", None),
    ("fake_gpus", "2x24GiB,1x12GiB", "2x24GiB,1x12GiB"),
    ("fake_gpus", "none", None),
    ("fake_gpus", "off", None),
])
def test_good_values(key, text, value):
    assert check_setting(key, parse_setting_value(text)) == value


@pytest.mark.parametrize(("key", "text", "message"), [
    ("max_attempts", "-3", "max_attempts must be a whole number >= 0"),
    ("max_attempts", "1.5", "max_attempts must be a whole number >= 0"),
    ("cpu_slots", "true", "cpu_slots must be a whole number >= 0"),
    ("poll_interval", "0", "poll_interval must be a number >= 0.05"),
    ("kill_grace", "inf", "kill_grace must be a number >= 0"),
    ("head_of_line", "yes", "head_of_line must be true or false"),
    ("placement", "fast", "placement must be one of: spread, pack, first"),
    ("visible_devices", "[-1]", "visible_devices must be a list of GPU indices"),
    ("visible_devices", "0,1", "visible_devices must be a list of GPU indices"),
    ("fake_gpus", "banana", "bad fake GPUs 'banana'"),
    ("fake_gpus", "0x24GiB", "bad fake GPUs '0x24GiB': count and size must be positive"),
    ("fake_gpus", "3", "bad fake GPUs 3: use e.g. 4x80GiB"),  # TOML reads a number
    ("colour", "red", "unknown setting 'colour'"),
])
def test_bad_values(key, text, message):
    with pytest.raises(BadRequest) as exc:
        check_setting(key, parse_setting_value(text))
    assert exc.value.message.startswith(message)


def test_fake_gpu_specs():
    assert parse_fake_gpus("4x80GiB") == [81920] * 4
    assert parse_fake_gpus("2x24GiB, 1x12000") == [24576, 24576, 12000]
    with pytest.raises(BadRequest, match="at most 4096"):
        parse_fake_gpus("5000x1GiB")
    with pytest.raises(BadRequest, match="at most 4096"):  # refused before it is built
        parse_fake_gpus("4000x1GiB,1000000000000x1GiB")


@pytest.mark.parametrize(("key", "value", "gpus", "outcome"), [
    ("visible_devices", [0, 1], [0, 1, 2, 3], None),
    ("visible_devices", [7], [0, 1, 2, 3],
     BadRequest("visible_devices: no GPU 7 here (meowd sees 4 GPU(s): 0-3)")),
    ("visible_devices", [1, 5, 6], [0, 1],
     BadRequest("visible_devices: no GPU 5, 6 here (meowd sees 2 GPU(s): 0, 1)")),
    ("visible_devices", [7], None, None),  # GPUs unknown (no daemon, NVML): nothing to say
    ("visible_devices", None, [0], None),
    ("visible_devices", [], [0, 1],
     "visible_devices = []: meow may use no GPU, so no GPU task will start"),
    ("visible_devices", [0], [],
     "no GPUs are visible to meow here: visible_devices applies once meowd sees GPUs"),
    ("cpu_slots", 0, [0], "cpu_slots = 0: tasks without GPUs (-c 0) will wait until "
                          "cpu_slots is raised"),
    ("cpu_slots", 4, [0], None),
    ("max_attempts", 0, None,
     "max_attempts = 0: exit code 100 (exit_and_retry) fails the task instead"),
    ("placement", "pack", [], None),
])
def test_checks_against_the_machine(key, value, gpus, outcome):
    if isinstance(outcome, BadRequest):
        with pytest.raises(BadRequest) as exc:
            check_setting_on_machine(key, value, gpus)
        assert exc.value.message == outcome.message
    else:
        assert check_setting_on_machine(key, value, gpus) == outcome


def test_config_text_round_trip():
    text = config_with("", "visible_devices", [0, 1])
    text = config_with(text, "fake_gpus", "4x24GiB")
    text = config_with(text, "placement", "pack")
    assert text == 'fake_gpus = "4x24GiB"\nplacement = "pack"\nvisible_devices = [0, 1]\n'
    text = config_with(text, "fake_gpus", None)
    config = parse_config(text, "cfg")
    assert config == {"placement": "pack", "visible_devices": [0, 1]}
    settings = settings_from(config, {"MEOW_FAKE_GPUS": "1x1GiB"})
    assert (settings.placement, settings.visible_devices, settings.fake_gpus) == (
        "pack", [0, 1], "1x1GiB")
    assert settings_from({}, {}) == Settings()


def test_a_bad_config_names_its_file():
    with pytest.raises(BadRequest, match=r"^cfg\.toml: max_attempts must be"):
        parse_config("max_attempts = -1\n", "cfg.toml")
    with pytest.raises(BadRequest, match=r"^cannot read config cfg\.toml"):
        parse_config("max_attempts = \n", "cfg.toml")
