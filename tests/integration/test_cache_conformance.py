"""The last RFC 9111 rules of the shared cache, through a real Sidegate and a real app: Age and
Expires as sent, invalidation by any unsafe method, Vary on list-valued fields, must-understand."""

from __future__ import annotations

from pathlib import Path

import pytest

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
