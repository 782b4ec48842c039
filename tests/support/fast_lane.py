"""Differential reading for the fast-lane tests (tests/unit/test_fast_lane_*.py).

``RequestParser`` and ``ResponseParser`` read plain heads whole in C (``sidegate.http._wire``) and
hand everything else to llhttp, the reference. These helpers read the same bytes with the lane on
and with it off, through sinks that write every event down as plain data (each head's fields, the
body bytes, the ends, the tunnel offset, the error status), and assert the two records are equal:
a difference is something a user would see (a header forwarded with other bytes, a connection kept
open that should close, a request answered 431 instead of being served).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import pytest

from sidegate.http.errors import ProtocolError
from sidegate.http.request_head import ParsedRequest
from sidegate.http.request_parser import RequestParser, RequestSink
from sidegate.http.response_parser import ParsedResponse, ResponseParser, ResponseSink
from sidegate.http.wire import ScannedResponse

MAX_HEAD = 8192
MAX_COUNT = 100

Event = tuple[str, object]
Record = list[Event]

REQUEST_FIELDS = (
    *("method", "target", "path", "query", "version", "host", "host_header", "keep_alive"),
    *("content_length", "chunked", "upgrade", "request_id", "headers", "connection_tokens"),
    *("xff", "xfp", "xfh", "forwarded", "via", "plain_forwarding", "expect_continue", "traceparent"),
)
RESPONSE_FIELDS = (
    *("status", "headers", "content_length", "content_length_raw", "chunked", "keep_alive"),
    *("close_delimited", "switching", "upgrade", "via", "connection_tokens"),
)


def as_data(head: object, fields: Sequence[str]) -> dict[str, object]:
    """A head as plain values (lists copied, so later changes to the head don't show)."""
    data: dict[str, object] = {}
    for name in fields:
        value = getattr(head, name)
        data[name] = list(value) if isinstance(value, list) else value
    return data


def add_body(events: Record, data: bytes) -> None:
    """Body bytes, joined with the previous body event: how a body is cut into reads is not
    something a peer sees (it depends on how the bytes were fed), the bytes are."""
    if events and events[-1][0] == "body":
        previous = events[-1][1]
        assert isinstance(previous, bytes)
        events[-1] = ("body", previous + data)
    else:
        events.append(("body", bytes(data)))


class RequestRecorder(RequestSink):
    def __init__(self) -> None:
        self.events: Record = []

    def on_request_head(self, head: ParsedRequest) -> None:
        self.events.append(("head", as_data(head, REQUEST_FIELDS)))

    def on_request_body(self, data: bytes) -> None:
        add_body(self.events, data)

    def on_request_end(self) -> None:
        self.events.append(("end", None))


class ResponseRecorder(ResponseSink):
    def __init__(self) -> None:
        self.events: Record = []

    def on_informational(self, head: ParsedResponse) -> None:
        self.events.append(("informational", as_data(head, RESPONSE_FIELDS)))

    def on_response_head(self, head: ParsedResponse) -> None:
        self.events.append(("head", as_data(head, RESPONSE_FIELDS)))

    def on_response_body(self, data: bytes) -> None:
        add_body(self.events, data)

    def on_response_end(self) -> None:
        self.events.append(("end", None))


# -- requests ----------------------------------------------------------------------------------


def read_requests(
    pieces: Iterable[bytes], fast: bool, max_head: int = MAX_HEAD, max_count: int = MAX_COUNT
) -> Record:
    """Feed ``pieces`` (one read each) to one request reader: the events, then the tunnel offset
    (counted from the first byte fed) or the error status that stopped it."""
    sink = RequestRecorder()
    parser = RequestParser(sink, max_head, max_count, fast_lane=fast)
    fed = 0
    try:
        for piece in pieces:
            offset = parser.feed(piece)
            if offset is not None:
                sink.events.append(("tunnel", fed + offset))
                break
            fed += len(piece)
    except ProtocolError as exc:
        sink.events.append(("error", exc.status))
    return sink.events


def same_requests(pieces: Sequence[bytes], max_head: int = MAX_HEAD, max_count: int = MAX_COUNT) -> Record:
    """The record with the lane on equals the record with it off; returns it."""
    on = read_requests(pieces, True, max_head, max_count)
    off = read_requests(pieces, False, max_head, max_count)
    assert on == off, "the fast lane changed what the reader reports"
    return off


# -- responses ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """``ResponseParser.expect()``: a request was sent upstream (a HEAD when ``head``)."""

    head: bool = False


EOF: Literal["eof"] = "eof"  # the upstream closes: ``ResponseParser.eof()``, its answer recorded
Step = Expect | bytes | Literal["eof"]
ScanResponse = Callable[[bytes, int, int], ScannedResponse | None]


def read_responses(steps: Iterable[Step], fast: bool, scan: ScanResponse | None = None) -> Record:
    """Feed ``steps`` to one response reader (``scan``: instead of the lane, to watch its calls)."""
    sink = ResponseRecorder()
    parser = ResponseParser(sink, fast_lane=fast)
    if scan is not None:
        parser._scan = scan
    fed = 0
    try:
        for step in steps:
            if isinstance(step, Expect):
                parser.expect(step.head)
            elif isinstance(step, bytes):
                offset = parser.feed(step)
                if offset is not None:
                    sink.events.append(("tunnel", fed + offset))
                    break
                fed += len(step)
            else:
                sink.events.append(("eof", parser.eof()))
    except ProtocolError as exc:
        sink.events.append(("error", exc.status))
    return sink.events


def same_responses(steps: Sequence[Step]) -> Record:
    """The record with the lane on equals the record with it off; returns it."""
    on = read_responses(steps, True)
    off = read_responses(steps, False)
    assert on == off, "the fast lane changed what the reader reports"
    return off


def response(status: bytes, *fields: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    lines = b"".join(field + b"\r\n" for field in fields)
    return b"HTTP/" + version + b" " + status + b"\r\n" + lines + b"\r\n" + body


def exchange(*reads: bytes | Literal["eof"], head: bool = False) -> list[Step]:
    """One request sent upstream (a HEAD when ``head``), then what the upstream sends."""
    return [Expect(head), *reads]


# -- records and bytes ---------------------------------------------------------------------------


def kinds(record: Record) -> list[str]:
    return [event[0] for event in record]


def heads(record: Record) -> list[dict[str, object]]:
    found = []
    for kind, data in record:
        if kind == "head":
            assert isinstance(data, dict)
            found.append(data)
    return found


def splits(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``data`` in two pieces, at every byte offset."""
    for cut in range(1, len(data)):
        yield data[:cut], data[cut:]


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def field_lines(head: bytes) -> list[tuple[bytes, bytes]]:
    """The (name, value) of each field line of a head (whitespace around the value stripped)."""
    lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    return [(name, value.strip(b" \t")) for name, _, value in (line.partition(b":") for line in lines)]


def fields_measure(head: bytes) -> int:
    """What the readers count as a head's fields: name + value + 4 per field, whatever whitespace
    was sent around the value."""
    return sum(len(name) + len(value) + 4 for name, value in field_lines(head))


def cases(named: Sequence[tuple[str, object]]) -> list[object]:
    """pytest params of (id, value) pairs."""
    return [pytest.param(value, id=name) for name, value in named]
