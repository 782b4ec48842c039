"""The response reader's fast lane never changes what an upstream's client would notice.

``ResponseParser`` reads plain heads whole in C (``sidegate.http._wire``), counts their
Content-Length bodies itself, and hands everything else to llhttp, the reference. Each test reads
the same steps (a request sent upstream, then what the upstream sends, read by read, or its close)
with the lane on and with it off and asserts the records are equal (see tests/support/fast_lane.py).
"""

from __future__ import annotations

import pytest

from sidegate.http import wire
from sidegate.http.response_parser import MAX_RESPONSE_HEAD
from sidegate.http.wire import ScannedResponse
from support.fast_lane import (
    EOF,
    Expect,
    Step,
    byte_by_byte,
    cases,
    exchange,
    field_lines,
    heads,
    kinds,
    read_responses,
    response,
    same_responses,
    splits,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
OK_HEAD = OK[: -len(b"hello")]
EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
    b"5\r\nhello\r\n7;ext=x\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
CLOSE = response(b"200 OK", b"Connection: close", b"Content-Length: 0")


def with_length(value: bytes) -> list[Step]:
    return exchange(response(b"200 OK", b"Content-Length: " + value, body=b"hello"))


RESPONSES: list[tuple[str, list[Step]]] = [
    ("200-content-length", exchange(OK)),
    ("200-content-length-zero", exchange(EMPTY)),
    (
        "200-many-fields",
        exchange(response(b"200 OK", *[b"X-F%d: %d" % (i, i) for i in range(60)], b"Content-Length: 0")),
    ),
    ("204", exchange(response(b"204 No Content", b"Date: Tue, 01 Dec 2026 10:00:00 GMT"))),
    ("204-content-length", exchange(response(b"204 No Content", b"Content-Length: 0"))),
    ("304-content-length", exchange(response(b"304 Not Modified", b'ETag: "x"', b"Content-Length: 1234"))),
    ("304-no-length", exchange(response(b"304 Not Modified", b'ETag: "x"'))),
    ("head-content-length", exchange(response(b"200 OK", b"Content-Length: 1234"), head=True)),
    ("head-chunked", exchange(response(b"200 OK", b"Transfer-Encoding: chunked"), head=True)),
    # A response to HEAD without Content-Length: llhttp, not knowing the method, reads it as
    # close-delimited (not kept alive); the lane leaves it to llhttp.
    ("head-without-length", exchange(response(b"200 OK", b"X-A: 1"), head=True)),
    ("head-without-length-then-another", [*exchange(response(b"200 OK"), head=True), *exchange(OK)]),
    ("head-204", exchange(response(b"204 No Content"), head=True)),
    # Bytes after the head of a response to HEAD, in the same read, are dropped.
    ("head-extra-bytes", exchange(OK, head=True)),
    ("head-extra-bytes-then-another", [*exchange(OK + OK, head=True), *exchange(OK)]),
    ("chunked", exchange(CHUNKED)),
    ("close-delimited", exchange(response(b"200 OK", b"X-A: 1", body=b"abc"), b"def", EOF)),
    ("close-delimited-empty", exchange(response(b"200 OK"), EOF)),
    ("eof-mid-body", exchange(response(b"200 OK", b"Content-Length: 10", body=b"12345"), EOF)),
    ("eof-after-response", exchange(OK, EOF)),
    ("eof-mid-chunked", exchange(CHUNKED[:80], EOF)),
    ("100-continue-same-read", exchange(CONTINUE + OK)),
    ("100-continue-own-read", exchange(CONTINUE, OK)),
    ("103-early-hints", exchange(response(b"103 Early Hints", b"Link: </s.css>; rel=preload") + OK)),
    ("101-switching", exchange(SWITCHING + b"\x81\x05hello")),  # feed() returns where the frame starts
    ("101-switching-alone", exchange(SWITCHING)),
    (
        "connection-close",
        exchange(response(b"200 OK", b"Connection: close", b"Content-Length: 2", body=b"ok")),
    ),
    ("connection-keep-alive", exchange(response(b"200 OK", b"Connection: Keep-Alive", b"Content-Length: 0"))),
    (
        "connection-nominates",
        exchange(response(b"200 OK", b"Connection: X-Secret", b"X-Secret: s", b"Content-Length: 0")),
    ),
    # llhttp reads Proxy-Connection as Connection.
    (
        "proxy-connection-close",
        exchange(response(b"200 OK", b"Proxy-Connection: close", b"Content-Length: 0")),
    ),
    (
        "proxy-connection-keep-alive",
        exchange(response(b"200 OK", b"Proxy-Connection: keep-alive", b"Content-Length: 0")),
    ),
    # llhttp keeps whitespace after a value: the header is forwarded as received.
    ("ows-after-value", exchange(response(b"200 OK", b"X-A: v  ", b"Content-Length: 0"))),
    ("ows-after-content-length", exchange(response(b"200 OK", b"Content-Length: 5 ", body=b"hello"))),
    (
        "ows-after-keep-alive",
        exchange(response(b"200 OK", b"Connection: keep-alive\t", b"Content-Length: 0")),
    ),
    (
        "two-content-length-same",
        exchange(response(b"200 OK", b"Content-Length: 2", b"Content-Length: 2", body=b"ok")),
    ),
    (
        "two-content-length-different",
        exchange(response(b"200 OK", b"Content-Length: 2", b"Content-Length: 3", body=b"ok!")),
    ),
    ("content-length-letters", with_length(b"abc")),
    ("content-length-negative", with_length(b"-1")),
    ("content-length-plus", with_length(b"+5")),
    ("content-length-list", with_length(b"5, 5")),
    ("content-length-inner-space", with_length(b"5 5")),
    ("content-length-empty", with_length(b"")),
    ("content-length-hex", with_length(b"0x5")),
    ("content-length-huge", with_length(b"99999999999999999999999")),
    ("content-length-leading-zeros", with_length(b"005")),
    ("content-length-fifteen-digits", with_length(b"000000000000005")),
    ("te-gzip", exchange(response(b"200 OK", b"Transfer-Encoding: gzip", body=b"x"))),
    (
        "te-and-content-length",
        exchange(response(b"200 OK", b"Transfer-Encoding: chunked", b"Content-Length: 5", body=b"0\r\n\r\n")),
    ),
    (
        "http-1.0-content-length",
        exchange(response(b"200 OK", b"Content-Length: 2", body=b"ok", version=b"1.0")),
    ),
    (
        "http-1.0-keep-alive",
        exchange(response(b"200 OK", b"Connection: keep-alive", b"Content-Length: 0", version=b"1.0")),
    ),
    ("http-1.0-close-delimited", exchange(response(b"200 OK", body=b"abc", version=b"1.0"), EOF)),
    (
        "hop-by-hop-and-via",
        exchange(
            response(
                b"200 OK",
                *(b"Keep-Alive: timeout=5", b"X-Request-Id: up-1", b"Via: 1.1 a", b"via: 1.1 b", b"TE: x"),
                *(b"Trailer: X-T", b"Upgrade: h2c", b"Content-Length: 0"),
            )
        ),
    ),
    ("odd-name-case", exchange(response(b"200 OK", b"cOnTeNt-LeNgTh: 2", b"X-MiXeD: Case", body=b"ok"))),
    ("empty-reason", exchange(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")),
    ("no-reason", exchange(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")),
    ("reason-obs-text", exchange(b"HTTP/1.1 200 \xc3\x9cberall\r\nContent-Length: 0\r\n\r\n")),
    ("404", exchange(response(b"404 Not Found", b"Content-Length: 9", body=b"not found"))),
    ("599", exchange(response(b"599 Odd", b"Content-Length: 0"))),
    ("600", exchange(response(b"600 Odd", b"Content-Length: 0"))),
    ("bad-status-line", exchange(b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n")),
    ("bare-lf", exchange(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n")),
    ("unsolicited", [OK]),  # no expect(): no request was sent
]


@pytest.mark.parametrize("steps", cases(RESPONSES))
def test_response_reads_the_same(steps: list[Step]) -> None:
    same_responses(steps)


def test_plain_responses_carry_what_was_sent() -> None:
    record = same_responses([*exchange(OK), *exchange(response(b"200 OK", b"Content-Length: 7"), head=True)])
    assert kinds(record) == ["head", "body", "end", "head", "end"] and record[1] == ("body", b"hello")
    first, second = heads(record)
    assert first["status"] == 200 and first["content_length"] == 5 and first["keep_alive"] is True
    assert first["headers"] == [(b"Content-Type", b"text/plain")]
    assert second["content_length"] == 7 and second["content_length_raw"] == b"7"


def test_what_the_lane_leaves_to_llhttp_reads_as_llhttp_says() -> None:
    """Whitespace after a value trimmed (RFC 9110 section 5.5), Proxy-Connection closing, a
    response to HEAD without length not kept alive, bytes after a response to HEAD in the same
    read dropped."""
    assert heads(same_responses(dict(RESPONSES)["ows-after-value"]))[0]["headers"] == [(b"X-A", b"v")]
    assert heads(same_responses(dict(RESPONSES)["proxy-connection-close"]))[0]["keep_alive"] is False
    assert heads(same_responses(dict(RESPONSES)["head-without-length"]))[0]["keep_alive"] is False
    assert kinds(same_responses(dict(RESPONSES)["head-extra-bytes"])) == ["head", "end"]


CLOSING: list[tuple[str, bytes]] = [
    ("connection-close", CLOSE),
    ("proxy-connection-close", response(b"200 OK", b"Proxy-Connection: close", b"Content-Length: 0")),
    ("http-1.0", response(b"200 OK", b"Content-Length: 0", version=b"1.0")),
]


@pytest.mark.parametrize("closing", cases(CLOSING))
@pytest.mark.parametrize("same_read", [False, True], ids=["later-read", "same-read"])
def test_plain_response_after_a_closing_one(closing: bytes, same_read: bool) -> None:
    """An upstream sends a response that closes the connection, then a plain one (in another
    packet, or the same): refused (502) with the lane on as with it off, not read as a response."""
    steps = exchange(closing + OK) if same_read else [*exchange(closing), *exchange(OK)]
    record = same_responses(steps)
    assert kinds(record) == ["head", "end", "error"] and record[-1] == ("error", 502)


@pytest.mark.parametrize("fast", [True, False], ids=["lane-on", "lane-off"])
def test_response_split_at_every_offset(fast: bool) -> None:
    whole = read_responses(exchange(OK), fast=False)
    for first, second in splits(OK):
        assert read_responses(exchange(first, second), fast) == whole, len(first)


@pytest.mark.parametrize("fast", [True, False], ids=["lane-on", "lane-off"])
def test_response_body_byte_by_byte(fast: bool) -> None:
    """The lane counts the body down one byte at a time, then the next response is read whole."""
    body = bytes(range(256)) * 3
    data = response(b"200 OK", b"Content-Length: %d" % len(body), body=body)
    head = data[: -len(body)]
    record = read_responses([*exchange(head, *byte_by_byte(body)), *exchange(OK)], fast)
    assert record == read_responses([*exchange(data), *exchange(OK)], fast=False)
    assert record[1] == ("body", body)


# Several responses on one upstream connection, fast and declined shapes mixed.
SEQUENCE: list[Step] = [
    *exchange(OK),
    *exchange(CHUNKED),
    *exchange(response(b"200 OK", b"Content-Length: 100"), head=True),
    *exchange(CONTINUE, OK),
    *exchange(response(b"204 No Content")),
    *exchange(response(b"200 OK", b"Connection: keep-alive", b"Content-Length: 3", body=b"abc")),
    *exchange(response(b"200 OK", b"X-A: 1"), head=True),
    *exchange(response(b"200 OK", b"X-A: v ", b"Content-Length: 2", body=b"ok")),
    *exchange(EMPTY),
    *exchange(response(b"304 Not Modified", b"Content-Length: 50")),
    *exchange(response(b"500 Internal Server Error", b"Content-Length: 4", body=b"oops")),
    *exchange(response(b"200 OK", b"Content-Length: 2", b"Connection: close", body=b"by")),
]


def test_response_sequence() -> None:
    record = same_responses(SEQUENCE)
    assert kinds(record).count("end") == 12 and "error" not in kinds(record)


def test_response_sequence_each_read_split_at_every_offset() -> None:
    """Each read of the sequence cut in two at every offset (the others whole), with the lane on:
    the same as the whole sequence read with the lane off."""
    whole = read_responses(SEQUENCE, fast=False)
    for index, step in enumerate(SEQUENCE):
        if isinstance(step, bytes):
            for first, second in splits(step):
                steps = [*SEQUENCE[:index], first, second, *SEQUENCE[index + 1 :]]
                assert read_responses(steps, True) == whole, (index, len(first))


def test_cache_in_responses() -> None:
    """Responses share the lane's cache of field lines (see test_fast_lane_requests.py): Date and
    Content-Length change from one response to the next, each head carries its own."""
    steps: list[Step] = []
    for i in range(300):
        body = b"x" * (i % 7)
        date = b"Date: Tue, 01 Dec 2026 11:%02d:%02d GMT" % divmod(i, 60)
        steps += [Expect(), response(b"200 OK", date, b"Content-Length: %d" % len(body), body=body)]
    record = same_responses(steps)
    for i, head in enumerate(heads(record)):
        assert head["headers"] == [(b"Date", b"Tue, 01 Dec 2026 11:%02d:%02d GMT" % divmod(i, 60))]
        assert head["content_length"] == i % 7


# -- the 64 KiB bound on a response head -------------------------------------------------------
# The reference answers 502 when the fields it keeps (all but the framing ones, here
# Content-Length) measure over 64 KiB (name + value + 4 each) and the read was that large. The
# lane declines a head whose fields, all of them, measure over 64 KiB, or whose raw bytes do.


def kept_measure(head: bytes) -> int:
    return sum(len(n) + len(v) + 4 for n, v in field_lines(head) if n.lower() != b"content-length")


def padded(kept: int, spaces: bool) -> bytes:
    """A response head for a 2-byte body whose kept fields measure ``kept``: with a space after
    each colon (more raw bytes than the measure), or without (fewer, so the lane can take it)."""
    sep = b": " if spaces else b":"
    fields = [b"Content-Length" + sep + b"2"] + ([] if spaces else [b"X-%d:v" % i for i in range(40)])
    pad = kept - kept_measure(response(b"200 OK", *fields, b"X-Pad" + sep))
    head = response(b"200 OK", *fields, b"X-Pad" + sep + b"p" * pad)
    assert kept_measure(head) == kept
    return head


@pytest.mark.parametrize("same_read", [True, False], ids=["body-in-same-read", "body-in-next-read"])
def test_response_fields_just_under_and_over_64_kib(same_read: bool) -> None:
    """Kept fields measuring 64 KiB are served, one byte more is 502, lane on and off."""
    for kept in range(MAX_RESPONSE_HEAD - 40, MAX_RESPONSE_HEAD + 3):
        head = padded(kept, spaces=True)
        record = same_responses(exchange(head + b"ok") if same_read else exchange(head, b"ok"))
        expected = (
            [("error", 502)] if kept > MAX_RESPONSE_HEAD else [record[0], ("body", b"ok"), ("end", None)]
        )
        assert record == expected, kept


@pytest.mark.parametrize("same_read", [True, False], ids=["body-in-same-read", "body-in-next-read"])
def test_response_fields_without_spaces_around_the_lane_bound(same_read: bool) -> None:
    """Fields written without spaces measure more than their bytes: the lane takes a head whose
    fields (all) measure 64 KiB and leaves one more to llhttp; past 64 KiB of kept fields, llhttp's
    answer depends on the read's size (served, or 502), and is the same with the lane on."""
    content_length = len(b"Content-Length") + len(b"2") + 4
    lane_bound = MAX_RESPONSE_HEAD - content_length  # kept fields at which all measure 64 KiB
    assert wire.scan_response(padded(lane_bound, spaces=False), 0, MAX_RESPONSE_HEAD) is not None
    assert wire.scan_response(padded(lane_bound + 1, spaces=False), 0, MAX_RESPONSE_HEAD) is None
    for kept in range(lane_bound - 2, MAX_RESPONSE_HEAD + 8):
        head = padded(kept, spaces=False)
        same_responses(exchange(head + b"ok") if same_read else exchange(head, b"ok"))


# -- the lane is really there ------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["lane-on", "lane-off"])
def test_the_reader_takes_the_lane(fast: bool) -> None:
    """The reader calls the lane for each plain head (and not at all when it is off)."""
    taken: list[bool] = []

    def spy(data: bytes, start: int, max_head: int) -> ScannedResponse | None:
        scanned = wire.scan_response(data, start, max_head)
        taken.append(scanned is not None)
        return scanned

    steps = [*exchange(OK), *exchange(EMPTY), *exchange(OK[:20], OK[20:]), *exchange(CHUNKED)]
    record = read_responses(steps, fast, scan=spy)
    assert len(heads(record)) == 4 and "error" not in kinds(record)
    # Taken whole, taken whole, incomplete (llhttp then reads it all), chunked (llhttp's).
    assert taken == ([True, True, False, False] if fast else [])


def test_scan_response_takes_a_plain_head() -> None:
    fields = [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")]
    assert wire.scan_response(OK, 0, MAX_RESPONSE_HEAD) == (len(OK_HEAD), 200, 5, fields)
    assert wire.scan_response(EMPTY + OK, len(EMPTY), MAX_RESPONSE_HEAD) == (
        len(EMPTY) + len(OK_HEAD),
        200,
        5,
        fields,
    )
    # No length: the lane reads the head, the reader decides (bodiless, or llhttp for the body).
    no_length = response(b"404 Not Found", b"X-A: 1")
    assert wire.scan_response(no_length, 0, MAX_RESPONSE_HEAD) == (len(no_length), 404, -1, [(b"X-A", b"1")])


RESPONSES_DECLINED: list[tuple[str, bytes]] = [
    ("100-continue", CONTINUE),
    ("101-switching", SWITCHING),
    ("chunked", CHUNKED),
    ("http-1.0", response(b"200 OK", b"Content-Length: 2", version=b"1.0")),
    ("connection-close", CLOSE),
    ("proxy-connection-close", response(b"200 OK", b"Proxy-Connection: close", b"Content-Length: 2")),
    (
        "proxy-connection-keep-alive",
        response(b"200 OK", b"Proxy-Connection: keep-alive", b"Content-Length: 2"),
    ),
    ("ows-after-value", response(b"200 OK", b"X-A: v\t", b"Content-Length: 2")),
    ("ows-after-content-length", response(b"200 OK", b"Content-Length: 2 ")),
    ("two-content-length", response(b"200 OK", b"Content-Length: 2", b"Content-Length: 2")),
    ("invalid-content-length", response(b"200 OK", b"Content-Length: x")),
    ("status-600", response(b"600 Odd", b"Content-Length: 0")),
    ("reason-obs-text", b"HTTP/1.1 200 \xc3\x9cberall\r\nContent-Length: 0\r\n\r\n"),
    ("incomplete", OK_HEAD[:-1]),
]


@pytest.mark.parametrize("data", cases(RESPONSES_DECLINED))
def test_scan_response_declines(data: bytes) -> None:
    assert wire.scan_response(data, 0, MAX_RESPONSE_HEAD) is None


LEGAL_CHUNKED = response(
    b"200 OK",
    b"Transfer-Encoding: chunked\t",
    b"X-A: v ",
    body=b'3 ; a = "b;\\"c" ;d\r\nabc\r\n1\t;e\r\nd\r\n0 ;f=g\r\nX-T: 1\r\n\r\n',
)


def test_legal_chunk_lines_read_at_every_split_point() -> None:
    """Whitespace after values trimmed, every legal chunk line read by http/chunked.py, the
    trailer dropped: the same whatever the cut, with the lane on and off."""
    whole = same_responses(exchange(LEGAL_CHUNKED))
    assert heads(whole)[0]["headers"] == [(b"X-A", b"v")] and heads(whole)[0]["chunked"] is True
    assert whole[1:] == [("body", b"abcd"), ("end", None)]
    for first, second in splits(LEGAL_CHUNKED):
        assert same_responses(exchange(first, second)) == whole, len(first)


@pytest.mark.parametrize("fields", [100, 101])
def test_field_count_bound(fields: int) -> None:
    """100 fields are read (by the lane), one more is a 502 (the lane leaves it to the reference)."""
    lines = [b"X-F-%d: %d" % (i, i) for i in range(fields - 1)]
    record = same_responses(exchange(response(b"200 OK", *lines, b"Content-Length: 0")))
    assert record[-1] == (("end", None) if fields == 100 else ("error", 502))
