"""A cached response as stored: the head it is sent with, its age, and its byte layout.

The layout checks read the bytes at the offsets docs/cache-layout.md gives, as a reader in
another language would: if one fails, the document and every foreign reader are wrong too.
"""

from __future__ import annotations

import struct

import pytest

from sidegate.cache.entry import MUST_REVALIDATE, NO_CACHE, CorruptEntry, Entry


def build(
    status: int = 200,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"hello",
    **numbers: float,
) -> Entry:
    fields = headers if headers is not None else [(b"Content-Type", b"text/plain")]
    return Entry.build(
        status,
        fields,
        body,
        response_time=numbers.get("response_time", 1000.0),
        initial_age=numbers.get("initial_age", 0.0),
        freshness=numbers.get("freshness", 60.0),
        stale_while_revalidate=numbers.get("swr", 0.0),
        stale_if_error=numbers.get("sie", 0.0),
        flags=int(numbers.get("flags", 0)),
        tags=("users", "user-7"),
    )


def test_the_head_is_ready_to_send_without_hop_by_hop_or_per_hit_fields() -> None:
    entry = build(
        headers=[
            (b"Content-Type", b"application/json"),
            (b"Connection", b"close, X-Trace"),
            (b"X-Trace", b"abc"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Content-Length", b"999"),
            (b"Age", b"30"),
            (b"X-Cache", b"MISS"),
            (b"Cache-Status", b"origin; fwd=miss"),
            (b"ETag", b' "v1" '),
        ],
        body=b"{}",
    )
    assert entry.head == (
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: "v1"\r\nContent-Length: 2\r\n'
    )
    assert entry.headers == [(b"Content-Type", b"application/json"), (b"ETag", b'"v1"')]
    assert (entry.etag, entry.last_modified) == (b'"v1"', None)


def test_bodyless_statuses_carry_no_content_length() -> None:
    entry = build(204, [(b"Last-Modified", b"Tue, 01 Dec 2026 00:00:00 GMT")], b"")
    assert entry.head == b"HTTP/1.1 204 No Content\r\nLast-Modified: Tue, 01 Dec 2026 00:00:00 GMT\r\n"
    assert entry.last_modified == b"Tue, 01 Dec 2026 00:00:00 GMT"


@pytest.mark.parametrize(
    ("status", "headers", "tag", "message"),
    [
        (101, [], "t", "final responses"),
        (200, [(b"X-Bad", b"a\r\nSet-Cookie: x=1")], "t", "control character"),
        (200, [(b"Bad Name", b"v")], "t", "not a token"),
        (200, [], "two\nlines", "newline"),
        (200, [], "", "non-empty"),
    ],
)
def test_build_refuses_what_would_corrupt_the_head_or_the_tags(
    status: int, headers: list[tuple[bytes, bytes]], tag: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Entry.build(status, headers, b"", response_time=0, initial_age=0, freshness=1, tags=(tag,))


def test_encode_decode_round_trip_keeps_every_field() -> None:
    entry = build(freshness=120.5, initial_age=3.25, swr=30, sie=600, flags=MUST_REVALIDATE | NO_CACHE)
    again = Entry.decode(entry.encode())
    assert again == entry
    assert Entry.decode(memoryview(entry.encode())) == entry  # LMDB hands out buffers


def test_value_layout_matches_the_documented_offsets() -> None:
    entry = build(
        response_time=1_700_000_000.5, initial_age=2.0, freshness=60.0, swr=10, sie=20, flags=NO_CACHE
    )
    raw = entry.encode()
    assert raw[0:4] == b"SGC1"
    assert struct.unpack_from("<H", raw, 4)[0] == 200
    assert struct.unpack_from("<H", raw, 6)[0] == NO_CACHE
    assert struct.unpack_from("<5d", raw, 8) == (1_700_000_000.5, 2.0, 60.0, 10.0, 20.0)
    head_len, body_len, tags_len, reserved = struct.unpack_from("<4I", raw, 48)
    assert (head_len, body_len, reserved) == (len(entry.head), 5, 0)
    assert raw[64 : 64 + head_len] == entry.head
    assert raw[64 + head_len : 64 + head_len + body_len] == b"hello"
    assert raw[64 + head_len + body_len :] == b"users\nuser-7"
    assert len(raw) == 64 + head_len + body_len + tags_len


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[:40],  # truncated header
        lambda raw: b"XXXX" + raw[4:],  # foreign magic
        lambda raw: raw[:-1],  # lengths do not add up
        lambda raw: raw + b"!",
        lambda raw: raw[:64] + b"JUNK" + raw[68:],  # no status line
        lambda raw: raw[:-12] + b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4",  # tags not UTF-8
        lambda raw: b"",
    ],
)
def test_damaged_values_raise_corrupt_entry(damage: object) -> None:
    raw = build().encode()
    assert callable(damage)
    with pytest.raises(CorruptEntry):
        Entry.decode(damage(raw))


def test_age_counts_from_the_response_and_its_initial_age() -> None:
    entry = build(response_time=1000.0, initial_age=5.0, freshness=60.0)
    assert entry.age(1000.0) == 5.0
    assert entry.age(1030.0) == 35.0
    assert entry.age(990.0) == 5.0  # a clock behind the writer's never makes it younger
    assert entry.fresh(1054.9)
    assert not entry.fresh(1055.0)


def test_no_cache_entries_are_never_fresh() -> None:
    entry = build(freshness=3600.0, flags=NO_CACHE)
    assert not entry.fresh(1000.0)
