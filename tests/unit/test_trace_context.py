"""W3C trace context: what is continued, what starts a new trace, new ids, and the OTEL_* sampler settings."""

from __future__ import annotations

import itertools
import multiprocessing
import re
from multiprocessing.connection import Connection

import pytest

from sidegate.observe.trace_context import Sampler, TraceContext, parse_traceparent, sampler_from_env

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = b"00f067aa0ba902b7"


def test_a_valid_traceparent_is_continued_with_its_sampled_flag() -> None:
    assert parse_traceparent(b"00-" + TRACE + b"-" + SPAN + b"-01") == (TRACE, SPAN, True)
    assert parse_traceparent(b"00-" + TRACE + b"-" + SPAN + b"-00") == (TRACE, SPAN, False)
    assert parse_traceparent(b" 00-" + TRACE + b"-" + SPAN + b"-03 ") == (TRACE, SPAN, True)


def test_a_later_version_is_read_by_its_first_four_fields() -> None:
    assert parse_traceparent(b"01-" + TRACE + b"-" + SPAN + b"-01-extra") == (TRACE, SPAN, True)
    assert parse_traceparent(b"01-" + TRACE + b"-" + SPAN + b"-01") == (TRACE, SPAN, True)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"00-" + TRACE + b"-" + SPAN,  # no flags
        b"00-" + TRACE + b"-" + SPAN + b"-01-extra",  # version 00 has exactly four fields
        b"01-" + TRACE + b"-" + SPAN + b"-01x",  # a later version: a dash after the flags
        b"ff-" + TRACE + b"-" + SPAN + b"-01",  # version ff is forbidden
        b"00-" + TRACE.upper() + b"-" + SPAN + b"-01",  # upper-case hex
        b"00-" + b"0" * 32 + b"-" + SPAN + b"-01",  # all-zero trace id
        b"00-" + TRACE + b"-" + b"0" * 16 + b"-01",  # all-zero span id
        b"00_" + TRACE + b"_" + SPAN + b"_01",
        b"00-" + TRACE + b"-" + SPAN + b"-0g",
        b"00-" + TRACE + b"-" + SPAN + b"-01, 00-" + TRACE + b"-" + SPAN + b"-01",  # sent twice
    ],
)
def test_an_invalid_traceparent_is_not_continued(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_the_sampler_follows_the_parent_and_rolls_for_new_traces() -> None:
    parent = b"00-" + TRACE + b"-" + SPAN + b"-01"
    ctx = Sampler(0.0).start(parent)
    assert (ctx.trace_id, ctx.parent_span_id, ctx.sampled) == (TRACE, SPAN, True)
    assert ctx.span_id != SPAN and re.fullmatch(rb"[0-9a-f]{16}", ctx.span_id)
    assert ctx.header_line() == b"traceparent: 00-" + TRACE + b"-" + ctx.span_id + b"-01\r\n"
    new = Sampler(1.0).start(b"")
    assert new.sampled and new.parent_span_id == b"" and re.fullmatch(rb"[0-9a-f]{32}", new.trace_id)
    assert not Sampler(0.0).start(b"garbage").sampled
    share = sum(Sampler(0.25).start(b"").sampled for _ in range(4000)) / 4000
    assert 0.2 < share < 0.3
    assert len({Sampler(1.0).start(b"").trace_id for _ in range(1000)}) == 1000


def test_the_otel_sampler_variables_override_the_config() -> None:
    parent = b"00-" + TRACE + b"-" + SPAN + b"-00"
    sampler, problem = sampler_from_env(0.5, {"OTEL_TRACES_SAMPLER": "always_on"})
    assert problem == "" and sampler.start(parent).sampled  # ignores the caller's "not sampled"
    sampler, _ = sampler_from_env(0.5, {"OTEL_TRACES_SAMPLER": "parentbased_always_on"})
    assert not sampler.start(parent).sampled and sampler.start(b"").sampled
    sampler, _ = sampler_from_env(0.5, {"OTEL_TRACES_SAMPLER_ARG": "0"})
    assert sampler.ratio == 0.0
    sampler, problem = sampler_from_env(0.5, {"OTEL_TRACES_SAMPLER_ARG": "2"})
    assert sampler.ratio == 0.5 and "between 0 and 1" in problem
    sampler, problem = sampler_from_env(0.5, {"OTEL_TRACES_SAMPLER": "jaeger_remote"})
    assert sampler.ratio == 0.5 and "jaeger_remote" in problem and "parentbased_traceidratio" in problem


# -- new ids: wholly random --------------------------------------------------------------------

COUNT = 10_000


def new_traces(count: int = COUNT) -> list[TraceContext]:
    sampler = Sampler(0.0)
    return [sampler.start(b"") for _ in range(count)]


def ones_per_bit(values: list[int], bits: int) -> list[int]:
    return [sum((value >> bit) & 1 for value in values) for bit in range(bits)]


def test_new_trace_and_span_ids_are_w3c_ids_never_seen_twice() -> None:
    traces = new_traces()
    assert all(re.fullmatch(rb"[0-9a-f]{32}", t.trace_id) and t.trace_id != b"0" * 32 for t in traces)
    assert all(re.fullmatch(rb"[0-9a-f]{16}", t.span_id) and t.span_id != b"0" * 16 for t in traces)
    assert len({t.trace_id for t in traces}) == COUNT
    assert len({t.span_id for t in traces}) == COUNT
    continued = [Sampler(0.0).start(b"00-" + TRACE + b"-" + SPAN + b"-01").span_id for _ in range(1000)]
    assert len(set(continued)) == 1000


def test_no_half_of_a_new_trace_id_is_a_constant_or_a_counter() -> None:
    traces = new_traces()
    highs = [int(t.trace_id[:16], 16) for t in traces]
    lows = [int(t.trace_id[16:], 16) for t in traces]
    spans = [int(t.span_id, 16) for t in traces]
    # Samplers downstream read the low bits: no fixed prefix in either half, no counter in either.
    for values in (highs, lows, spans):
        assert len(set(values)) == COUNT
        assert len({value >> 32 for value in values}) > COUNT * 0.99  # no per-process prefix
        steps = [abs(b - a) for a, b in itertools.pairwise(values)]
        assert min(steps) > 1 << 32  # a counter moves by 1; random 64-bit values, by ~2^62
    assert all(t.span_id not in t.trace_id for t in traces)


def test_every_bit_of_a_new_id_is_one_about_half_the_time() -> None:
    traces = new_traces()
    # 10,000 fair coins: mean 5,000, standard deviation 50; +-400 (8 sigma) only catches real bias.
    for bits, values in (
        (128, [int(t.trace_id, 16) for t in traces]),
        (64, [int(t.span_id, 16) for t in traces]),
    ):
        counts = ones_per_bit(values, bits)
        assert all(4600 < count < 5400 for count in counts), counts


def _child_ids(conn: Connection) -> None:
    traces = new_traces(2000)
    rolls = [Sampler(0.5).start(b"").sampled for _ in range(200)]
    conn.send(([t.trace_id for t in traces], [t.span_id for t in traces], rolls))
    conn.close()


def test_a_forked_process_makes_ids_of_its_own() -> None:
    new_traces(1)  # this process has a batch of random digits that a child would inherit
    fork = multiprocessing.get_context("fork")
    mine, theirs = fork.Pipe()
    child = fork.Process(target=_child_ids, args=(theirs,))
    child.start()
    traces_, spans_, rolls_ = mine.recv()
    child.join(10)
    assert child.exitcode == 0
    traces = new_traces(2000)
    rolls = [Sampler(0.5).start(b"").sampled for _ in range(200)]
    assert not {t.trace_id for t in traces} & set(traces_)
    assert not {t.span_id for t in traces} & set(spans_)
    assert rolls != rolls_  # the sampler's generator is seeded anew in the child too
