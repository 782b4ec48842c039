"""W3C Trace Context (https://www.w3.org/TR/trace-context/): reading ``traceparent``, making ids,
and the parent-based sampling decision. Pure: no I/O, no clock.

A request either continues the caller's trace (a valid ``traceparent`` came in: same trace id,
the caller's span becomes our parent, its sampled flag decides ours) or starts one (a new trace
id, sampled with probability ``ratio``). Either way the app receives a ``traceparent`` that names
Sidegate's own span as its parent, so the app's spans hang under the gateway's.

Ids are lower-case hex ``bytes`` (32 digits for a trace, 16 for a span), ready to be written
into a header with no further formatting. Every new id is wholly random (128 and 64 bits from
``os.urandom``, never all zeros), as the spec asks: samplers and shards downstream read any of
its bits, the low ones first. They are cut from a batch of random bytes hexed at once (one
``os.urandom`` call per ~170 new traces), so a new id costs a slice; a forked child drops the
batch it inherited, so two processes never hand out the same ids.
"""

from __future__ import annotations

import binascii
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


_BATCH: Final = 4096  # random bytes per os.urandom call: 8,192 hex digits, ~170 new traces


class _RandomHex:
    """Random lower-case hex digits, cut from a batch made with one ``os.urandom`` call."""

    __slots__ = ("at", "digits")

    def __init__(self) -> None:
        self.digits = b""
        self.at = 0

    def take(self, count: int, zero: bytes) -> bytes:
        """``count`` random hex digits that are not ``zero`` (all zeros: not a valid id)."""
        while True:
            at = self.at
            end = at + count
            if end > len(self.digits):
                self.digits = binascii.hexlify(os.urandom(_BATCH))
                at, end = 0, count
            self.at = end
            value = self.digits[at:end]
            if value != zero:
                return value

    def forget(self) -> None:
        """In a forked child: the batch is the parent's too, and so would the ids be."""
        self.digits = b""
        self.at = 0


_HEX_DIGITS: Final = _RandomHex()


def _after_fork() -> None:
    _HEX_DIGITS.forget()
    _rng.seed(os.urandom(16))


os.register_at_fork(after_in_child=_after_fork)


def new_ids() -> tuple[bytes, bytes]:
    """A new trace id (128 random bits) and a new span id (64 random bits)."""
    digits = _HEX_DIGITS
    return digits.take(32, _ZERO_TRACE), digits.take(16, _ZERO_SPAN)


def new_span_id() -> bytes:
    """A new span id (64 random bits), in a trace that started elsewhere."""
    return _HEX_DIGITS.take(16, _ZERO_SPAN)


class Sampler:
    """Parent-based sampling: follow the caller's flag, else sample new traces at ``ratio``.

    ``follow_parent=False`` (the ``traceidratio`` sampler) ignores the caller's flag and samples
    every request at ``ratio``.
    """

    __slots__ = ("follow_parent", "ratio")

    def __init__(self, ratio: float, *, follow_parent: bool = True) -> None:
        self.ratio = ratio
        self.follow_parent = follow_parent

    def start(self, traceparent: bytes) -> TraceContext:
        """The trace context of a request that came with ``traceparent`` (b"" when none)."""
        parent = parse_traceparent(traceparent) if traceparent else None
        if parent is None:
            trace_id, span_id = new_ids()
            return TraceContext(trace_id, span_id, b"", self._roll())
        trace_id, parent_span, sampled = parent
        if not self.follow_parent:
            sampled = self._roll()
        return TraceContext(trace_id, new_span_id(), parent_span, sampled)

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
