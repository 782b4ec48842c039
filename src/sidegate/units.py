"""Human units in the config: durations, sizes and ``host:port`` addresses, parsed one way.

Each parser takes what YAML (or an ``${ENV}`` substitution) produced and returns a plain number or
pair, or raises :class:`ValueError` with a message that shows the bad value and what would work.
The config model wraps them as pydantic types (:mod:`sidegate.config.fields`); a filter whose
config holds a duration as text (the rate limit's ``per``) parses it with the same function. So
this module sits below both ``config`` and ``filters``, imports nothing of Sidegate and knows
nothing about pydantic.

- Durations: a number is seconds; a string is one or more ``<number><unit>`` parts with units
  ``ms``, ``s``, ``m``, ``h``, ``d`` (``"500ms"``, ``"2s"``, ``"1.5m"``, ``"1h30m"``, ``"1d"``); a
  bare numeric string is seconds.
- Sizes: an integer is bytes; a string is ``<number><unit>`` with ``B``, decimal ``KB MB GB TB``
  (powers of 1000) or binary ``KiB MiB GiB TiB`` (powers of 1024), case-insensitive.
- Addresses: ``host:port`` where host is an IPv4 address, a hostname, or an IPv6 address in
  brackets (``[::1]:8080``). The host is returned without brackets, ready for ``socket``.
"""

from __future__ import annotations

import ipaddress
import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_HELP = 'write seconds as a number, or a string like "500ms", "2s", "1.5m", "1h"'

_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_HELP = 'write bytes as an integer, or a string like "100B", "512KB", "64KiB", "10MiB", "1GiB"'

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def parse_duration(value: object) -> float:
    """Seconds (>= 0) from a number or a string such as ``"500ms"``, ``"1.5m"`` or ``"1h30m"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}; {_DURATION_HELP}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration_from_text(value)
    else:
        raise ValueError(f"expected a duration, got {value!r}; {_DURATION_HELP}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def _duration_from_text(text: str) -> float:
    stripped = text.strip()
    try:
        return float(stripped)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for part in _DURATION_PART.finditer(stripped):
        if part.start() != pos:
            break
        total += float(part.group(1)) * _DURATION_UNITS[part.group(2).lower()]
        pos = part.end()
    if pos != len(stripped) or not stripped:
        raise ValueError(f"invalid duration {text!r}; {_DURATION_HELP}")
    return total


def parse_size(value: object) -> int:
    """Bytes (>= 0) from an integer or a string such as ``"64KiB"`` or ``"10MiB"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}; {_SIZE_HELP}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"a size in bytes must be a whole number, got {value!r}; {_SIZE_HELP}")
        size = int(value)
    elif isinstance(value, str):
        # Imported here: the serving process parses durations (a rate limit's window), never
        # sizes, and decimal would cost it memory for nothing.
        from decimal import Decimal

        match = _SIZE.fullmatch(value.strip())
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(f"invalid size {value!r}; {_SIZE_HELP}")
        exact = Decimal(match.group(1)) * _SIZE_UNITS[unit]
        if exact != exact.to_integral_value():
            raise ValueError(f"invalid size {value!r}: not a whole number of bytes; {_SIZE_HELP}")
        size = int(exact)
    else:
        raise ValueError(f"expected a size, got {value!r}; {_SIZE_HELP}")
    if size < 0:
        raise ValueError(f"a size must be >= 0 bytes, got {value!r}")
    return size


def parse_address(value: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """Split ``"host:port"`` into ``(host, port)``; an IPv6 host loses its brackets.

    ``allow_port_zero`` lets a listener ask the OS for a free port (useful in tests).
    """
    shape = 'expected "host:port", e.g. "127.0.0.1:8080", "[::1]:8080" or "app.local:3000"'
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"invalid address {value!r}: {shape}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"invalid address {value!r}: {shape}")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host!r} in {value!r}") from None
    elif ":" in host:
        raise ValueError(
            f'invalid address {value!r}: put an IPv6 host in brackets, e.g. "[{host}]:{port_text}"'
        )
    elif not is_hostname(host):
        raise ValueError(f"invalid host {host!r} in {value!r}: {shape}")
    if not port_text.isdigit():
        raise ValueError(f"invalid port {port_text!r} in {value!r}: {shape}")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port {port} in {value!r} is out of range ({low}-65535)")
    return host, port


def is_hostname(host: str) -> bool:
    """True for a DNS name or an IPv4 address (``*`` wildcards are not hostnames)."""
    if len(host) > 253:
        return False
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return all(_HOST_LABEL.fullmatch(label) for label in labels)
