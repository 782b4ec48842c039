"""The cache as something shared: with the app (its own client, no network), with every worker,
with operators (admin purge, metrics)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from sidegate.cache.client import SharedCache
from support.cache import app_saw, fetch, q, start
from support.gateway import GatewayFactory, GatewayProcess, OriginProcess

pytestmark = pytest.mark.timeout(60)


def admin(gw: GatewayProcess, method: str, path: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(gw.admin_url(path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def gw(gateway: GatewayFactory, tmp_path: Path) -> GatewayProcess:
    return start(gateway, tmp_path)


def test_the_app_reads_what_the_proxy_stored(gw: GatewayProcess, tmp_path: Path) -> None:
    path = "/cache/shared?" + q(cc="max-age=60")
    body = fetch(gw, path).body
    with SharedCache(tmp_path / "cache") as cache:  # this test process is not the gateway's
        entry = cache.get(f"http://example.com{path}")
        assert entry is not None
        assert (entry.status, entry.body, entry.fresh) == (200, body, True)
        assert ("Cache-Control", "max-age=60") in entry.headers


def test_the_proxy_serves_what_the_app_put_and_forgets_what_it_invalidated(
    gw: GatewayProcess, origin: OriginProcess, tmp_path: Path
) -> None:
    url = "http://example.com/cache/from-app"
    with SharedCache(tmp_path / "cache") as cache:
        cache.put(url, 200, {"Content-Type": "text/plain", "Cache-Control": "max-age=60"}, b"made by the app")
        hit = fetch(gw, "/cache/from-app")
        assert (hit.body, hit.headers.get("X-Cache"), hit.headers.get("Content-Type")) == (
            b"made by the app",
            "HIT",
            "text/plain",
        )
        assert app_saw(origin, "/cache/from-app") == 0
        assert cache.invalidate(url) == 1
    assert fetch(gw, "/cache/from-app").headers.get("X-Cache") == "MISS"


def test_admin_purges_by_url_prefix_and_tag(gw: GatewayProcess) -> None:
    paths = {
        "a": "/cache/purge/a?" + q(cc="max-age=60", skey="group-1 item-a"),
        "b": "/cache/purge/b?" + q(cc="max-age=60", ctag="group-1, item-b"),
        "c": "/cache/purge/c?" + q(cc="max-age=60"),
        "d": "/cache/other/d?" + q(cc="max-age=60"),
    }

    def hits() -> dict[str, bool]:
        return {k: fetch(gw, p).headers.get("X-Cache") == "HIT" for k, p in paths.items()}

    for p in paths.values():
        fetch(gw, p)
    assert admin(gw, "POST", "/cache/purge?tag=group-1") == (200, {"purged": 2})
    assert hits() == {"a": False, "b": False, "c": True, "d": True}
    assert admin(gw, "POST", "/cache/purge?prefix=http://example.com/cache/purge/")[1]["purged"] == 3
    assert hits() == {"a": False, "b": False, "c": False, "d": True}
    status, body = admin(gw, "POST", "/cache/purge?url=" + quote("http://example.com" + paths["d"], safe=""))
    assert (status, body["purged"]) == (200, 1)
    assert admin(gw, "POST", "/cache/purge")[0] == 400


def test_metrics_count_outcomes_and_the_store(gw: GatewayProcess) -> None:
    path = "/cache/metrics?" + q(cc="max-age=60")
    for _ in range(3):
        fetch(gw, path)
    assert gw.metric("sidegate_cache_requests_total", http_route="cached", result="MISS") == 1
    assert gw.metric("sidegate_cache_requests_total", http_route="cached", result="HIT") == 2
    assert (gw.metric("sidegate_cache_entries") or 0) >= 1
    assert (gw.metric("sidegate_cache_stored_total") or 0) >= 1


def test_cache_status_field_of_rfc_9211(gateway: GatewayFactory, tmp_path: Path) -> None:
    gw = start(gateway, tmp_path, status_header="cache-status")
    path = "/cache/rfc9211?" + q(cc="max-age=60")
    miss, hit = fetch(gw, path), fetch(gw, path)
    assert miss.headers.get("Cache-Status") == "sidegate; fwd=uri-miss"
    assert (hit.headers.get("Cache-Status") or "").startswith("sidegate; hit; ttl=")
    assert "X-Cache" not in hit.headers


def test_workers_share_one_store(gateway: GatewayFactory, tmp_path: Path, origin: OriginProcess) -> None:
    gw = start(gateway, tmp_path, top={"workers": 2})
    path = "/cache/workers?" + q(cc="max-age=60")
    answers = [fetch(gw, path) for _ in range(12)]  # a new connection each: both workers answer
    assert len({a.body for a in answers}) == 1
    assert app_saw(origin, "/cache/workers") == 1


def test_a_partition_quota_evicts_only_its_own_entries(gateway: GatewayFactory, tmp_path: Path) -> None:
    gw = start(gateway, tmp_path, partition="small", cache={"partitions": {"small": {"max_size": "24KiB"}}})
    paths = [f"/cache/quota/{i}?" + q(cc="max-age=60", pad=str(6 * 1024)) for i in range(8)]
    for p in paths:
        fetch(gw, p)
    _, stats = admin(gw, "GET", "/cache/stats")
    assert stats["partitions"]["small"] <= 24 * 1024
    newest_first = [fetch(gw, p).headers.get("X-Cache") for p in reversed(paths[-3:])]
    assert newest_first == ["HIT", "HIT", "HIT"]
    assert fetch(gw, paths[0]).headers.get("X-Cache") == "MISS"  # the oldest went first
    _, stats = admin(gw, "GET", "/cache/stats")
    assert stats["partitions"]["small"] <= 24 * 1024
