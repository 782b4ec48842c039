"""Durations, sizes and addresses as a user writes them in the config."""

from __future__ import annotations

import pytest

from sidegate.units import parse_address, parse_duration, parse_size


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        (2, 2.0),
        (1.5, 1.5),
        (0, 0.0),
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("30", 30.0),
        (" 10s ", 10.0),
        ("2S", 2.0),
    ],
)
def test_durations(written: object, seconds: float) -> None:
    assert parse_duration(written) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "written", ["", "ten seconds", "5 parsecs", "2x", "s", "-1s", -1, True, [1], "1h-5m"]
)
def test_bad_durations_say_what_works(written: object) -> None:
    with pytest.raises(ValueError, match="duration") as info:
        parse_duration(written)
    assert repr(written) in str(info.value) or "duration" in str(info.value)


@pytest.mark.parametrize(
    ("written", "size"),
    [
        (0, 0),
        (4096, 4096),
        (1024.0, 1024),
        ("100B", 100),
        ("512KB", 512_000),
        ("64KiB", 65_536),
        ("10MiB", 10 * 1024 * 1024),
        ("1GiB", 1024**3),
        ("1.5KiB", 1536),
        ("64kib", 65_536),
        ("2048", 2048),
    ],
)
def test_sizes(written: object, size: int) -> None:
    assert parse_size(written) == size


@pytest.mark.parametrize("written", ["", "10 parsecs", "1.5", 1.5, "MiB", -1, False, "10Mb/s"])
def test_bad_sizes_say_what_works(written: object) -> None:
    with pytest.raises(ValueError, match="size") as info:
        parse_size(written)
    assert "64KiB" in str(info.value) or ">= 0" in str(info.value) or "whole" in str(info.value)


@pytest.mark.parametrize(
    ("written", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("0.0.0.0:80", "0.0.0.0", 80),
        ("[::1]:8080", "::1", 8080),
        ("app.default.svc.cluster.local:3000", "app.default.svc.cluster.local", 3000),
        ("localhost:1", "localhost", 1),
    ],
)
def test_addresses(written: str, host: str, port: int) -> None:
    assert parse_address(written) == (host, port)


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("127.0.0.1", "host:port"),
        (":8080", "host:port"),
        ("127.0.0.1:http", "invalid port"),
        ("127.0.0.1:70000", "out of range"),
        ("127.0.0.1:0", "out of range"),
        ("::1:8080", "brackets"),
        ("[nonsense]:80", "IPv6"),
        ("bad host:80", "invalid host"),
    ],
)
def test_bad_addresses(written: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_address(written)


def test_listeners_may_ask_for_any_free_port() -> None:
    assert parse_address("127.0.0.1:0", allow_port_zero=True) == ("127.0.0.1", 0)
