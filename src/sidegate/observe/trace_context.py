"""W3C Trace Context (https://www.w3.org/TR/trace-context/): reading ``traceparent``, making ids,
and the parent-based sampling decision. Pure: no I/O, no clock.

A request either continues the caller's trace (a valid ``traceparent`` came in: same trace id,
the caller's span becomes our parent, its sampled flag decides ours) or starts one (a new trace
id, sampled with probability ``ratio``). Either way the app receives a ``traceparent`` that names
Sidegate's own span as its parent, so the app's spans hang under the gateway's.

Ids are lower-case hex ``bytes`` (32 digits for a trace, 16 for a span), ready to be written
into a header with no further formatting.
"""

from __future__ import annotations

import os
import random
from typing import Final

_HEX: Final = frozenset(b"0123456789abcdef")
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16
_rng: Final = random.Random(os.urandom(16))  # not the global one: an app of ours may seed that


class TraceContext:
    """The trace a request belongs to, as this hop sees it."""

    __slots__ = ("parent_span_id", "sampled", "span_id", "trace_id")

    def __init__(self, trace_id: bytes, span_id: bytes, parent_span_id: bytes, sampled: bool) -> None:
        self.trace_id = trace_id
        self.span_id = span_id  # Sidegate's span
        self.parent_span_id = parent_span_id  # the caller's span, b"" when the trace starts here
        self.sampled = sampled

    def header_line(self) -> bytes:
        """The ``traceparent`` line for the upstream request: our span is the app's parent."""
        tail = b"-01\r\n" if self.sampled else b"-00\r\n"
        return b"traceparent: 00-" + self.trace_id + b"-" + self.span_id + tail


def parse_traceparent(value: bytes) -> tuple[bytes, bytes, bool] | None:
    """``(trace id, parent span id, sampled)`` from a ``traceparent`` value, or None when it is
    not one we may continue (bad shape, non-hex or upper-case digits, all-zero ids, version ff).

    A version above 00 is read by its first four fields, as the spec asks of a version we do not
    know; version 00 must be exactly 55 characters.
    """
    value = value.strip(b" \t")
    if len(value) < 55 or value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version = value[:2]
    if version == b"ff" or not _is_hex(version) or (version == b"00" and len(value) != 55):
        return None
    if len(value) > 55 and value[55:56] != b"-":
        return None
    trace_id, span_id, flags = value[3:35], value[36:52], value[53:55]
    if not (_is_hex(trace_id) and _is_hex(span_id) and _is_hex(flags)):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def _is_hex(value: bytes) -> bool:
    return all(byte in _HEX for byte in value)


# Ids: this process's random prefix and a counter, unique and cheap. The proxy passes its own
# request id (16 hex digits: a random per-process prefix and a counter) when it made one, which
# then serves as the span id and the second half of a new trace id at no formatting cost.
_HEXPAIRS: Final = tuple(b"%02x" % i for i in range(256))
_TRACE_PREFIX: Final = b"%016x" % (_rng.getrandbits(64) or 1)
_SPAN_PREFIX: Final = b"%08x" % (_rng.getrandbits(32) or 1)
_count = 0


def _hex32(n: int) -> bytes:
    pairs = _HEXPAIRS
    return b"".join((pairs[(n >> 24) & 255], pairs[(n >> 16) & 255], pairs[(n >> 8) & 255], pairs[n & 255]))


def new_ids(unique: bytes = b"") -> tuple[bytes, bytes]:
    """A new trace id and a new span id; ``unique``, 16 hex digits never used before in this
    process (the proxy's own request id), saves making them."""
    if len(unique) == 16:
        return _TRACE_PREFIX + unique, unique
    global _count
    _count = n = _count + 1
    low = _hex32(n & 0xFFFFFFFF)
    return _TRACE_PREFIX + _hex32(n >> 32) + low, _SPAN_PREFIX + low


def new_span_id(unique: bytes = b"") -> bytes:
    """A new span id (in a trace that started elsewhere)."""
    return unique if len(unique) == 16 else new_ids()[1]


class Sampler:
    """Parent-based sampling: follow the caller's flag, else sample new traces at ``ratio``.

    ``follow_parent=False`` (the ``traceidratio`` sampler) ignores the caller's flag and samples
    every request at ``ratio``.
    """

    __slots__ = ("follow_parent", "ratio")

    def __init__(self, ratio: float, *, follow_parent: bool = True) -> None:
        self.ratio = ratio
        self.follow_parent = follow_parent

    def start(self, traceparent: bytes, unique: bytes = b"") -> TraceContext:
        """The trace context of a request that came with ``traceparent`` (b"" when none);
        ``unique``: see :func:`new_ids`."""
        parent = parse_traceparent(traceparent) if traceparent else None
        if parent is None:
            trace_id, span_id = new_ids(unique)
            return TraceContext(trace_id, span_id, b"", self._roll())
        trace_id, parent_span, sampled = parent
        if not self.follow_parent:
            sampled = self._roll()
        return TraceContext(trace_id, new_span_id(unique), parent_span, sampled)

    def _roll(self) -> bool:
        ratio = self.ratio
        return ratio >= 1.0 or (ratio > 0.0 and _rng.random() < ratio)


def sampler_from_env(ratio: float, environ: dict[str, str] | None = None) -> tuple[Sampler, str]:
    """The sampler the standard ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` variables
    ask for, else parent-based at the configured ``ratio``. Returns it and a problem to log ("" if
    none): an unknown sampler name or a bad argument falls back to the configured sampler."""
    env = os.environ if environ is None else environ
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    problem = ""
    if arg:
        try:
            value = float(arg)
            if not 0.0 <= value <= 1.0:
                raise ValueError
            ratio = value
        except ValueError:
            problem = f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a ratio between 0 and 1; using {ratio}"
    if name in ("", "parentbased_traceidratio"):
        return Sampler(ratio), problem
    if name == "parentbased_always_on":
        return Sampler(1.0), problem
    if name == "parentbased_always_off":
        return Sampler(0.0), problem
    if name == "always_on":
        return Sampler(1.0, follow_parent=False), problem
    if name == "always_off":
        return Sampler(0.0, follow_parent=False), problem
    if name == "traceidratio":
        return Sampler(ratio, follow_parent=False), problem
    known = "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, "
    known += "parentbased_traceidratio"
    return Sampler(ratio), f"OTEL_TRACES_SAMPLER={name!r} is not one of {known}; using parent-based {ratio}"
