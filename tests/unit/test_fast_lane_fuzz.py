"""A seeded differential fuzz of the fast lane: it must never change what the readers report.

The other fast-lane tests (tests/unit/test_fast_lane_*.py) hold hand-picked shapes; this one makes
many more from a fixed seed, so it is deterministic and bounded. Valid requests and responses
(plain, with bodies, browser-like, long lines, pipelines, and shapes the lane leaves to llhttp)
are mutated byte by byte and line by line, then read with the lane on and off, whole and cut in
two, sometimes with small limits: the records must be equal (see tests/support/fast_lane.py). A
difference is shrunk to a small reproducer before the test fails with it.

The C scans and ``join_head`` are also called directly, on garbage, on every prefix of valid heads
and from every kind of offset: they must answer None or a well-formed tuple, never crash.

``FAST_LANE_FUZZ_CASES`` scales every loop (the default keeps the file at about three seconds);
``FAST_LANE_FUZZ_SEED`` changes the seed. A longer hunt, outside the suite::

    FAST_LANE_FUZZ_CASES=400000 .venv/bin/pytest -q -p no:cacheprovider --timeout=0 \\
        tests/unit/test_fast_lane_fuzz.py
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import pytest

from sidegate.http import wire
from sidegate.http.response_parser import MAX_RESPONSE_HEAD
from support.fast_lane import (
    EOF,
    MAX_COUNT,
    MAX_HEAD,
    Expect,
    Record,
    Step,
    field_lines,
    read_requests,
    read_responses,
)

SEED = int(os.environ.get("FAST_LANE_FUZZ_SEED", "20260611"))
CASES = int(os.environ.get("FAST_LANE_FUZZ_CASES", "8000"))  # mutated requests; the rest scale with it

# The malformed requests of the end-to-end framing tests and the hand-picked shapes of the request
# tests, as more seeds for the mutations (tests/ is on sys.path under pytest).
_framing = importlib.import_module("integration.test_framing")
_requests = importlib.import_module("unit.test_fast_lane_requests")
MALFORMED: list[bytes] = [case[1] for case in _framing.HEAD_CASES]
HAND_PICKED: list[bytes] = [
    data for _, data in [*_requests.PLAIN, *_requests.DECLINED, *_requests.TAKEN_REJECTED]
]

# -- building blocks ---------------------------------------------------------------------------

PATH_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%"
VALUE_CHARS = bytes(range(0x21, 0x7F))
TOKEN_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~"
INTERESTING = [bytes([byte]) for byte in b"\r\n\t :\x00\x7f\x80\xff#?/.,"]
HOSTS = [b"example.com", b"localhost:8080", b"Example.COM:8443", b"[::1]:80", b"10.0.0.1", b"a.b.c"]
METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]
COMMON_FIELDS = [
    b"Accept: */*",
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    b"Accept-Language: en-US,en;q=0.5",
    b"Accept-Encoding: gzip, deflate, br, zstd",
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    b"Referer: https://www.example.com/",
    b"Connection: keep-alive",
    b"Upgrade-Insecure-Requests: 1",
    b"Sec-Fetch-Dest: document",
    b"Sec-Fetch-Mode: navigate",
    b"Sec-Fetch-Site: same-origin",
    b"Sec-Fetch-User: ?1",
    b"Priority: u=0, i",
    b"Pragma: no-cache",
    b"Cache-Control: no-cache",
    b"X-Request-Id: 7f1c2b3a-0000-4bcd-8000-1234567890ab",
    b"X-Forwarded-For: 10.0.0.1, 10.0.0.2",
    b"X-Forwarded-Proto: https",
    b"Forwarded: for=192.0.2.60;proto=http",
    b"Via: 1.1 edge",
    b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    b"Expect: 100-continue",
    b"Keep-Alive: timeout=5",
    b"TE: trailers",
    b"X-Empty:",
    b"X-Tab:\tvalue",
    b"x-lower: v",
    b"Content-Type: application/json",
]


def word(rng: random.Random, chars: bytes, low: int, high: int) -> bytes:
    return bytes(rng.choice(chars) for _ in range(rng.randint(low, high)))


def long_line(rng: random.Random) -> bytes:
    """A Cookie or Authorization line of 90-400 bytes, now and then with a space or tab inside, or
    a byte no plain value has (read 16 bytes at a time by the lane: anywhere in a 16-byte block)."""
    name = rng.choice([b"Cookie", b"Authorization", b"X-Token", b"Set-Cookie"])
    prefix = name + b": " + (b"Bearer " if name == b"Authorization" else b"")
    value = bytearray(rng.choice(PATH_CHARS) for _ in range(rng.randint(90, 400) - len(prefix)))
    if rng.random() < 0.3:
        value[rng.randrange(1, len(value) - 1)] = rng.choice(b" \t")
    if rng.random() < 0.1:
        value[rng.randrange(1, len(value))] = rng.choice(b"\x00\x7f\x80\xff\r\n")
    return prefix + bytes(value)


def target(rng: random.Random) -> bytes:
    path = b"".join(b"/" + word(rng, PATH_CHARS, 0, 12) for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.4:
        path += b"?" + b"&".join(
            word(rng, PATH_CHARS, 1, 8) + b"=" + word(rng, PATH_CHARS, 0, 8) for _ in range(3)
        )
    return path


def head(method: bytes, path: bytes, lines: Sequence[bytes], version: bytes = b"HTTP/1.1") -> bytes:
    return (
        method + b" " + path + b" " + version + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    )


def host_line(rng: random.Random) -> bytes:
    return rng.choice([b"Host: ", b"Host:", b"host: ", b"HOST: "]) + rng.choice(HOSTS)


def random_field(rng: random.Random) -> bytes:
    """A field line of any token name and any plain value."""
    return word(rng, TOKEN_CHARS, 1, 20) + rng.choice([b": ", b":", b":\t"]) + word(rng, VALUE_CHARS, 0, 40)


def plain_get(rng: random.Random) -> bytes:
    lines = [host_line(rng), *rng.sample(COMMON_FIELDS, rng.randint(0, 4))]
    lines += [random_field(rng) for _ in range(rng.choice([0, 0, 1, 3]))]
    rng.shuffle(lines)
    return head(rng.choice(METHODS), target(rng), lines)


def with_body(rng: random.Random) -> bytes:
    body = rng.randbytes(rng.randint(0, 40)) if rng.random() < 0.3 else word(rng, PATH_CHARS + b"\r\n", 0, 40)
    length = b"%d" % len(body)
    if rng.random() < 0.2:
        length = b"0" * rng.randint(1, 3) + length
    lines = [host_line(rng), b"Content-Length: " + length, *rng.sample(COMMON_FIELDS, rng.randint(0, 3))]
    rng.shuffle(lines)
    return head(rng.choice([b"POST", b"PUT", b"PATCH", b"GET"]), target(rng), lines) + body


def browser(rng: random.Random) -> bytes:
    lines = [host_line(rng), *rng.sample(COMMON_FIELDS, rng.randint(10, 20))]
    lines += [long_line(rng) for _ in range(rng.randint(0, 2))]
    rng.shuffle(lines)
    return head(b"GET", target(rng), lines)


def with_long_lines(rng: random.Random) -> bytes:
    lines = [host_line(rng), *(long_line(rng) for _ in range(rng.randint(1, 4)))]
    rng.shuffle(lines)
    return head(rng.choice(METHODS), target(rng), lines)


def declined_shape(rng: random.Random) -> bytes:
    """A request the lane leaves to llhttp (or the reader rejects): read mixed with plain ones."""
    host = host_line(rng)
    choices: list[Callable[[], bytes]] = [
        lambda: head(b"POST", b"/c", [host, b"Transfer-Encoding: chunked"]) + b"5\r\nhello\r\n0\r\n\r\n",
        lambda: head(b"GET", b"/old", [host], b"HTTP/1.0"),
        lambda: head(b"GET", b"/old", [host, b"Connection: keep-alive"], b"HTTP/1.0"),
        lambda: head(b"GET", b"/", [host, b"Connection: close"]),
        lambda: head(b"GET", b"/", [host, b"Connection: keep-alive, X-Secret", b"X-Secret: s"]),
        lambda: head(b"GET", b"/", [host, b"Proxy-Connection: keep-alive"]),
        lambda: (
            head(b"GET", b"/chat", [host, b"Upgrade: websocket", b"Connection: Upgrade"]) + b"\x81\x85abc"
        ),
        lambda: head(b"GET", b"/", [host, b"Upgrade: h2c"]),
        lambda: head(b"GET", b"http://origin.example:8080/p?q=1", [host]),
        lambda: head(b"GET", b"/a/b/../c/./d", [host]),
        lambda: head(b"GET", b"/page?x=1#frag", [host]),
        lambda: head(b"GET", b"/", [host, b"X-A: value \t "]),
        lambda: head(b"GET", b"/", [host, b"X-Name: Caf\xc3\xa9"]),
        lambda: head(b"PURGE", b"/cache/x", [host]),
        lambda: head(b"OPTIONS", b"*", [host]),
        lambda: head(b"POST", b"/n", [host, b"Content-Length: %016d" % 3]) + b"abc",
        lambda: head(b"POST", b"/n", [host, b"Content-Length: 3", b"Content-Length: 3"]) + b"abc",
        lambda: head(b"GET", b"/", [b"X-A: 1"]),
    ]
    return rng.choice(choices)()


def one_request(rng: random.Random) -> bytes:
    pick = rng.random()
    if pick < 0.25:
        return plain_get(rng)
    if pick < 0.45:
        return with_body(rng)
    if pick < 0.6:
        return browser(rng)
    if pick < 0.72:
        return with_long_lines(rng)
    if pick < 0.85:
        return declined_shape(rng)
    if pick < 0.95:
        return rng.choice(HAND_PICKED)
    return rng.choice(MALFORMED)


def request_seed(rng: random.Random) -> bytes:
    if rng.random() < 0.35:
        return b"".join(one_request(rng) for _ in range(rng.randint(2, 4)))
    return one_request(rng)


# Responses: status lines, fields, framing.
RESPONSE_FIELDS = [
    b"Content-Type: text/plain",
    b"Date: Tue, 01 Dec 2026 10:00:00 GMT",
    b'ETag: "abc"',
    b"Server: origin/1.0",
    b"Cache-Control: max-age=60",
    b"Via: 1.1 a",
    b"Keep-Alive: timeout=5",
    b"Upgrade: h2c",
    b"X-Request-Id: up-1",
    b"Vary: Accept-Encoding",
    b"X-Empty:",
    b"Trailer: X-T",
]
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
STATUSES = [
    b"200 OK",
    b"201 Created",
    b"204 No Content",
    b"206 Partial Content",
    b"304 Not Modified",
    b"404 Not Found",
    b"500 Internal Server Error",
    b"599 Odd",
    b"200 ",
    b"200",
    b"600 Odd",
]


def one_response(rng: random.Random) -> bytes:
    version = b"HTTP/1.0" if rng.random() < 0.08 else b"HTTP/1.1"
    lines = rng.sample(RESPONSE_FIELDS, rng.randint(0, 4))
    if rng.random() < 0.2:
        lines.append(long_line(rng))
    if rng.random() < 0.02:  # fields around the 64 KiB bound on a response head
        lines.append(b"X-Pad: " + b"p" * (MAX_RESPONSE_HEAD + rng.randint(-300, 100)))
    if rng.random() < 0.25:
        lines.append(
            b"Connection: " + rng.choice([b"keep-alive", b"Keep-Alive", b"close", b"upgrade", b"X-Secret"])
        )
    status = rng.choice(STATUSES)
    framing = rng.random()
    body = word(rng, PATH_CHARS + b"\r\n", 0, 30)
    if status[:3] in (b"204", b"304") and rng.random() < 0.8:
        body = b""  # what would be the body would be read as the next response: rarely sent
    if framing < 0.55:
        length = b"%d" % len(body)
        lines.append(
            b"Content-Length: " + (b"0" * rng.randint(1, 2) + length if rng.random() < 0.1 else length)
        )
    elif framing < 0.7:
        lines.append(b"Transfer-Encoding: chunked")
        body = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    elif framing < 0.75:
        lines += [b"Content-Length: %d" % len(body)] * 2
    rng.shuffle(lines)
    message = version + b" " + status + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body
    informational = rng.random()
    if informational < 0.08:
        message = b"HTTP/1.1 100 Continue\r\n\r\n" + message
    elif informational < 0.12:
        message = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + message
    elif informational < 0.14:
        message = SWITCHING + b"\x81\x05hello"  # a websocket frame after the head
    return message


# -- mutations ---------------------------------------------------------------------------------


def _field_lines(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each line with a colon, end at its CR (offsets into data)."""
    found: list[tuple[int, int]] = []
    start = 0
    while True:
        cr = data.find(b"\r\n", start)
        if cr < 0:
            return found
        if data.find(b":", start, cr) > start:
            found.append((start, cr))
        start = cr + 2


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One random mutation of ``data``."""
    if not data:
        return rng.choice(INTERESTING)
    buf = bytearray(data)
    at = rng.randrange(len(buf))
    kind = rng.randrange(13)
    if kind == 0:  # flip a bit
        buf[at] ^= 1 << rng.randrange(8)
    elif kind == 1:  # insert a random byte
        buf.insert(at, rng.randrange(256))
    elif kind == 2:  # delete a byte
        del buf[at]
    elif kind == 3:  # duplicate a byte
        buf.insert(at, buf[at])
    elif kind in (4, 5):  # insert an interesting byte
        buf[at:at] = rng.choice(INTERESTING)
    elif kind in (6, 7):  # duplicate or drop a line
        lines = bytes(buf).split(b"\r\n")
        index = rng.randrange(len(lines))
        if kind == 6:
            lines.insert(index, lines[index])
        elif len(lines) > 1:
            del lines[index]
        return b"\r\n".join(lines)
    elif kind == 8:  # change a Content-Length digit (or add, or remove one)
        lower = bytes(buf).lower()
        spots = [i + 16 for i in range(len(lower)) if lower.startswith(b"content-length: ", i)]
        digits = [i for i in spots if i < len(buf) and chr(buf[i]).isdigit()]
        if digits:
            spot = rng.choice(digits)
            action = rng.randrange(3)
            if action == 0:
                buf[spot] = rng.choice(b"0123456789")
            elif action == 1:
                buf.insert(spot, rng.choice(b"0123456789"))
            else:
                del buf[spot]
        else:
            buf[at] = rng.choice(b"0123456789")
    elif kind == 9:  # truncate anywhere
        del buf[at:]
    elif kind in (10, 11):  # change a name's case, or add whitespace after a value
        spans = _field_lines(bytes(buf))
        if not spans:
            buf[at:at] = b" "
        else:
            start, end = rng.choice(spans)
            if kind == 10:
                colon = buf.index(b":", start)
                name = bytes(buf[start:colon])
                buf[start:colon] = rng.choice([name.upper(), name.lower(), name.swapcase()])
            else:
                buf[end:end] = rng.choice([b" ", b"\t", b" \t ", b"  "])
    else:  # splice a piece of another valid request
        other = one_request(rng)
        cut = rng.randrange(len(other) + 1)
        buf[at:at] = other[:cut] if rng.random() < 0.5 else other[cut:]
    return bytes(buf)


def mutated(rng: random.Random, data: bytes) -> bytes:
    """``data`` with 0-3 mutations (mostly one or two)."""
    for _ in range(rng.choice([0, 1, 1, 1, 2, 2, 3])):
        data = mutate(rng, data)
    return data


def cut(rng: random.Random, data: bytes) -> list[bytes]:
    """``data`` in two pieces, now and then three (whole when too short to cut)."""
    if len(data) < 2:
        return [data]
    if len(data) > 2 and rng.random() < 0.1:
        first, second = sorted(rng.sample(range(1, len(data)), 2))
        return [data[:first], data[first:second], data[second:]]
    at = rng.randrange(1, len(data))
    return [data[:at], data[at:]]


# -- comparing and shrinking -------------------------------------------------------------------


def request_records(pieces: Sequence[bytes], max_head: int, max_count: int) -> tuple[Record, Record]:
    """The record with the lane on, and with it off (anything other than a ProtocolError out of
    the reader is a crash, and recorded so)."""
    records = []
    for fast in (True, False):
        try:
            records.append(read_requests(pieces, fast, max_head, max_count))
        except Exception as exc:  # a crash of the reader, not an answer to a client
            records.append([("raised", repr(exc))])
    return records[0], records[1]


def response_records(steps: Sequence[Step]) -> tuple[Record, Record]:
    records = []
    for fast in (True, False):
        try:
            records.append(read_responses(steps, fast))
        except Exception as exc:
            records.append([("raised", repr(exc))])
    return records[0], records[1]


def requests_differ(pieces: Sequence[bytes], max_head: int, max_count: int) -> bool:
    on, off = request_records(pieces, max_head, max_count)
    return on != off or any(kind == "raised" for kind, _ in on + off)


def responses_differ(steps: Sequence[Step]) -> bool:
    on, off = response_records(steps)
    return on != off or any(kind == "raised" for kind, _ in on + off)


def shrink_bytes(
    pieces: list[bytes], fails: Callable[[list[bytes]], bool], budget: int = 3000
) -> list[bytes]:
    """Fewer pieces and fewer bytes that still fail: drop pieces, then delete chunks of halving
    size from each piece (a bounded greedy delta debugging)."""
    tries = 0
    for index in reversed(range(len(pieces))):
        candidate = pieces[:index] + pieces[index + 1 :]
        if len(pieces) > 1 and fails(candidate):
            pieces = candidate
    changed = True
    while changed and tries < budget:
        changed = False
        for index in range(len(pieces)):
            size = max(len(pieces[index]) // 2, 1)
            while size >= 1 and tries < budget:
                piece = pieces[index]
                start = 0
                while start < len(piece) and tries < budget:
                    smaller = piece[:start] + piece[start + size :]
                    tries += 1
                    candidate = [*pieces[:index], smaller, *pieces[index + 1 :]]
                    if smaller and fails(candidate):
                        pieces, piece, changed = candidate, smaller, True
                    else:
                        start += size
                size //= 2
    return pieces


RUN = re.compile(r"(.)\1{19,}", re.DOTALL)


def short(text: str) -> str:
    """``text`` with long runs of one character written as <'p' x 65000>."""
    return RUN.sub(lambda match: f"<{match.group(1)!r} x {len(match.group(0))}>", text)


def smaller_limit(limit: int, fails: Callable[[int], bool]) -> int:
    """A smaller limit that still fails, trying big steps down first."""
    step = limit // 2
    while step:
        if limit - step >= 1 and fails(limit - step):
            limit -= step
        else:
            step //= 2
    return limit


def request_report(pieces: list[bytes], max_head: int, max_count: int) -> str:
    """The case shrunk (bytes, then limits, then bytes again), and both records."""
    if requests_differ(pieces, max_head, MAX_COUNT):
        max_count = MAX_COUNT
    for _ in range(2):
        pieces = shrink_bytes(pieces, partial(requests_differ, max_head=max_head, max_count=max_count))
        max_head = smaller_limit(max_head, partial(requests_differ, pieces, max_count=max_count))
        max_count = smaller_limit(max_count, partial(requests_differ, pieces, max_head))
    on, off = request_records(pieces, max_head, max_count)
    case = f"pieces={pieces!r} max_head={max_head} max_count={max_count}"
    return short(f"{case}\n  lane on:  {on!r}\n  lane off: {off!r}")


def shrink_steps(steps: list[Step]) -> list[Step]:
    for index in reversed(range(len(steps))):
        candidate = steps[:index] + steps[index + 1 :]
        if responses_differ(candidate):
            steps = candidate
    for index, step in enumerate(steps):
        if isinstance(step, bytes):

            def fails(pieces: list[bytes], index: int = index, steps: list[Step] = steps) -> bool:
                return responses_differ([*steps[:index], pieces[0], *steps[index + 1 :]])

            steps = [*steps[:index], shrink_bytes([step], fails, 1000)[0], *steps[index + 1 :]]
    return steps


def response_report(steps: list[Step]) -> str:
    small = shrink_steps(steps)
    on, off = response_records(small)
    return short(f"steps={small!r}\n  lane on:  {on!r}\n  lane off: {off!r}")


def fail_with(differ: int, first: str, total: int) -> None:
    if differ:
        pytest.fail(
            f"{differ} of {total} reads differ lane on vs off (or crash); the first, shrunk:\n{first}"
        )


# -- 1. requests -------------------------------------------------------------------------------


def limits(rng: random.Random) -> tuple[int, int]:
    pick = rng.random()
    if pick < 0.25:
        return rng.randint(16, 600), rng.randint(1, 20)
    if pick < 0.35:
        return rng.randint(16, 600), MAX_COUNT
    if pick < 0.45:
        return MAX_HEAD, rng.randint(1, 20)
    return MAX_HEAD, MAX_COUNT


def test_mutated_requests_read_the_same() -> None:
    rng = random.Random(SEED)
    differ = 0
    first = ""
    for _ in range(CASES):
        data = mutated(rng, request_seed(rng))
        max_head, max_count = limits(rng)
        for pieces in ([data], cut(rng, data)):
            if requests_differ(pieces, max_head, max_count):
                differ += 1
                first = first or request_report(list(pieces), max_head, max_count)
    fail_with(differ, first, 2 * CASES)


# -- 2. responses ------------------------------------------------------------------------------


def response_steps(rng: random.Random) -> list[Step]:
    """One to three exchanges (a request sent, then the response in one to three reads), now and
    then two sent before their responses come in one read, or the upstream closing at the end."""
    steps: list[Step] = []
    for _ in range(rng.randint(1, 3)):
        data = mutated(rng, one_response(rng)) if rng.random() < 0.6 else one_response(rng)
        if rng.random() < 0.1:  # two requests sent, both responses in one read
            steps += [Expect(rng.random() < 0.3), Expect(rng.random() < 0.3)]
            steps.append(data + mutated(rng, one_response(rng)))
            continue
        if rng.random() > 0.03:  # else unsolicited
            steps.append(Expect(rng.random() < 0.3))
        if data:
            steps += [data] if rng.random() < 0.4 else cut(rng, data)
    if rng.random() < 0.2:
        steps.append(EOF)
    return steps


def test_mutated_responses_read_the_same() -> None:
    rng = random.Random(SEED + 1)
    differ = 0
    first = ""
    for _ in range(CASES):
        steps = response_steps(rng)
        if responses_differ(steps):
            differ += 1
            first = first or response_report(steps)
    fail_with(differ, first, CASES)


# -- what the fuzz found ------------------------------------------------------------------------
# The smallest cases of a difference the fuzz finds. The readers count the bytes of a head still
# coming in (431 past max_head_size for requests, 502 past 64 KiB for responses) from the start
# of the read, and llhttp's path starts over at every message end within the read. With the lane
# on, the bytes the lane read are cut off the read first, but the count does not start over: a
# head that is still coming in behind a message the lane read counts its own bytes, where without
# the lane it counts none of them.


def test_partial_head_behind_a_request_the_lane_read() -> None:
    first = b"GET / HTTP/1.1\r\nHost:x\r\n\r\n"  # 26 bytes: the lane reads it whole
    partial = b"GET / HTTP/1.1\r\nHost: xyz\r\n"  # 27 bytes of a head that measures 12
    for pieces in ([first + partial], [first + partial, b"\r\n"]):
        on, off = request_records(pieces, 26, MAX_COUNT)
        assert on == off, pieces


def test_large_head_behind_a_response_the_lane_read() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    large = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * MAX_RESPONSE_HEAD + b"\r\nContent-Length: 0\r\n\r\n"
    on, off = response_records([Expect(), ok + large])
    assert on == off


# -- 3. the scans, called directly --------------------------------------------------------------


def check_fields(head_bytes: bytes, length: int, fields: list[tuple[bytes, bytes]]) -> None:
    """The fields are the head's own, each pair the bytes of its line (not a pair the lane kept
    for another line), and the Content-Length is the one there is."""
    assert isinstance(fields, list) and all(type(pair) is tuple and len(pair) == 2 for pair in fields)
    assert all(type(name) is bytes and type(value) is bytes for name, value in fields)
    assert fields == field_lines(head_bytes), head_bytes
    lengths = [int(value) for name, value in fields if name.lower() == b"content-length"]
    assert lengths == ([] if length == -1 else [length]), head_bytes


def check_request_scan(data: bytes, start: int, max_head: int, max_fields: int) -> None:
    scanned = wire.scan_request(data, start, max_head, max_fields)
    if scanned is None:
        return
    where = (data, start, max_head, max_fields)
    assert isinstance(scanned, tuple) and len(scanned) == 7, where
    end, method, target_, path, query, length, fields = scanned
    assert isinstance(end, int) and 0 <= start < end <= len(data), where
    assert end - start <= max_head and data[end - 4 : end] == b"\r\n\r\n", where
    assert method in METHODS and data.startswith(method + b" " + target_ + b" HTTP/1.1\r\n", start), where
    assert path + (b"?" + query if b"?" in target_ else b"") == target_, where
    assert isinstance(length, int) and length >= -1, where
    assert isinstance(fields, list) and len(fields) <= max(max_fields, 0), where
    check_fields(data[start:end], length, fields)
    # From an offset, the same as the same bytes from 0.
    assert wire.scan_request(data[start:], 0, max_head, max_fields) == (end - start, *scanned[1:]), where


def check_response_scan(data: bytes, start: int, max_head: int) -> None:
    scanned = wire.scan_response(data, start, max_head)
    if scanned is None:
        return
    where = (data, start, max_head)
    assert isinstance(scanned, tuple) and len(scanned) == 4, where
    end, status, length, fields = scanned
    assert isinstance(end, int) and 0 <= start < end <= len(data), where
    assert end - start <= max_head and data[end - 4 : end] == b"\r\n\r\n", where
    assert data.startswith(b"HTTP/1.1 %d " % status, start) and 200 <= status <= 599, where
    assert isinstance(length, int) and length >= -1, where
    check_fields(data[start:end], length, fields)
    assert wire.scan_response(data[start:], 0, max_head) == (end - start, *scanned[1:]), where


def some_starts(rng: random.Random, data: bytes) -> list[int]:
    """0, the end, past the end, before the start, and a few in between."""
    size = len(data)
    starts = [0, size, size + 1, size + rng.randint(2, 100), -1, -rng.randint(2, 100)]
    return starts + [rng.randint(0, size) for _ in range(3)]


def scan_limits(rng: random.Random) -> tuple[int, int]:
    return (
        rng.choice([MAX_HEAD, MAX_RESPONSE_HEAD, rng.randint(0, 600), 2**62, -1, 0, 4]),
        rng.choice([MAX_COUNT, rng.randint(0, 20), 0, 2**62, -1]),
    )


def garbage(rng: random.Random) -> bytes:
    pick = rng.random()
    if pick < 0.3:
        return rng.randbytes(rng.randint(0, 200))
    if pick < 0.6:  # head-like garbage: tokens, separators, CRLFs
        parts = [b"GET ", b"HTTP/1.1", b"HTTP/1.1 200 ", b"\r\n", b"\r\n\r\n", b": ", b":", b"/", b"?"]
        parts += [*INTERESTING, b"Content-Length: ", b"Host: a", b"Connection: keep-alive", b"0", b"9"]
        return b"".join(rng.choice(parts) for _ in range(rng.randint(0, 40)))
    return mutated(rng, rng.choice([request_seed(rng), one_response(rng)]))


def test_scans_on_garbage_and_offsets() -> None:
    rng = random.Random(SEED + 2)
    for _ in range(CASES // 2):
        data = garbage(rng)
        for start in some_starts(rng, data):
            max_head, max_fields = scan_limits(rng)
            check_request_scan(data, start, max_head, max_fields)
            check_response_scan(data, start, max_head)


def test_scans_on_every_prefix() -> None:
    """Every prefix of valid heads (pipelines too), each from a random offset: a scan that reads
    past what it was given would find a head in bytes that are not there."""
    rng = random.Random(SEED + 3)
    for _ in range(max(CASES // 100, 1)):
        request = request_seed(rng)
        response_data = one_response(rng)
        for data, check in ((request, True), (response_data, False)):
            for size in range(len(data) + 1):
                prefix = data[:size]  # a new bytes object: nothing of data lies past its end
                start = rng.choice([0, 0, size, size + 1, rng.randint(0, size)])
                max_head, max_fields = scan_limits(rng) if rng.random() < 0.3 else (MAX_HEAD, MAX_COUNT)
                if check:
                    check_request_scan(prefix, start, max_head, max_fields)
                else:
                    check_response_scan(prefix, start, max_head)


def test_scans_reject_wrong_arguments() -> None:
    call: Callable[..., object] = wire.scan_request
    call_response: Callable[..., object] = wire.scan_response
    wrong: list[tuple[Any, ...]] = [("GET", 0, 1, 1), (bytearray(b"GET"), 0, 1, 1), (b"x", "0", 1, 1)]
    wrong += [(b"x", 0, 1), (b"x", 0, 1.0, 1), (b"x", None, 1, 1)]
    for args in wrong:
        with pytest.raises(TypeError):
            call(*args)
    for args in [("HTTP", 0, 1), (b"x", 0), (b"x", None, 1), (memoryview(b"x"), 0, 1)]:
        with pytest.raises(TypeError):
            call_response(*args)
    for big in (2**64, -(2**64)):
        with pytest.raises(OverflowError):
            call(b"x", big, 1, 1)


# -- 4. join_head --------------------------------------------------------------------------------


def python_join(
    lead: Sequence[bytes], fields: Sequence[tuple[bytes, bytes]], trail: Sequence[bytes]
) -> bytes:
    return b"".join(lead) + b"".join(n + b": " + v + b"\r\n" for n, v in fields) + b"".join(trail)


def some_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(0, rng.choice([0, 3, 20, 300])))


def test_join_head_equals_the_python_join() -> None:
    rng = random.Random(SEED + 4)
    for _ in range(CASES // 4):
        lead = [some_bytes(rng) for _ in range(rng.randint(0, 4))]
        fields = [(some_bytes(rng), some_bytes(rng)) for _ in range(rng.randint(0, 30))]
        trail = [some_bytes(rng) for _ in range(rng.randint(0, 4))]
        assert wire.join_head(lead, fields, trail) == python_join(lead, fields, trail)
        assert wire.join_head(lead, fields, lead) == python_join(lead, fields, lead)  # one list twice


class Name(bytes):
    """A bytes subclass: the C join may refuse it (TypeError) or join it, never crash."""


def wrong_join_arguments(rng: random.Random) -> tuple[Any, Any, Any]:
    """Good arguments with one thing of a wrong type in them, or one of them not a list."""
    lead: Any = [b"HTTP/1.1 200 OK\r\n"]
    fields: Any = [(b"A", b"1"), (b"B", b"2")]
    trail: Any = [b"\r\n"]
    wrong: list[Any] = [
        "str",
        None,
        1,
        bytearray(b"x"),
        memoryview(b"x"),
        (b"x",),
        [b"x"],
        (b"a", b"b", b"c"),
        (b"a",),
        (),
        ("a", b"b"),
        (b"a", "b"),
        [b"a", b"b"],
        (b"a", None),
        (bytearray(b"a"), b"b"),
    ]
    kind = rng.randrange(6)
    if kind == 0:
        lead.insert(rng.randint(0, len(lead)), rng.choice(wrong))
    elif kind == 1:
        trail.insert(rng.randint(0, len(trail)), rng.choice(wrong))
    elif kind == 2:
        fields.insert(rng.randint(0, len(fields)), rng.choice(wrong))
    elif kind == 3:
        lead = rng.choice([tuple(lead), b"".join(lead), None, "s", iter(lead)])
    elif kind == 4:
        fields = rng.choice([tuple(fields), dict(fields), None, b"A: 1"])
    else:
        trail = rng.choice([tuple(trail), None, b"\r\n", {b"\r\n"}])
    return lead, fields, trail


def test_join_head_refuses_wrong_types() -> None:
    rng = random.Random(SEED + 5)
    join: Callable[..., bytes] = wire.join_head
    for _ in range(max(CASES // 20, 50)):
        with pytest.raises(TypeError):
            join(*wrong_join_arguments(rng))
    no_args: list[tuple[Any, ...]] = [(), ([],), ([], []), ([], [], [], [])]
    for args in no_args:
        with pytest.raises(TypeError):
            join(*args)
    # bytes subclasses: refused or joined as bytes, either way no crash and no other error.
    lead, fields, trail = [Name(b"L")], [(Name(b"N"), b"v")], [b"T"]
    with contextlib.suppress(TypeError):
        assert join(lead, fields, trail) == python_join(lead, fields, trail)
