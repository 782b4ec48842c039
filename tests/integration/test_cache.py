"""The shared cache through a real Sidegate and a real app: RFC 9111 rules a client can see."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from support.cache import app_saw, fetch, q, start
from support.gateway import GatewayFactory, GatewayProcess, OriginProcess, RawClient, Response, request

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def gw(gateway: GatewayFactory, tmp_path: Path) -> GatewayProcess:
    return start(gateway, tmp_path)


# -- storing and serving -----------------------------------------------------------------------


def test_a_fresh_response_is_served_from_the_cache(gw: GatewayProcess, origin: OriginProcess) -> None:
    url = "/cache/fresh?" + q(cc="max-age=60")
    first, second = fetch(gw, url), fetch(gw, url)
    assert (first.status, first.headers.get("X-Cache")) == (200, "MISS")
    assert (second.status, second.headers.get("X-Cache")) == (200, "HIT")
    assert second.body == first.body
    assert second.headers.get("Cache-Control") == "max-age=60"
    assert int(second.headers.get("Age", "-1")) >= 0
    assert second.headers.get("X-Request-Id")
    assert app_saw(origin, "/cache/fresh") == 1


@pytest.mark.parametrize(
    ("args", "stored"),
    [
        ({"cc": "max-age=0, s-maxage=60"}, True),  # a shared cache obeys s-maxage over max-age
        ({"cc": "public, max-age=60"}, True),
        ({"cc": "no-store, max-age=60"}, False),
        ({"cc": "private, max-age=60"}, False),
        ({"cc": "max-age=60", "cookie": "session=1"}, False),  # personal unless said public
        ({"cc": "public, max-age=60", "cookie": "theme=dark"}, True),
        ({"expires": "Thu, 01 Jan 2099 00:00:00 GMT", "date": "Thu, 01 Jan 2026 00:00:00 GMT"}, True),
        ({"expires": "Thu, 01 Jan 1998 00:00:00 GMT"}, False),
        ({"cc": "no-store", "cdn": "max-age=60"}, True),  # RFC 9213: the targeted field wins
        ({"cdn": "max-age=60", "sg": "no-store"}, False),  # ours wins over CDN-Cache-Control
        ({"cc": "max-age=60", "vary": "*"}, False),
        ({"status": "500", "lm": "Tue, 01 Dec 2026 00:00:00 GMT"}, False),  # not heuristically cacheable
        ({"cc": "max-age=60", "status": "404"}, True),
    ],
)
def test_what_is_stored_follows_rfc_9111(gw: GatewayProcess, args: dict[str, str], stored: bool) -> None:
    url = "/cache/rules?" + q(**args)
    first, second = fetch(gw, url), fetch(gw, url)
    assert second.headers.get("X-Cache") == ("HIT" if stored else "MISS")
    assert (second.body == first.body) is stored


def test_default_ttl_caches_responses_without_freshness(gateway: GatewayFactory, tmp_path: Path) -> None:
    gw = start(gateway, tmp_path, default_ttl=30)
    url = "/cache/ttl"
    assert fetch(gw, url).headers.get("X-Cache") == "MISS"
    assert fetch(gw, url).headers.get("X-Cache") == "HIT"


def test_a_request_with_authorization_is_stored_only_when_the_response_allows(gw: GatewayProcess) -> None:
    auth = {"Authorization": "Bearer secret"}
    private = "/cache/auth?" + q(cc="max-age=60")
    fetch(gw, private, auth)
    assert fetch(gw, private, auth).headers.get("X-Cache") == "MISS"
    public = "/cache/auth?" + q(cc="public, max-age=60")
    fetch(gw, public, auth)
    assert fetch(gw, public).headers.get("X-Cache") == "HIT"


def test_vary_keeps_one_entry_per_variant(gw: GatewayProcess, origin: OriginProcess) -> None:
    url = "/cache/vary?" + q(cc="max-age=60", vary="Accept-Language")
    en1, fr1 = fetch(gw, url, {"Accept-Language": "en"}), fetch(gw, url, {"Accept-Language": "fr"})
    en2, fr2 = fetch(gw, url, {"Accept-Language": "en"}), fetch(gw, url, {"Accept-Language": "fr"})
    assert en1.body != fr1.body
    assert (en2.body, fr2.body) == (en1.body, fr1.body)
    assert en2.headers.get("X-Cache") == fr2.headers.get("X-Cache") == "HIT"
    assert app_saw(origin, "/cache/vary") == 2


def test_key_options_of_a_route(gw: GatewayProcess, origin: OriginProcess) -> None:
    base = "/cachek/key?cc=max-age%3D60"
    first = fetch(gw, base + "&b=2&a=1&utm_source=mail", {"X-Variant": "one"})
    same = fetch(gw, base + "&a=1&b=2", {"X-Variant": "one"})  # sorted, tracking parameter ignored
    other = fetch(gw, base + "&a=1&b=2", {"X-Variant": "two"})  # a key header
    bypass = fetch(gw, base + "&a=1&b=2", {"X-Variant": "one", "X-No-Cache": "1"})
    assert same.headers.get("X-Cache") == "HIT" and same.body == first.body
    assert other.headers.get("X-Cache") == "MISS"
    assert bypass.headers.get("X-Cache") == "BYPASS" and bypass.body != first.body
    assert app_saw(origin, "/cachek/key") == 3


def test_head_is_answered_from_a_stored_get(gw: GatewayProcess, origin: OriginProcess) -> None:
    url = "/cache/head?" + q(cc="max-age=60")
    got = fetch(gw, url)
    head = fetch(gw, url, method="HEAD")
    assert (head.status, head.body) == (200, b"")
    assert head.headers.get("Content-Length") == str(len(got.body))
    assert head.headers.get("X-Cache") == "HIT"
    assert app_saw(origin, "/cache/head") == 1


def test_ranges_are_served_from_a_stored_full_response(gw: GatewayProcess) -> None:
    url = "/cache/range?" + q(cc="max-age=60", etag='"r1"', body="0123456789")
    full = fetch(gw, url).body
    part = fetch(gw, url, {"Range": "bytes=2-5"})
    assert (part.status, part.body) == (206, full[2:6])
    assert part.headers.get("Content-Range") == f"bytes 2-5/{len(full)}"
    suffix = fetch(gw, url, {"Range": "bytes=-3"})
    assert (suffix.status, suffix.body) == (206, full[-3:])
    assert fetch(gw, url, {"Range": f"bytes={len(full) + 5}-"}).status == 416
    changed = fetch(gw, url, {"Range": "bytes=2-5", "If-Range": '"other"'})
    assert (changed.status, changed.body) == (200, full)


def test_conditional_requests_get_304_from_the_cache(gw: GatewayProcess, origin: OriginProcess) -> None:
    lm = "Tue, 01 Dec 2026 00:00:00 GMT"
    url = "/cache/cond?" + q(cc="max-age=60", etag='"v1"', lm=lm)
    fetch(gw, url)
    by_etag = fetch(gw, url, {"If-None-Match": 'W/"v1", "v0"'})
    by_date = fetch(gw, url, {"If-Modified-Since": lm})
    changed = fetch(gw, url, {"If-None-Match": '"v2"'})
    assert (by_etag.status, by_etag.body, by_etag.headers.get("ETag")) == (304, b"", '"v1"')
    assert by_date.status == 304
    assert changed.status == 200 and changed.body
    assert app_saw(origin, "/cache/cond") == 1


# -- revalidation and staleness ------------------------------------------------------------------


def test_a_stale_entry_is_revalidated_and_a_304_refreshes_it(
    gw: GatewayProcess, origin: OriginProcess
) -> None:
    url = "/cache/reval?" + q(cc="max-age=0, must-revalidate", etag='"e1"')
    first = fetch(gw, url)
    second = fetch(gw, url)
    assert (second.status, second.headers.get("X-Cache")) == (200, "REVALIDATED")
    assert second.body == first.body
    assert second.headers.get("X-Fresh") == "304"  # the 304's fields updated the stored ones
    sent = [r for r in origin.received() if r.path == "/cache/reval"]
    assert [r.header("If-None-Match") for r in sent] == [None, '"e1"']


def test_the_client_conditional_is_kept_out_of_revalidation(
    gw: GatewayProcess, origin: OriginProcess
) -> None:
    url = "/cache/reval2?" + q(cc="max-age=0", etag='"e2"')
    fetch(gw, url)
    answer = fetch(gw, url, {"If-None-Match": '"e2"'})
    assert answer.status == 304  # the refreshed entry matches the client's copy
    sent = [r for r in origin.received() if r.path == "/cache/reval2"]
    assert sent[-1].header("If-None-Match") == '"e2"'


def test_stale_while_revalidate_serves_stale_and_refreshes_in_the_background(
    gw: GatewayProcess, origin: OriginProcess
) -> None:
    url = "/cache/swr?" + q(cc="max-age=1, stale-while-revalidate=30")
    first = fetch(gw, url)
    time.sleep(1.2)
    stale = fetch(gw, url)
    assert (stale.headers.get("X-Cache"), stale.body) == ("STALE", first.body)
    deadline = time.monotonic() + 5
    while app_saw(origin, "/cache/swr") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    fresh = fetch(gw, url)
    assert fresh.headers.get("X-Cache") == "HIT"
    assert fresh.body != first.body
    assert app_saw(origin, "/cache/swr") == 2


def test_stale_if_error_serves_stale_when_the_app_fails(gw: GatewayProcess, origin: OriginProcess) -> None:
    url = "/cache/sie?" + q(cc="max-age=1, stale-if-error=60", failafter="1")
    first = fetch(gw, url)
    time.sleep(1.2)
    stale = fetch(gw, url)
    assert (stale.status, stale.headers.get("X-Cache"), stale.body) == (200, "STALE", first.body)
    no_grace = "/cache/sie2?" + q(cc="max-age=1", failafter="1")
    fetch(gw, no_grace)
    time.sleep(1.2)
    assert fetch(gw, no_grace).status == 503


def test_a_client_may_refuse_the_cache(gw: GatewayProcess) -> None:
    url = "/cache/client?" + q(cc="max-age=60")
    first = fetch(gw, url)
    again = fetch(gw, url, {"Cache-Control": "no-cache"})
    assert again.headers.get("X-Cache") == "MISS" and again.body != first.body
    assert fetch(gw, url, {"Cache-Control": "max-age=0"}).headers.get("X-Cache") == "MISS"
    only = fetch(gw, "/cache/nothing-here", {"Cache-Control": "only-if-cached"})
    assert only.status == 504


def test_unsafe_methods_invalidate_the_url_and_its_locations(gw: GatewayProcess) -> None:
    target = "/cache/item?" + q(cc="max-age=60")
    other = "/cache/other?" + q(cc="max-age=60")
    fetch(gw, target)
    fetch(gw, other)
    location = "http://example.com" + other
    fetch(gw, target, method="POST", body=b"{}")
    fetch(gw, "/cache/poster?" + q(location=location), method="PUT", body=b"{}")
    assert fetch(gw, target).headers.get("X-Cache") == "MISS"
    assert fetch(gw, other).headers.get("X-Cache") == "MISS"


def test_concurrent_misses_make_one_request_to_the_app(gw: GatewayProcess, origin: OriginProcess) -> None:
    url = "/cache/collapse?" + q(cc="max-age=60", delay="0.5")
    results: list[Response] = []

    def one() -> None:
        results.append(fetch(gw, url))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({r.body for r in results}) == 1
    assert sorted(r.headers.get("X-Cache") for r in results) == ["HIT"] * 5 + ["MISS"]
    assert app_saw(origin, "/cache/collapse") == 1


# -- limits and failures -------------------------------------------------------------------------


def test_a_response_over_max_entry_size_streams_through_uncached(gw: GatewayProcess) -> None:
    url = "/cache/huge?" + q(cc="max-age=60", pad=str(100 * 1024))
    first = fetch(gw, url)
    assert len(first.body) > 100 * 1024
    assert fetch(gw, url).headers.get("X-Cache") == "MISS"


def test_a_body_that_ends_early_is_never_stored(gw: GatewayProcess) -> None:
    url = "/cache/short?" + q(cc="max-age=60", short="1")
    with RawClient(gw.port) as client:
        client.send(request("GET", url))
        client.read_until_close()  # the client sees a cut connection
    again = fetch(gw, "/cache/short?" + q(cc="max-age=60", short="1"))
    assert again.headers.get("X-Cache") != "HIT"


def test_an_unusable_store_degrades_to_uncached_proxying(gateway: GatewayFactory, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    gw = start(gateway, tmp_path, cache={"dir": str(blocker / "cache")})
    url = "/cache/broken?" + q(cc="max-age=60")
    answers = [fetch(gw, url) for _ in range(2)]
    assert [a.status for a in answers] == [200, 200]
    assert answers[0].body != answers[1].body
    assert "store unusable" in gw.log()


def test_a_corrupt_store_file_degrades_to_uncached_proxying(gateway: GatewayFactory, tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    (directory / "data.mdb").write_bytes(b"\x00garbage" * 1000)
    gw = start(gateway, tmp_path)
    answers = [fetch(gw, "/cache/corrupt?" + q(cc="max-age=60")) for _ in range(2)]
    assert [a.status for a in answers] == [200, 200]
    assert "store unusable" in gw.log()
