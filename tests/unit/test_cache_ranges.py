"""Partial content: the pure rules (Content-Range, strong validators, joining pieces) and the store's
pieces on a real LMDB environment (joined, completed, replaced, counted, purged)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sidegate.cache.answers import from_pieces, serve_piece
from sidegate.cache.entry import Entry
from sidegate.cache.pieces import span
from sidegate.cache.store import Store
from sidegate.http.messages import Headers
from sidegate.policy.cache_ranges import content_range, join_pieces, strong_validator
from sidegate.policy.cache_rules import Verdict, request_directives

URL = b"http://api.local/video"
BODY = bytes(range(100))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"bytes 0-9/20", (0, 9, 20)),
        (b"bytes 19-19/20", (19, 19, 20)),
        (b"  BYTES 5-9/10 ", (5, 9, 10)),
        (b"bytes 0-9/*", None),  # an unknown length can never be completed
        (b"bytes */20", None),  # the 416 form
        (b"bytes 10-9/20", None),
        (b"bytes 0-20/20", None),  # past the end
        (b"bytes -5/20", None),
        (b"items 0-9/20", None),
        (b"bytes 0-9", None),
        (b"bytes 0x-9/20", None),
    ],
)
def test_content_range_reads_one_byte_range_of_a_known_length(value: bytes, expected: object) -> None:
    assert content_range(value) == expected


def fields(*lines: str) -> Headers:
    return [(n.encode(), v.strip().encode()) for n, _, v in (line.partition(":") for line in lines)]


def test_a_strong_etag_or_an_old_enough_last_modified_is_a_strong_validator() -> None:
    date = "Date: Sun, 06 Nov 1994 08:49:37 GMT"
    older = "Last-Modified: Sun, 06 Nov 1994 08:00:00 GMT"
    same = "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT"
    assert strong_validator(fields('ETag: "v1"')) == b'etag:"v1"'
    assert strong_validator(fields('ETag: "v1"')) != strong_validator(fields('ETag: "v2"'))
    assert strong_validator(fields('ETag: W/"v1"')) is None  # weak: never combined
    assert strong_validator(fields('ETag: W/"v1"', older, date)) is None  # the ETag decides
    assert strong_validator(fields(older, date)) is not None
    assert strong_validator(fields(same, date)) is None  # within the same second
    assert strong_validator(fields(older)) is None  # no Date
    assert strong_validator(fields("Content-Type: text/plain")) is None


def test_a_new_piece_takes_in_the_pieces_it_overlaps_or_touches() -> None:
    stored = [(0, BODY[0:10]), (20, BODY[20:30]), (50, BODY[50:60])]
    assert join_pieces(stored, 10, BODY[10:20]) == (0, BODY[0:30], [0, 1])  # touches both sides
    assert join_pieces(stored, 25, BODY[25:52]) == (20, BODY[20:60], [1, 2])
    assert join_pieces(stored, 35, BODY[35:40]) == (35, BODY[35:40], [])  # apart from all
    assert join_pieces([], 5, b"abc") == (5, b"abc", [])


def test_where_pieces_overlap_the_new_bytes_win() -> None:
    assert join_pieces([(0, b"aaaaa")], 3, b"BBBB") == (0, b"aaaBBBB", [0])
    assert join_pieces([(2, b"aa")], 0, b"BBBBBB") == (0, b"BBBBBB", [0])


# --- the store's pieces ----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "cache", max_size=1 << 20)
    yield s
    s.close()


def piece(first: int, last: int, *, etag: str = '"v1"', complete: int = 100, t: float = 1000.0) -> Entry:
    headers = [(b"ETag", etag.encode()), (b"Content-Range", b"bytes %d-%d/%d" % (first, last, complete))]
    return Entry.build(206, headers, BODY[first : last + 1], response_time=t, initial_age=0, freshness=60)


def spans(store: Store) -> list[tuple[int, int, int] | None]:
    return [span(p) for p in store.pieces("", URL, [], 1000.0)]


def test_pieces_are_kept_apart_and_joined_when_they_meet(store: Store) -> None:
    assert store.store_piece("", URL, (), [], piece(0, 9)) is not None
    assert store.store_piece("", URL, (), [], piece(30, 39)) is not None
    assert spans(store) == [(0, 9, 100), (30, 39, 100)]
    joined = store.store_piece("", URL, (), [], piece(10, 29))
    assert joined is not None and joined.status == 206 and joined.body == BODY[0:40]
    assert spans(store) == [(0, 39, 100)]
    assert store.stats().entries == 1
    assert store.lookup("", URL, [], 1000.0) is None  # not a whole response yet


def test_pieces_that_cover_everything_become_the_whole_200(store: Store) -> None:
    store.store_piece("", URL, (), [], piece(0, 59))
    whole = store.store_piece("", URL, (), [], piece(40, 99, t=1001.0))
    assert whole is not None and (whole.status, whole.body) == (200, BODY)
    found = store.lookup("", URL, [], 1001.0)
    assert found is not None and found.body == BODY and found.response_time == 1001.0
    assert b"Content-Range" not in found.head and b"Content-Length: 100\r\n" in found.head
    assert store.pieces("", URL, [], 1000.0) == []
    assert store.stats().entries == 1


@pytest.mark.parametrize(
    "other", [piece(50, 59, etag='"v2"'), piece(50, 59, complete=200), piece(50, 59, etag='W/"v1"')]
)
def test_a_piece_that_cannot_be_joined_replaces_the_others(store: Store, other: Entry) -> None:
    store.store_piece("", URL, (), [], piece(0, 49))
    store.store_piece("", URL, (), [], other)
    assert spans(store) == [span(other)]
    assert store.lookup("", URL, [], 1000.0) is None


def test_a_stored_whole_response_takes_no_piece_and_storing_one_drops_the_pieces(store: Store) -> None:
    store.store_piece("", URL, (), [], piece(0, 9))
    full = Entry.build(200, [(b"ETag", b'"v1"')], BODY, response_time=1000.0, initial_age=0, freshness=60)
    assert store.store("", URL, (), [], full)
    assert store.pieces("", URL, [], 1000.0) == [] and store.stats().entries == 1
    assert store.store_piece("", URL, (), [], piece(10, 19)) is None
    assert store.stats().entries == 1


def test_pieces_belong_to_their_variant_and_go_with_their_url(store: Store) -> None:
    vary = (b"accept-encoding",)
    store.store_piece("", URL, vary, [(b"Accept-Encoding", b"gzip")], piece(0, 9))
    store.store_piece("", URL, vary, [(b"Accept-Encoding", b"br")], piece(0, 19))
    assert [span(p) for p in store.pieces("", URL, [(b"accept-encoding", b"GZIP")], 1000.0)] == [(0, 9, 100)]
    assert [span(p) for p in store.pieces("", URL, [(b"accept-encoding", b"br")], 1000.0)] == [(0, 19, 100)]
    assert store.stats().entries == 2
    assert store.invalidate("", URL) == 2
    assert store.stats().entries == 0 and store.stats().bytes == 0


def test_pieces_count_toward_the_quota_and_are_evicted_like_entries(tmp_path: Path) -> None:
    store = Store(tmp_path / "q", max_size=1 << 20, quotas={"small": 600})
    try:
        for i, url in enumerate((b"http://a/1", b"http://a/2", b"http://a/3")):
            stored = store.store_piece("small", url, (), [], piece(0, 99, complete=1000, t=1000.0 + i))
            assert stored is not None
        stats = store.stats()
        assert 0 < stats.partitions["small"] <= 600
        assert stats.evictions >= 1
        assert store.pieces("small", b"http://a/1", [], 1000.0) == []  # the oldest went first
        assert store.pieces("small", b"http://a/3", [], 1000.0) != []
    finally:
        store.close()


# --- answering a range from a piece ----------------------------------------------------------------


def answer(pieces: list[Entry], *request: str, now: float = 1010.0) -> tuple[int, int, Verdict] | None:
    headers = fields(*request)
    found = from_pieces(pieces, headers, request_directives(headers), now)
    return None if found is None else (found[1], found[2], found[4])


def test_the_piece_that_holds_the_whole_range_answers_it() -> None:
    pieces = [piece(0, 9), piece(50, 89)]
    assert answer(pieces, "Range: bytes=2-5") == (2, 5, Verdict.FRESH)
    assert answer(pieces, "Range: bytes=60-") is None  # 60-99: the piece ends at 89
    assert answer(pieces, "Range: bytes=55-70") == (55, 70, Verdict.FRESH)
    assert answer(pieces, "Range: bytes=5-55") is None  # across a hole
    assert answer([piece(90, 99)], "Range: bytes=-4") == (96, 99, Verdict.FRESH)
    assert answer(pieces, "Range: bytes=0-1, 4-5") is None  # several ranges: the app's
    assert answer(pieces, "Range: bytes=100-") is None  # past the end: the app says 416
    assert answer(pieces) is None


def test_a_piece_answers_only_when_if_range_and_freshness_allow() -> None:
    pieces = [piece(0, 9)]
    assert answer(pieces, "Range: bytes=2-5", 'If-Range: "v1"') is not None
    assert answer(pieces, "Range: bytes=2-5", 'If-Range: "v0"') is None
    assert answer(pieces, "Range: bytes=2-5", now=1061.0) is None  # stale after its 60 s
    stale_ok = answer(pieces, "Range: bytes=2-5", "Cache-Control: max-stale=30", now=1070.0)
    assert stale_ok == (2, 5, Verdict.STALE_OK)
    assert answer(pieces, "Range: bytes=2-5", "Cache-Control: no-cache") is None


def test_the_answer_is_a_206_of_the_bytes_asked_for() -> None:
    ready = serve_piece(piece(50, 89), 55, 60, 12.7, b"X-Cache: HIT\r\n")
    assert (ready.status, ready.body) == (206, BODY[55:61])
    assert ready.head.startswith(b'HTTP/1.1 206 Partial Content\r\nETag: "v1"\r\n')
    assert ready.head.endswith(
        b"Content-Range: bytes 55-60/100\r\nContent-Length: 6\r\nAge: 12\r\nX-Cache: HIT\r\n"
    )
    assert ready.head.count(b"Content-Range") == 1


def test_a_piece_served_moves_in_the_lru_like_an_entry(tmp_path: Path) -> None:
    probe = Store(tmp_path / "probe", max_size=1 << 20)
    try:
        probe.store_piece("", b"http://a/size", (), [], piece(0, 99, complete=1000))
        size = probe.stats().bytes
    finally:
        probe.close()
    store = Store(tmp_path / "lru", max_size=1 << 20, quotas={"p": size * 5 // 2})  # room for two
    try:
        store.store_piece("p", b"http://a/read", (), [], piece(0, 99, complete=1000, t=1000.0))
        store.store_piece("p", b"http://a/idle", (), [], piece(0, 99, complete=1000, t=1001.0))
        assert store.pieces("p", b"http://a/read", [], 1005.0) != []  # read: now the most recent
        store.store_piece("p", b"http://a/new", (), [], piece(0, 99, complete=1000, t=1002.0))
        left = {url: bool(store.pieces("p", url, [], 1006.0)) for url in (b"http://a/read", b"http://a/idle")}
        assert left == {b"http://a/read": True, b"http://a/idle": False}
    finally:
        store.close()
