"""A background revalidation reaches the app as the route's proxied requests do, through the pool."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from support.cache import fetch, q
from support.gateway import GatewayFactory, GatewayProcess, OriginProcess, Received, http_get

pytestmark = pytest.mark.timeout(60)

CLIENT_ID = "client-chosen-id-1"


@pytest.fixture
def gw(gateway: GatewayFactory, tmp_path: Path) -> GatewayProcess:
    route = {
        "name": "swr",
        "match": {"path_prefix": "/cache"},
        "upstream": "app",
        "headers": {"request": {"set": {"X-Route-Edit": "by-sidegate"}, "remove": ["X-Secret"]}},
        "filters": {"cache": {}},
    }
    cache = {"dir": str(tmp_path / "cache"), "max_size": "8MiB", "max_entry_size": "64KiB"}
    return gateway(routes=[route], cache=cache)


def _wait_for(origin: OriginProcess, path: str, count: int) -> list[Received]:
    deadline = time.monotonic() + 5
    while True:
        seen = [r for r in origin.received() if r.path == path]
        if len(seen) >= count or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def test_a_background_revalidation_carries_the_routes_headers_and_a_new_request_id(
    gw: GatewayProcess, origin: OriginProcess
) -> None:
    url = "/cache/swr-seen?" + q(cc="max-age=1, stale-while-revalidate=30", etag='"v1"')
    headers = {"X-Request-Id": CLIENT_ID, "X-Secret": "kept-out"}
    first = fetch(gw, url, headers)
    time.sleep(1.2)
    stale = fetch(gw, url, headers)
    assert (stale.headers.get("X-Cache"), stale.body) == ("STALE", first.body)
    assert stale.headers.get("X-Request-Id") == CLIENT_ID  # the client's own request keeps its id

    proxied, revalidation = _wait_for(origin, "/cache/swr-seen", 2)[:2]
    assert revalidation.method == "GET" and revalidation.target == proxied.target
    assert revalidation.header("If-None-Match") == '"v1"'  # conditional, with the stored validator
    for name in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Via", "X-Route-Edit"):
        assert revalidation.header(name) == proxied.header(name) is not None, name
    assert revalidation.header("Via") == "1.1 sidegate"
    assert revalidation.header("X-Route-Edit") == "by-sidegate" and revalidation.header("X-Secret") is None
    new_id = revalidation.header("X-Request-Id")
    assert proxied.header("X-Request-Id") == CLIENT_ID
    assert new_id is not None and new_id != CLIENT_ID and len(new_id) == 16
    assert revalidation.header_all("X-Request-Id") == [new_id]
    assert revalidation.header("Connection") is None  # keep-alive: the connection goes back to the pool


def test_a_background_revalidation_borrows_the_pooled_connection(
    gw: GatewayProcess, origin: OriginProcess
) -> None:
    url = "/cache/swr-pooled?" + q(cc="max-age=1, stale-while-revalidate=30")
    first = fetch(gw, url)
    time.sleep(1.2)
    assert fetch(gw, url).headers.get("X-Cache") == "STALE"
    proxied, revalidation = _wait_for(origin, "/cache/swr-pooled", 2)[:2]
    assert revalidation.conn_id == proxied.conn_id  # the miss's keep-alive connection, lent again
    time.sleep(0.2)
    fresh = fetch(gw, url)
    assert fresh.headers.get("X-Cache") == "HIT" and fresh.body != first.body  # stored from the revalidation
    status, body = http_get(gw.admin_port, "/clusters")
    assert status == 200
    (app,) = json.loads(body)["upstreams"]
    endpoint = app["endpoints"][0]
    assert (endpoint["connects"], endpoint["idle"]) == (1, 1)  # one connection, given back after each
