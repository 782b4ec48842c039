"""Partial content in the shared cache (RFC 9111 3.3-3.4), through a real Sidegate and a real app
that answers Range requests: 206s stored as pieces, reused for the ranges they hold, and joined
into the full response when they add up."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate.cache.client import SharedCache
from support.cache import app_saw, fetch, q, start
from support.gateway import GatewayFactory, GatewayProcess, OriginProcess, Response

pytestmark = pytest.mark.timeout(60)

BODY = "0123456789abcdefghij"  # 20 bytes, the same on every answer (origin_ranges.py)


@pytest.fixture
def gw(gateway: GatewayFactory, tmp_path: Path) -> GatewayProcess:
    return start(gateway, tmp_path)


def ranged(gw: GatewayProcess, url: str, spec: str, **headers: str) -> Response:
    return fetch(gw, url, {"Range": "bytes=" + spec, **headers})


def url_of(path: str, cc: str = "max-age=60", **args: str) -> str:
    return f"/cache/{path}?" + q(cc=cc, ranges="r1", body=BODY, **args)


def test_a_206_is_stored_and_answers_the_ranges_it_holds(gw: GatewayProcess, origin: OriginProcess) -> None:
    url = url_of("piece")
    first = ranged(gw, url, "2-9")
    inside = ranged(gw, url, "3-6")
    assert (first.status, first.body, first.headers.get("X-Cache")) == (206, BODY[2:10].encode(), "MISS")
    assert (inside.status, inside.body, inside.headers.get("X-Cache")) == (206, BODY[3:7].encode(), "HIT")
    assert inside.headers.get("Content-Range") == "bytes 3-6/20"
    assert inside.headers.get("ETag") == '"r1"'
    assert int(inside.headers.get("Age", "-1")) >= 0
    assert app_saw(origin, "/cache/piece") == 1
    beyond = ranged(gw, url, "8-12")  # not all of it is stored
    assert (beyond.status, beyond.body, beyond.headers.get("X-Cache")) == (206, BODY[8:13].encode(), "MISS")
    whole = fetch(gw, url)  # a piece never answers for the whole
    assert (whole.status, whole.headers.get("X-Cache")) == (200, "MISS")
    assert app_saw(origin, "/cache/piece") == 3


def test_pieces_that_add_up_become_the_full_response(
    gw: GatewayProcess, origin: OriginProcess, tmp_path: Path
) -> None:
    url = url_of("whole")
    ranged(gw, url, "0-7")
    ranged(gw, url, "12-19")
    across = ranged(gw, url, "6-13")  # overlaps both: the three join, every byte is there
    assert across.headers.get("X-Cache") == "MISS"
    whole = fetch(gw, url)
    assert (whole.status, whole.body, whole.headers.get("X-Cache")) == (200, BODY.encode(), "HIT")
    assert whole.headers.get("Content-Range") is None
    assert whole.headers.get("Content-Length") == "20"
    tail = ranged(gw, url, "-5")
    assert (tail.status, tail.body, tail.headers.get("X-Cache")) == (206, BODY[-5:].encode(), "HIT")
    assert app_saw(origin, "/cache/whole") == 3
    with SharedCache(tmp_path / "cache") as cache:
        assert cache.stats().entries == 1  # the whole entry; the pieces went
        stored = cache.get("http://example.com" + url)
        assert stored is not None and (stored.status, stored.body) == (200, BODY.encode())


def test_pieces_of_another_representation_are_never_joined(gw: GatewayProcess, origin: OriginProcess) -> None:
    url = url_of("changed", changeafter="1")  # from the second answer on, another representation
    ranged(gw, url, "0-9")
    newer = ranged(gw, url, "10-19")
    assert newer.headers.get("ETag") == '"r1-2"'
    again = ranged(gw, url, "0-9")  # the first piece went: it was of the old representation
    assert (again.headers.get("X-Cache"), again.body) == ("MISS", BODY.upper()[:10].encode())
    whole = fetch(gw, url)  # the two pieces of the new one joined, never old and new stitched
    assert (whole.status, whole.body, whole.headers.get("X-Cache")) == (200, BODY.upper().encode(), "HIT")
    assert whole.headers.get("ETag") == '"r1-2"'
    assert app_saw(origin, "/cache/changed") == 3


def test_a_piece_and_the_client_s_own_rules(gw: GatewayProcess) -> None:
    url = url_of("rules")
    ranged(gw, url, "0-9")
    assert ranged(gw, url, "2-5", **{"If-Range": '"other"'}).headers.get("X-Cache") == "MISS"
    assert ranged(gw, url, "2-5", **{"If-Range": '"r1"'}).headers.get("X-Cache") == "HIT"
    assert ranged(gw, url, "2-5", **{"Cache-Control": "no-cache"}).headers.get("X-Cache") == "MISS"
    stale = url_of("stale", cc="max-age=0")
    ranged(gw, stale, "0-9")
    assert ranged(gw, stale, "2-5").headers.get("X-Cache") == "MISS"  # a stale piece is fetched again


def test_several_ranges_pass_through_uncached(gw: GatewayProcess, origin: OriginProcess) -> None:
    url = url_of("multi")
    first = ranged(gw, url, "0-1,5-6")
    assert first.status == 206
    assert (first.headers.get("Content-Type") or "").startswith("multipart/byteranges")
    assert ranged(gw, url, "0-1,5-6").headers.get("X-Cache") == "MISS"
    assert ranged(gw, url, "0-1").headers.get("X-Cache") == "MISS"
    assert app_saw(origin, "/cache/multi") == 3


def test_a_piece_counts_toward_the_store_and_goes_with_its_url(gw: GatewayProcess, tmp_path: Path) -> None:
    url = url_of("counted")
    ranged(gw, url, "0-9")
    with SharedCache(tmp_path / "cache") as cache:
        stats = cache.stats()
        assert (stats.entries, stats.bytes > 10) == (1, True)
        assert cache.get("http://example.com" + url, allow_stale=True) is None  # the app sees no piece
    assert fetch(gw, url, method="POST", body=b"{}").status == 200  # invalidates the URL
    assert ranged(gw, url, "2-5").headers.get("X-Cache") == "MISS"
