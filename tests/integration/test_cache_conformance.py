"""The last RFC 9111 rules of the shared cache, through a real Sidegate and a real app: Age and
Expires as sent, invalidation by any unsafe method, Vary on list-valued fields, must-understand."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidegate.cache.client import SharedCache
from support.cache import app_saw, fetch, q, start
from support.gateway import GatewayFactory, GatewayProcess, OriginProcess

pytestmark = pytest.mark.timeout(60)

FUTURE = "Thu, 01 Jan 2099 00:00:00 GMT"
NOW_ISH = "Thu, 01 Jan 2026 00:00:00 GMT"


@pytest.fixture
def gw(gateway: GatewayFactory, tmp_path: Path) -> GatewayProcess:
    return start(gateway, tmp_path)


# -- Age and Expires -------------------------------------------------------------------------------


def test_a_list_valued_age_counts_by_its_first_member(gw: GatewayProcess, origin: OriginProcess) -> None:
    old = "/cache/age-old?" + q(cc="max-age=3600", age="7200, 0")
    young = "/cache/age-young?" + q(cc="max-age=3600", age="0, 7200")
    fetch(gw, old)
    fetch(gw, young)
    again_old, again_young = fetch(gw, old), fetch(gw, young)
    assert again_old.headers.get("X-Cache") == "MISS"  # 7200 s old: past its hour of freshness
    assert again_young.headers.get("X-Cache") == "HIT"
    assert int(again_young.headers.get("Age", "-1")) < 60
    assert (app_saw(origin, "/cache/age-old"), app_saw(origin, "/cache/age-young")) == (2, 1)


def test_an_expires_with_a_doubled_space_is_already_expired_but_kept_to_revalidate(
    gw: GatewayProcess, origin: OriginProcess
) -> None:
    valid = "/cache/exp-valid?" + q(expires=FUTURE, date=NOW_ISH, etag='"x1"')
    doubled = "/cache/exp-doubled?" + q(expires=FUTURE.replace(" ", "  ", 2), date=NOW_ISH, etag='"x1"')
    first = fetch(gw, doubled)
    assert fetch(gw, valid).status == 200
    again_valid, again_doubled = fetch(gw, valid), fetch(gw, doubled)
    assert again_valid.headers.get("X-Cache") == "HIT"
    assert (again_doubled.headers.get("X-Cache"), again_doubled.body) == ("REVALIDATED", first.body)
    sent = [r.header("If-None-Match") for r in origin.received() if r.path == "/cache/exp-doubled"]
    assert sent == [None, '"x1"']


@pytest.mark.parametrize("expires", ["0", "Thu, 01 Jan 2099 00:00:00 UTC", "Thu, 01 Jan 2099 0:00:00 GMT"])
def test_an_invalid_expires_is_never_served_fresh(gw: GatewayProcess, expires: str) -> None:
    url = "/cache/exp-invalid?" + q(expires=expires, date=NOW_ISH)
    first, second = fetch(gw, url), fetch(gw, url)
    assert second.headers.get("X-Cache") == "MISS"
    assert second.body != first.body


# -- invalidation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PATCH", "PROPFIND", "PURGE", "MKCOL", "LOCK", "REPORT", "POST"])
def test_a_successful_request_with_any_unsafe_method_invalidates(gw: GatewayProcess, method: str) -> None:
    target = "/cache/unsafe?" + q(cc="max-age=60")
    elsewhere = "/cache/unsafe-other?" + q(cc="max-age=60")
    fetch(gw, target)
    fetch(gw, elsewhere)
    assert fetch(gw, target).headers.get("X-Cache") == "HIT"
    doer = "/cache/unsafe-doer?" + q(location="/cache/unsafe-other?cc=max-age%3D60")
    named = fetch(gw, doer, method=method)
    answer = fetch(gw, target, method=method, body=b"{}")
    assert (named.status, answer.status) == (200, 200)
    assert fetch(gw, target).headers.get("X-Cache") == "MISS"
    assert fetch(gw, elsewhere).headers.get("X-Cache") == "MISS"  # its Location, same origin


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "HEAD"])
def test_a_safe_method_invalidates_nothing(gw: GatewayProcess, method: str) -> None:
    target = "/cache/safe?" + q(cc="max-age=60")
    fetch(gw, target)
    assert fetch(gw, target, method=method).status == 200
    assert fetch(gw, target).headers.get("X-Cache") == "HIT"


def test_an_unsafe_request_that_fails_invalidates_nothing(gw: GatewayProcess) -> None:
    target = "/cache/unsafe-fail?" + q(cc="max-age=60", failafter="1")  # the app fails from now on
    fetch(gw, target)
    assert fetch(gw, target, method="PURGE").status == 503
    assert fetch(gw, target, method="PATCH", body=b"{}").status == 503
    assert fetch(gw, target).headers.get("X-Cache") == "HIT"


def test_a_method_the_request_reader_does_not_know_never_reaches_the_app(
    gw: GatewayProcess, origin: OriginProcess
) -> None:
    # llhttp reads the methods of its table only (PATCH, PROPFIND, PURGE, QUERY...): FOO is a 400
    # before routing, so the app's state cannot change and the entry rightly stays.
    target = "/cache/unknown-method?" + q(cc="max-age=60")
    fetch(gw, target)
    assert fetch(gw, target, method="FOO").status == 400
    assert fetch(gw, target).headers.get("X-Cache") == "HIT"
    assert app_saw(origin, "/cache/unknown-method") == 1


# -- Vary on list-valued fields --------------------------------------------------------------------


def test_accept_language_in_another_order_case_and_spacing_is_one_variant(
    gw: GatewayProcess, origin: OriginProcess, tmp_path: Path
) -> None:
    url = "/cache/vary-list?" + q(cc="max-age=60", vary="Accept-Language")
    first = fetch(gw, url, {"Accept-Language": "en, fr"})
    again = fetch(gw, url, {"Accept-Language": "fr,EN"})
    spaced = fetch(gw, url, {"Accept-Language": " FR ,  en"})
    other = fetch(gw, url, {"Accept-Language": "de"})
    assert (first.headers.get("X-Cache"), again.headers.get("X-Cache")) == ("MISS", "HIT")
    assert again.body == spaced.body == first.body
    assert other.headers.get("X-Cache") == "MISS" and other.body != first.body
    assert app_saw(origin, "/cache/vary-list") == 2
    with SharedCache(tmp_path / "cache") as cache:
        assert cache.stats().entries == 2  # en+fr once, de once


def test_accept_encoding_lists_share_a_variant_but_other_fields_compare_as_sent(gw: GatewayProcess) -> None:
    url = "/cache/vary-enc?" + q(cc="max-age=60", vary="Accept-Encoding, X-Flavour")

    def result(encoding: str, flavour: str) -> str | None:
        return fetch(gw, url, {"Accept-Encoding": encoding, "X-Flavour": flavour}).headers.get("X-Cache")

    assert result("gzip, br", "Mint") == "MISS"
    assert result("BR,gzip", "Mint") == "HIT"
    assert result("gzip, br", "mint") == "MISS"


# -- must-understand -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["200", "404"])
def test_must_understand_stores_an_understood_status_despite_no_store(
    gw: GatewayProcess, status: str
) -> None:
    url = "/cache/mu-known?" + q(cc="no-store, must-understand, max-age=60", status=status)
    plain = "/cache/mu-plain?" + q(cc="no-store, max-age=60", status=status)
    first = fetch(gw, url)
    again = fetch(gw, url)
    assert (again.status, again.headers.get("X-Cache"), again.body) == (int(status), "HIT", first.body)
    fetch(gw, plain)
    assert fetch(gw, plain).headers.get("X-Cache") == "MISS"  # no-store alone is obeyed


@pytest.mark.parametrize("cc", ["must-understand, no-store, max-age=60", "must-understand, max-age=60"])
def test_must_understand_keeps_a_status_the_cache_does_not_understand_out(
    gw: GatewayProcess, cc: str
) -> None:
    url = "/cache/mu-unknown?" + q(cc=cc, status="299")
    without = "/cache/mu-without?" + q(cc="max-age=60", status="299")
    fetch(gw, url)
    again = fetch(gw, url)
    assert (again.status, again.headers.get("X-Cache")) == (299, "MISS")
    fetch(gw, without)
    assert fetch(gw, without).headers.get("X-Cache") == "HIT"  # stored for its max-age when not asked
