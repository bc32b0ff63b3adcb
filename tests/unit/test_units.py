import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meowd.core import units
from meowd.core.errors import BadRequest
from meowd.core.settings import parse_fake_gpus
from meowd.core.units import format_mib, parse_memory_request, parse_size_mib, resolve_mib


@pytest.mark.parametrize(("text", "expected"), [
    ("20000", 20000), ("20GiB", 20480), ("0.5", 0.5), ("1.0", 1.0), ("1", 1), ("0", 0),
    (" 2g ", 2048), ("512MiB", 512),
])
def test_memory_requests(text, expected):
    value = parse_memory_request(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text", ["1.5", "0.0", "-3", "lots", "1.5MiB", ""])
def test_bad_memory_requests(text):
    with pytest.raises(BadRequest):
        parse_memory_request(text)


def test_ratio_resolves_against_each_device():
    assert resolve_mib(0.5, 81920) == 40960
    assert resolve_mib(0.5, 24576) == 12288
    assert resolve_mib(1000, 24576) == 1000


@pytest.mark.parametrize(("spec", "expected"), [
    ("4x80GiB", [81920] * 4), ("2x24GiB,1x12GiB", [24576, 24576, 12288]),
    ("1x16000", [16000]), ("80GiB", [81920]),
])
def test_fake_spec(spec, expected):
    assert parse_fake_gpus(spec) == expected


@pytest.mark.parametrize("spec", ["", "0x80GiB", "4x", "ax2", "4x80GiB,"])
def test_bad_fake_spec(spec):
    with pytest.raises(BadRequest):
        parse_fake_gpus(spec)


def test_size_and_format():
    assert parse_size_mib("1TiB") == 1024 * 1024
    assert format_mib(20480) == "20GiB" and format_mib(20000) == "20000MiB"
    assert format_mib(0.25) == "25%"


SPELLING = st.text(st.sampled_from("0123456789. \t\x1cmMiIbBgGtTwWdDhHsSxK\u017f\u0131\u0660"),
                   max_size=12)


def _by_regex(parse, text: str) -> object:
    """What `parse` answers when its ASCII shortcut steps aside for every input."""
    from unittest import mock

    with mock.patch.object(units, "_ascii_terms", lambda text: None):
        try:
            return parse(text)
        except BadRequest as exc:
            return exc.message


@settings(max_examples=2000)
@given(SPELLING)
def test_the_ascii_shortcut_reads_sizes_and_durations_as_the_expressions_do(text: str):
    for parse in (units.parse_size_mib, units.parse_duration):
        try:
            got: object = parse(text)
        except BadRequest as exc:
            got = exc.message
        assert got == _by_regex(parse, text), (parse.__name__, text)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("1d2h", 93600), ("1w", 604800),
    (" 1h 30m ", 5400), ("1.5h", 5400), ("90", 90), ("2H", 7200)])
def test_durations(text: str, seconds: float):
    assert units.parse_duration(text) == seconds
