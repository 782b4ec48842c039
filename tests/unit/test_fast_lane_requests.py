"""The request reader's fast lane never changes what a client or the app would notice.

``RequestParser`` reads plain heads whole in C (``sidegate.http._wire``) and hands everything else
to llhttp, the reference. Each test reads the same bytes with the lane on and with it off and
asserts the records are equal (see tests/support/fast_lane.py): the same heads, bodies and ends,
the same tunnel offset, the same error status. Shapes the lane takes are checked to be taken, and
shapes it declines to be declined, so every case exercises the path it is meant to.
"""

from __future__ import annotations

import importlib

import pytest

from sidegate.http import wire
from sidegate.http.errors import ProtocolError
from sidegate.http.request_head import ParsedRequest
from sidegate.http.request_parser import RequestParser, RequestSink
from sidegate.http.wire import ScannedRequest
from support.fast_lane import (
    MAX_COUNT,
    MAX_HEAD,
    RequestRecorder,
    byte_by_byte,
    cases,
    field_lines,
    fields_measure,
    heads,
    kinds,
    read_requests,
    same_requests,
    splits,
)

# The malformed requests of the end-to-end framing tests (tests/ is on sys.path under pytest).
_framing = importlib.import_module("integration.test_framing")
HEAD_CASES: list[tuple[str, bytes, int, str]] = _framing.HEAD_CASES
CHUNK_CASES: list[tuple[str, bytes]] = _framing.CHUNK_CASES
CHUNK_HEAD: bytes = _framing.CHUNK_HEAD

H = b"Host: example.com\r\n"


def get(path: bytes, *lines: bytes) -> bytes:
    """A GET with Host and the given field lines."""
    return b"GET " + path + b" HTTP/1.1\r\n" + H + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


# Shapes the fast lane reads whole: a user must see exactly what llhttp would have given.
PLAIN: list[tuple[str, bytes]] = [
    ("wrk-minimal", b"GET / HTTP/1.1\r\nHost: localhost:8080\r\n\r\n"),
    (
        "browser",
        b"GET /docs/index.html?lang=en HTTP/1.1\r\n"
        b"Host: www.example.com\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
        b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
        b"Accept-Language: en-US,en;q=0.5\r\n"
        b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
        b"Referer: https://www.example.com/\r\n"
        b"Connection: keep-alive\r\n"
        b"Cookie: session=0123456789abcdef; theme=dark; consent=yes\r\n"
        b"Upgrade-Insecure-Requests: 1\r\n"
        b"Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Site: same-origin\r\n"
        b"Sec-Fetch-User: ?1\r\nPriority: u=0, i\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\r\n",
    ),
    (
        "odd-name-case",
        b"GET /a HTTP/1.1\r\nhOsT: Example.COM\r\nx-rEqUeSt-Id: abc-123\r\nCONTENT-TYPE: text/plain\r\n"
        b"x-forwarded-FOR: 10.0.0.1\r\nVIA: 1.1 edge\r\ncOnNeCtIoN: kEeP-aLiVe\r\n\r\n",
    ),
    (
        "ows-before-values",
        b"GET / HTTP/1.1\r\nHost:example.com\r\nX-None:none\r\nX-Spaces:    spaced out\r\n"
        b"X-Tab:\tafter a tab\r\nX-Mixed: \t \tmixed\r\n\r\n",
    ),
    ("empty-values", get(b"/", b"X-Empty:", b"X-Next: after an empty one", b"X-Last:")),
    ("whitespace-only-values", get(b"/", b"X-Space: ", b"X-Tabs:\t \t", b"X-After: a")),
    ("query", get(b"/search?q=a+b&lang=en&empty=&flag&k=v=w")),
    ("query-only", get(b"/?")),
    ("query-with-dot-segment", get(b"/go?next=/../admin/./x")),
    ("query-two-question-marks", get(b"/a?b?c")),
    ("percent-encoding", get(b"/caf%C3%A9/%2F%2e%2E/x?q=%20%26")),
    ("sub-delims-in-path", get(b"/a;b=c/d,e/!$&'()*+=:@~_-.x")),
    ("dots-not-segments", get(b"/file.tar.gz/a.b/c..")),
    ("double-slash", get(b"//a//b/")),
    *[
        (f"method-{method.decode().lower()}", method + b" /m HTTP/1.1\r\n" + H + b"\r\n")
        for method in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")
    ],
    *[
        (f"keep-alive-{spelling.decode()}", get(b"/", b"Connection: " + spelling))
        for spelling in (b"keep-alive", b"Keep-Alive", b"KEEP-ALIVE", b"kEEp-AlIvE")
    ],
    ("keep-alive-twice", get(b"/", b"Connection: keep-alive", b"connection: Keep-Alive")),
    ("host-with-port", b"GET / HTTP/1.1\r\nHost: Example.com:8443\r\n\r\n"),
    ("host-ipv6", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"),
    (
        "forwarding-headers",
        get(
            b"/f",
            *(b"X-Forwarded-For: 10.0.0.1", b"X-Forwarded-For: 10.0.0.2, 10.0.0.3"),
            *(b"X-Forwarded-Proto: https", b"X-Forwarded-Host: public.example"),
            *(b"Forwarded: for=192.0.2.60;proto=http", b"Forwarded: for=198.51.100.17"),
            *(b"Via: 1.0 fred", b"Via: 1.1 p.example"),
        ),
    ),
    ("request-id", get(b"/", b"X-Request-Id: 7f1c2b3a-0000-4bcd-8000-1234567890ab")),
    ("request-id-too-long", get(b"/", b"X-Request-Id: " + b"r" * 201)),
    (
        "traceparent",
        get(
            b"/",
            b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"tracestate: congo=t61rcWkgMzE",
        ),
    ),
    ("expect-continue", b"PUT /e HTTP/1.1\r\n" + H + b"Expect: 100-Continue\r\n\r\n"),
    (
        "hop-by-hop",
        get(
            b"/",
            *(b"Keep-Alive: timeout=5", b"TE: trailers", b"Trailer: X-T"),
            *(b"Proxy-Authorization: Basic Zm9vOmJhcg==", b"X-Kept: yes"),
        ),
    ),
    ("long-line", get(b"/", b"Authorization: Bearer " + b"t" * 300)),
    # Long lines are checked 16 bytes at a time: a tab or a space anywhere in one is still plain.
    *[
        (f"long-line-{name}-at-{at}", get(b"/", b"Cookie: " + b"c" * at + byte + b"c" * (300 - at)))
        for name, byte in (("tab", b"\t"), ("space", b" "), ("tilde", b"~"))
        for at in (90, 97, 150, 299)
    ],
    ("upgrade-insecure-requests", get(b"/", b"Upgrade-Insecure-Requests: 1")),
    # Content-Length bodies: the lane reads the head, the reader counts the body.
    ("content-length-body", b"POST /upload HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello"),
    ("content-length-zero", b"PUT /x HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n"),
    ("content-length-on-get", get(b"/x", b"content-length: 3") + b"abc"),
    ("content-length-leading-zeros", b"POST /z HTTP/1.1\r\n" + H + b"Content-Length: 005\r\n\r\nhello"),
    (
        "json-post",
        b"POST /api/orders?dry_run=1 HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\n"
        b"Content-Length: 27\r\nAccept: application/json\r\n\r\n" + b'{"item": "tea", "count": 2}',
    ),
    # A forward proxy's request (the egress listener's): the reader splits the authority off.
    ("absolute-form", get(b"http://Origin.Example:8080/p?q=1")),
    ("absolute-form-https", get(b"https://origin.example")),
    ("absolute-form-query-only", get(b"http://origin.example?q=1")),
    ("absolute-form-over-host", b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n"),
]

# Plain shapes the lane reads whole that the reader then rejects (in Python, both lanes): 400.
TAKEN_REJECTED: list[tuple[str, bytes]] = [
    ("no-host", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n"),
    ("no-fields", b"GET / HTTP/1.1\r\n\r\n"),
    ("host-twice", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n"),
    ("host-list", b"GET / HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n"),
    ("host-empty", b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
    ("host-invalid-port", b"GET / HTTP/1.1\r\nHost: example.com:99999\r\n\r\n"),
    ("host-userinfo", b"GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n"),
]

WEBSOCKET = get(
    b"/chat",
    *(b"Upgrade: websocket", b"Connection: Upgrade"),
    *(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version: 13"),
)
TUNNEL_BYTES = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"  # a masked websocket frame

# Shapes the lane leaves to llhttp (bodies, other versions, closes, upgrades, unusual targets,
# whitespace after a value...): the reader must behave exactly as it did before the lane existed.
DECLINED: list[tuple[str, bytes]] = [
    # A Content-Length too long for the lane (16 digits): llhttp reads it.
    ("content-length-16-digits", b"POST /n HTTP/1.1\r\n" + H + b"Content-Length: %016d\r\n\r\nhello" % 5),
    (
        "chunked-body",
        b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    ),
    (
        "chunked-trailers",
        b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n0\r\nX-Checksum: 42\r\nX-Other: t\r\n\r\n",
    ),
    ("http-1.0", b"GET / HTTP/1.0\r\n\r\n"),
    ("http-1.0-host", b"GET /old HTTP/1.0\r\n" + H + b"\r\n"),
    ("http-1.0-keep-alive", b"GET /old HTTP/1.0\r\n" + H + b"Connection: keep-alive\r\n\r\n"),
    ("connection-close", get(b"/", b"Connection: close")),
    ("connection-close-upper", get(b"/", b"Connection: CLOSE")),
    ("connection-nominates", get(b"/", b"Connection: keep-alive, X-Secret", b"X-Secret: s", b"X-Kept: k")),
    ("connection-empty", get(b"/", b"Connection:")),
    # llhttp reads Proxy-Connection as Connection (close: the connection ends after this one).
    ("proxy-connection-close", get(b"/", b"Proxy-Connection: close")),
    ("proxy-connection-keep-alive", get(b"/", b"Proxy-Connection: keep-alive")),
    # llhttp keeps whitespace after a value: the header is forwarded as sent ("Host: a " is a 400).
    ("ows-after-value", get(b"/", b"X-A: value \t ")),
    ("ows-after-host", b"GET / HTTP/1.1\r\nHost: example.com \r\n\r\n"),
    ("ows-after-keep-alive", get(b"/", b"Connection: keep-alive ")),
    ("websocket", WEBSOCKET),
    ("websocket-with-frame", WEBSOCKET + TUNNEL_BYTES),
    ("upgrade-without-connection", get(b"/", b"Upgrade: h2c")),
    ("absolute-form-upper-case-scheme", get(b"HTTP://origin.example/p")),
    ("absolute-form-ipv6", get(b"http://[::1]:8080/p")),
    ("absolute-form-dot-segment", get(b"http://origin.example/a/../b")),
    ("dot-segments", get(b"/a/b/../c/./d")),
    ("dot-segment-at-end", get(b"/a/..")),
    ("dot-file", get(b"/.well-known/security.txt")),
    ("fragment", get(b"/page?x=1#section-2")),
    ("obs-text-value", get(b"/", b"X-Name: Caf\xc3\xa9 \xff")),
    # ...and a byte no plain value has, anywhere in a long line, sends it to llhttp (which decides).
    *[
        (f"long-line-{name}-at-{at}", get(b"/", b"Cookie: " + b"c" * at + byte + b"c" * (300 - at)))
        for name, byte in (("obs-text", b"\x80"), ("del", b"\x7f"), ("high", b"\xff"))
        for at in (90, 97, 150, 299)
    ],
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
    ("options-asterisk", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n"),
    ("other-method", b"PURGE /cache/x HTTP/1.1\r\n" + H + b"\r\n"),
    ("lower-case-method", b"get / HTTP/1.1\r\n" + H + b"\r\n"),
    ("target-pipe", get(b"/a|b")),
    ("target-braces", get(b"/{id}/x")),
]

# After these, llhttp reads nothing more on the connection (an upgrade, an error, a close).
CLOSING = [
    "connection-close",
    "connection-close-upper",
    "proxy-connection-close",
    "http-1.0",
    "http-1.0-host",
]
STOPS_READING = {
    *CLOSING,
    "websocket",
    "websocket-with-frame",
    "connect",
    "lower-case-method",
    "fragment",  # RFC 9112 section 3.2: 400
    *(f"long-line-del-at-{at}" for at in (90, 97, 150, 299)),  # DEL is no field-vchar: 400
}


@pytest.mark.parametrize("data", cases(PLAIN))
def test_plain_request_reads_the_same(data: bytes) -> None:
    assert wire.scan_request(data, 0, MAX_HEAD, MAX_COUNT) is not None, "the lane should take this head"
    record = same_requests([data])
    assert [kind for kind in kinds(record) if kind != "body"] == ["head", "end"]
    body = b"".join(data for kind, data in record if kind == "body" and isinstance(data, bytes))
    assert data.endswith(body)  # the body is the bytes after the head, whole


@pytest.mark.parametrize("data", cases(TAKEN_REJECTED))
def test_plain_request_rejected_the_same(data: bytes) -> None:
    assert wire.scan_request(data, 0, MAX_HEAD, MAX_COUNT) is not None, "the lane should take this head"
    assert same_requests([data]) == [("error", 400)]


@pytest.mark.parametrize("data", cases(DECLINED))
def test_declined_request_reads_the_same(data: bytes) -> None:
    assert wire.scan_request(data, 0, MAX_HEAD, MAX_COUNT) is None, "the lane should leave this to llhttp"
    same_requests([data])


def test_plain_heads_carry_what_was_sent() -> None:
    """Not only equal to llhttp's: the values are the bytes on the wire (a sanity check on both)."""
    browser, ows = heads(same_requests([dict(PLAIN)["browser"], dict(PLAIN)["ows-before-values"]]))
    assert browser["method"] == b"GET" and browser["path"] == b"/docs/index.html"
    assert browser["query"] == b"lang=en" and browser["host"] == b"www.example.com"
    assert isinstance(browser["headers"], list) and len(browser["headers"]) == 16 - 2  # not Host, Connection
    assert (b"Accept-Encoding", b"gzip, deflate, br, zstd") in browser["headers"]
    assert browser["connection_tokens"] == (b"keep-alive",)
    assert ows["host"] == b"example.com"
    assert ows["headers"] == [
        (b"X-None", b"none"),
        (b"X-Spaces", b"spaced out"),
        (b"X-Tab", b"after a tab"),
        (b"X-Mixed", b"mixed"),
    ]


def test_whitespace_after_a_value_is_not_part_of_it() -> None:
    """RFC 9110 section 5.5: the lane declines such heads, and the reference path trims them."""
    record = same_requests([dict(DECLINED)["ows-after-value"], dict(DECLINED)["ows-after-host"]])
    first, second = heads(record)
    assert first["headers"] == [(b"X-A", b"value")]
    assert second["host"] == b"example.com" and second["host_header"] == b"example.com"
    assert kinds(record) == ["head", "end", "head", "end"]


# -- pipelines ---------------------------------------------------------------------------------
# Plain and declined requests in one buffer, in mixed orders. The lane reads the plain ones up to
# the first it declines, llhttp reads from there, and the lane must pick up again only at a
# message boundary llhttp has fully left.

FIRST = b"GET /first HTTP/1.1\r\n" + H + b"Accept: */*\r\n\r\n"
MIDDLE = b"DELETE /middle?id=7 HTTP/1.1\r\n" + H + b"X-A: 1\r\n\r\n"
LAST = get(b"/last", b"Connection: keep-alive")


@pytest.mark.parametrize("declined", cases(DECLINED))
def test_pipelined_plain_declined_plain(declined: bytes) -> None:
    record = same_requests([FIRST + declined + MIDDLE + declined + LAST])
    assert heads(record)[0]["path"] == b"/first"


@pytest.mark.parametrize("declined", cases(DECLINED))
def test_pipelined_declined_first(declined: bytes) -> None:
    same_requests([declined + FIRST + declined + LAST])


def test_pipelined_all_plain_shapes() -> None:
    record = same_requests([b"".join(data for _, data in PLAIN)])
    assert [kind for kind in kinds(record) if kind != "body"] == ["head", "end"] * len(PLAIN)


def test_pipelined_all_shapes_interleaved() -> None:
    """Every plain shape, each followed by a declined one that keeps the connection going."""
    going = [data for name, data in DECLINED if name not in STOPS_READING]
    data = b"".join(plain + going[i % len(going)] for i, (_, plain) in enumerate(PLAIN))
    record = same_requests([data])
    assert "error" not in kinds(record)
    assert len(heads(record)) == 2 * len(PLAIN)


@pytest.mark.parametrize("before", [[FIRST], [FIRST, MIDDLE]], ids=["one-plain", "two-plain"])
def test_tunnel_offset_after_plain_requests(before: list[bytes]) -> None:
    """A client pipelines plain requests and a websocket handshake, then a frame: the offset
    feed() returns is where the frame starts, or the tunnel would carry the end of the handshake."""
    prefix = b"".join(before)
    data = prefix + WEBSOCKET + TUNNEL_BYTES
    for fast in (True, False):
        record = read_requests([data], fast)
        assert record[-1] == ("tunnel", len(prefix) + len(WEBSOCKET)), fast
        assert len(heads(record)) == len(before) + 1
    same_requests([data])


@pytest.mark.parametrize("closing", cases([(name, dict(DECLINED)[name]) for name in CLOSING]))
@pytest.mark.parametrize("later", [MIDDLE, FIRST + LAST], ids=["one-later", "two-later"])
def test_plain_request_after_a_closing_one_in_a_later_read(closing: bytes, later: bytes) -> None:
    """A client sends a request that closes the connection, then (in another packet) plain ones:
    refused (400) with the lane on as with it off, not served."""
    record = same_requests([FIRST + closing, later])
    assert kinds(record) == ["head", "end", "head", "end", "error"] and record[-1] == ("error", 400)


# -- malformed requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status"), [(c[1], c[2]) for c in HEAD_CASES], ids=[c[0] for c in HEAD_CASES]
)
def test_malformed_head_rejected_the_same(data: bytes, status: int) -> None:
    # Alone, behind a plain request the lane reads, and behind one llhttp reads.
    assert same_requests([data]) == [("error", status)]
    after_plain = same_requests([FIRST + data])
    assert after_plain[2:] == [("error", status)] and kinds(after_plain[:2]) == ["head", "end"]
    after_declined = same_requests([dict(DECLINED)["chunked-body"] + data])
    assert after_declined[-1] == ("error", status) and kinds(after_declined).count("head") == 1


@pytest.mark.parametrize("body", [c[1] for c in CHUNK_CASES], ids=[c[0] for c in CHUNK_CASES])
def test_malformed_chunked_body_rejected_the_same(body: bytes) -> None:
    record = same_requests([FIRST + CHUNK_HEAD + body + LAST])
    # The first request is complete, the broken one never ends, and nothing is read past it.
    assert kinds(record)[:2] == ["head", "end"] and record[-1] == ("error", 400)
    assert kinds(record).count("end") == 1 and len(heads(record)) == 2


# -- every split point -------------------------------------------------------------------------

D = dict(DECLINED)
PIPELINES: list[tuple[str, bytes]] = [
    (
        "plain-body-browser-chunked",
        dict(PLAIN)["wrk-minimal"]
        + dict(PLAIN)["content-length-body"]
        + dict(PLAIN)["browser"]
        + D["chunked-trailers"],
    ),
    (
        "bodies-back-to-back",
        dict(PLAIN)["json-post"]
        + dict(PLAIN)["content-length-zero"]
        + FIRST
        + dict(PLAIN)["content-length-leading-zeros"]
        + D["content-length-16-digits"],
    ),
    ("plain-http10-plain-close", FIRST + D["http-1.0-keep-alive"] + MIDDLE + D["connection-close"]),
    ("plain-plain-websocket", FIRST + MIDDLE + WEBSOCKET + TUNNEL_BYTES),
    ("plain-dot-segments-plain-bad", FIRST + D["dot-segments"] + LAST + b"GET / HTTP/1.1\r\nX@: 1\r\n\r\n"),
    ("plain-ows-proxy-connection", FIRST + D["ows-after-value"] + LAST + D["proxy-connection-close"]),
    (
        "legal-chunk-lines-and-ows",  # read by http/chunked.py, whatever the reads' cuts
        FIRST
        + b"POST /up HTTP/1.1\r\nHost: example.com \r\nTransfer-Encoding: chunked\t\r\n\r\n"
        + b'3 ; a = "b;\\"c" ;d\r\nabc\r\n1\t;e\r\nd\r\n0 ;f=g\r\nX-T: 1\r\n\r\n'
        + LAST,
    ),
]


@pytest.mark.parametrize("data", cases(PIPELINES))
def test_every_split_point(data: bytes) -> None:
    whole = read_requests([data], fast=False)
    for first, second in splits(data):
        for fast in (True, False):
            assert read_requests([first, second], fast) == whole, (fast, len(first))


@pytest.mark.parametrize("fast", [True, False], ids=["lane-on", "lane-off"])
@pytest.mark.parametrize("name", ["plain-body-browser-chunked", "legal-chunk-lines-and-ows"])
def test_byte_by_byte(fast: bool, name: str) -> None:
    data = dict(PIPELINES)[name]
    assert read_requests(byte_by_byte(data), fast) == read_requests([data], fast=False)


def test_legal_chunk_lines_and_ows_read_as_meant() -> None:
    record = read_requests([dict(PIPELINES)["legal-chunk-lines-and-ows"]], fast=False)
    assert kinds(record) == ["head", "end", "head", "body", "end", "head", "end"]
    assert heads(record)[1]["chunked"] is True and heads(record)[1]["host"] == b"example.com"
    assert record[3] == ("body", b"abcd")


# -- the cache of field lines ------------------------------------------------------------------
# The lane shares one (name, value) pair per recently seen line (512 slots, lines up to 96 bytes).
# A stale or mixed-up slot would show as a header with another request's value: every head must
# carry exactly the values of its own bytes.


def fnv1a_slot(line: bytes) -> int:
    """The cache slot of a field line (FNV-1a of the line without CRLF, as _wire.c computes it),
    to send lines that collide on purpose. If the C hash changes these still run, colliding less."""
    value = 2166136261
    for byte in line:
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value % 512


def assert_heads_carry(record: list[tuple[str, object]], sent: list[list[bytes]]) -> None:
    found = heads(record)
    assert len(found) == len(sent)
    for head, lines in zip(found, sent, strict=True):
        assert head["headers"] == field_lines(b"\r\n" + b"\r\n".join(lines)), head["target"]


def test_cache_more_distinct_lines_than_slots() -> None:
    """2000 distinct lines (four times the slots) through one reader, then the first ones again."""
    batches = [[b"X-N: %d" % n for n in range(start, start + 20)] for start in range(0, 2000, 20)]
    sent = batches + batches[:10]
    requests = [get(b"/n", *lines) for lines in sent]
    assert_heads_carry(same_requests(requests), sent)  # one request per read, on one connection
    assert_heads_carry(same_requests([b"".join(requests)]), sent)  # all pipelined in one read


def test_cache_value_changing_under_one_name() -> None:
    """Date changes every second, X-Flip between two values: each head has its own."""
    sent = [
        [b"Date: Tue, 01 Dec 2026 10:%02d:%02d GMT" % divmod(i, 60), b"X-Flip: %d" % (i % 2), b"X-Same: s"]
        for i in range(600)
    ]
    assert_heads_carry(same_requests([get(b"/d", *lines) for lines in sent]), sent)


def test_cache_lines_in_the_same_slot() -> None:
    """Two lines of one slot, alternating: each must evict the other, never stand in for it."""
    first = b"X-Slot: 0"
    other = next(
        line for n in range(1, 100_000) if fnv1a_slot(line := b"X-Slot: %d" % n) == fnv1a_slot(first)
    )
    sent = [[first if i % 2 else other, b"X-I: %d" % i] for i in range(40)]
    assert_heads_carry(same_requests([get(b"/s", *lines) for lines in sent]), sent)


def test_cache_same_field_spelled_with_other_whitespace() -> None:
    sent = [[b"X-A: v"], [b"X-A:v"], [b"X-A:  v"], [b"X-A:\tv"], [b"X-A: v"], [b"x-a: v"]]
    record = same_requests([get(b"/w", *lines) for lines in sent])
    assert [head["headers"] for head in heads(record)] == [[(b"X-A", b"v")]] * 5 + [[(b"x-a", b"v")]]


@pytest.mark.parametrize("length", [95, 96, 97, 98, 200], ids=lambda n: f"line-{n}-bytes")
def test_cache_lines_around_the_length_bound(length: int) -> None:
    """Lines that differ only in their last byte, at and past the longest line the cache keeps."""
    prefix = b"X-Long: "
    lines = [prefix + b"v" * (length - len(prefix) - 1) + last for last in (b"1", b"2", b"1", b"2")]
    assert all(len(line) == length for line in lines)
    sent = [[line] for line in lines]
    assert_heads_carry(same_requests([get(b"/l", *batch) for batch in sent]), sent)


# -- limits ------------------------------------------------------------------------------------
# max_head_size bounds a head as both paths measure it: the request-target plus name + value + 4
# per field (not the raw bytes: the request line, and whitespace around values, do not count).
# The lane takes a head only when its raw bytes also fit; otherwise llhttp decides, the same way.


def head_measure(data: bytes) -> int:
    return len(data.split(b" ", 2)[1]) + fields_measure(data)


WITH_SPACES = get(b"/limits", b"X-Pad: " + b"p" * 100)  # more raw bytes than its measure
WITHOUT_SPACES = b"GET /n HTTP/1.1\r\nHost:a\r\n" + b"".join(b"X-%d:v\r\n" % i for i in range(30)) + b"\r\n"
PLACEMENTS = {
    "alone": lambda data: [data],
    "before-another": lambda data: [data + LAST],
    "behind-another": lambda data: [FIRST + data],
}


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize(
    ("data", "lane_takes_it"),
    [pytest.param(WITH_SPACES, False, id="with-spaces"), pytest.param(WITHOUT_SPACES, True, id="no-spaces")],
)
def test_max_head_size(data: bytes, lane_takes_it: bool, placement: str) -> None:
    """A head measuring exactly max_head_size is served, one more is 431, lane on and off; and for
    every limit around the head's measure and its raw size, only the measure decides."""
    measure = head_measure(data)
    pieces = PLACEMENTS[placement](data)
    served = same_requests(pieces, max_head=measure)
    assert kinds(served) == ["head", "end"] * (1 if placement == "alone" else 2)
    over = same_requests(pieces, max_head=measure - 1)
    assert over == (served[:2] if placement == "behind-another" else []) + [("error", 431)]
    # Which path decides at the limit: raw bytes over it send the head to llhttp.
    assert (wire.scan_request(data, 0, measure, MAX_COUNT) is not None) is lane_takes_it
    assert wire.scan_request(data, 0, measure - 1, MAX_COUNT) is None
    for max_head in range(min(measure, len(data)) - 2, max(measure, len(data)) + 3):
        record = same_requests(pieces, max_head=max_head)
        assert (record[-1] == ("error", 431)) is (max_head < measure), max_head


@pytest.mark.parametrize("first", [FIRST, dict(DECLINED)["chunked-body"]], ids=["plain", "declined"])
def test_over_long_head_pipelined_in_the_same_read(first: bytes) -> None:
    """An over-long head arriving in the same read as the end of an earlier request: 431 after
    the earlier one is served, whether the lane or llhttp read that one."""
    long_head = get(b"/long", *[b"X-Pad-%d: %s" % (i, b"p" * 250) for i in range(40)])
    assert head_measure(long_head) > MAX_HEAD and len(field_lines(long_head)) < MAX_COUNT
    record = same_requests([first + long_head + LAST])
    assert kinds(record)[-2:] == ["end", "error"] and record[-1] == ("error", 431)
    assert len(heads(record)) == 1


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(b"", id="plain"),
        pytest.param(b"Keep-Alive: timeout=5\r\n", id="hop-by-hop"),
        pytest.param(b"X-Forwarded-For: 192.0.2.1\r\n", id="forwarding"),
        pytest.param(b"Connection: keep-alive\r\n", id="connection"),
        pytest.param(b"Expect: 100-continue\r\n", id="expect-counted-once"),
    ],
)
@pytest.mark.parametrize("placement", ["alone", "behind-another"])
def test_max_header_count(extra: bytes, placement: str) -> None:
    """Exactly max_header_count fields are served, one more is 431, lane on and off."""
    data = b"GET /c HTTP/1.1\r\n" + H + extra + b"".join(b"X-%d: v\r\n" % i for i in range(8)) + b"\r\n"
    count = len(field_lines(data))
    pieces = [data] if placement == "alone" else [FIRST + data]
    assert same_requests(pieces, max_count=count)[-1] == ("end", None)
    assert same_requests(pieces, max_count=count - 1)[-1] == ("error", 431)


# -- the lane is really there ------------------------------------------------------------------


def test_the_lane_is_built() -> None:
    """Without the C extension every test above compares llhttp with itself: make sure it is not."""
    assert wire.AVAILABLE


@pytest.mark.parametrize("fast", [True, False], ids=["lane-on", "lane-off"])
def test_the_reader_takes_the_lane(fast: bool) -> None:
    """The reader calls the lane for each plain head (and not at all when it is off)."""
    taken: list[bool] = []

    def spy(data: bytes, start: int, max_head: int, max_fields: int) -> ScannedRequest | None:
        scanned = wire.scan_request(data, start, max_head, max_fields)
        taken.append(scanned is not None)
        return scanned

    data = b"".join(data for _, data in PLAIN)
    sink = RequestRecorder()
    parser = RequestParser(sink, MAX_HEAD, MAX_COUNT, fast_lane=fast)
    parser._scan = spy
    parser.feed(data)
    assert len(heads(sink.events)) == len(PLAIN)
    assert taken == ([True] * len(PLAIN) if fast else [])


@pytest.mark.parametrize("data", cases(PLAIN))
def test_scan_request_takes_plain_heads(data: bytes) -> None:
    scanned = wire.scan_request(data + LAST, 0, MAX_HEAD, MAX_COUNT)
    assert scanned is not None
    end, method, target, path, query, length, fields = scanned
    assert end + max(length, 0) == len(data) and data.startswith(method + b" " + target + b" HTTP/1.1\r\n")
    assert path + (b"?" + query if b"?" in target else b"") == target
    assert fields == field_lines(data)
    # From an offset, as the reader calls it for the next request in a buffer.
    assert wire.scan_request(FIRST + data, len(FIRST), MAX_HEAD, MAX_COUNT) == (
        len(FIRST) + end,
        *scanned[1:],
    )


@pytest.mark.parametrize("data", cases(DECLINED))
def test_scan_request_declines(data: bytes) -> None:
    assert wire.scan_request(data, 0, MAX_HEAD, MAX_COUNT) is None
    assert wire.scan_request(FIRST + data, len(FIRST), MAX_HEAD, MAX_COUNT) is None


def test_scan_request_declines_incomplete_and_over_limits() -> None:
    data = dict(PLAIN)["browser"]
    assert all(wire.scan_request(data[:cut], 0, MAX_HEAD, MAX_COUNT) is None for cut in range(len(data)))
    assert wire.scan_request(data, 0, len(data), MAX_COUNT) is not None  # raw bytes and measure fit
    assert wire.scan_request(data, 0, len(data) - 1, MAX_COUNT) is None  # raw bytes over
    fields = len(field_lines(data))
    assert wire.scan_request(data, 0, MAX_HEAD, fields) is not None
    assert wire.scan_request(data, 0, MAX_HEAD, fields - 1) is None


class FailingSink(RequestSink):
    """A sink that fails on the second head (a bug behind the reader, in the exchange say)."""

    def __init__(self) -> None:
        self.heads = 0

    def on_request_head(self, head: ParsedRequest) -> None:
        self.heads += 1
        if self.heads == 2:
            raise RuntimeError("a bug behind the reader")

    def on_request_body(self, data: bytes) -> None:
        pass

    def on_request_end(self) -> None:
        pass


@pytest.mark.parametrize("fast", [True, False], ids=["lane-on", "lane-off"])
def test_an_error_behind_the_reader_is_a_400_not_a_traceback(fast: bool) -> None:
    """What the client gets is the reader's answer (400, then the connection closes), lane or not."""
    parser = RequestParser(FailingSink(), MAX_HEAD, MAX_COUNT, fast_lane=fast)
    with pytest.raises(ProtocolError) as raised:
        parser.feed(FIRST + MIDDLE)
    assert raised.value.status == 400
