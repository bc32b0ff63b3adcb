import pytest

from meowd.core.errors import BadRequest
from meowd.core.units import format_mib, parse_memory_request, parse_size_mib, resolve_mib
from meowd.devices.fake import parse_fake_spec


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
    assert parse_fake_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "0x80GiB", "4x", "ax2", "4x80GiB,"])
def test_bad_fake_spec(spec):
    with pytest.raises(BadRequest):
        parse_fake_spec(spec)


def test_size_and_format():
    assert parse_size_mib("1TiB") == 1024 * 1024
    assert format_mib(20480) == "20GiB" and format_mib(20000) == "20000MiB"
    assert format_mib(0.25) == "25%"
