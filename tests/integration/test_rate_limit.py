"""Rate limits through real Sidegate processes: per pod, per consumer, across pods through Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import admin_post
from support.cache import fetch
from support.gateway import GatewayFactory, GatewayProcess

pytestmark = pytest.mark.timeout(90)

KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-0123456789xx"}
CONSUMERS = [
    {"name": "alice", "tenant": "acme", "api_keys": [KEYS["alice"]]},
    {"name": "bob", "tenant": "acme", "api_keys": [KEYS["bob"]]},
]


def limited(name: str, prefix: str, limit: dict[str, Any], auth: bool = False) -> dict[str, Any]:
    filters: dict[str, Any] = {"api_key": {}} if auth else {}
    filters["rate_limit"] = limit
    return {"name": name, "match": {"path_prefix": prefix}, "upstream": "app", "filters": filters}


def statuses(gw: GatewayProcess, path: str, n: int, headers: dict[str, str] | None = None) -> list[int]:
    return [fetch(gw, path, headers).status for _ in range(n)]


def test_a_local_limit_refuses_with_429_and_says_when_to_retry(gateway: GatewayFactory) -> None:
    gw = gateway(routes=[limited("ip", "/", {"requests": 3, "per": "10s", "key": "ip"})])
    answers = [fetch(gw, "/x") for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers.get("RateLimit-Policy") == '"0";q=3;w=10'
    assert answers[1].headers.get("RateLimit", "").startswith('"0";r=1;t=')
    refused = answers[3]
    assert 1 <= int(refused.headers.get("Retry-After") or 0) <= 4
    assert json.loads(refused.body)["error"] == "rate_limited"


def test_consumers_have_budgets_of_their_own(gateway: GatewayFactory) -> None:
    route = limited("per-consumer", "/", {"requests": 2, "per": "1m", "key": "consumer"}, auth=True)
    gw = gateway(routes=[route], consumers=CONSUMERS)
    alice, bob = {"X-API-Key": KEYS["alice"]}, {"X-API-Key": KEYS["bob"]}
    assert statuses(gw, "/a", 3, alice) == [200, 200, 429]
    assert statuses(gw, "/a", 2, bob) == [200, 200]


def test_a_tenant_quota_is_shared_by_its_consumers_and_reported(gateway: GatewayFactory) -> None:
    quota = {"limits": [{"requests": 3, "per": "1d", "key": "tenant", "name": "daily"}]}
    gw = gateway(routes=[limited("quota", "/", quota, auth=True)], consumers=CONSUMERS)
    got = statuses(gw, "/q", 2, {"X-API-Key": KEYS["alice"]}) + statuses(
        gw, "/q", 2, {"X-API-Key": KEYS["bob"]}
    )
    assert got == [200, 200, 200, 429]
    labels = {"http_route": "quota", "limit": "daily", "tenant": "acme"}
    assert gw.metric("sidegate_quota_requests_total", result="allowed", **labels) == 3
    assert gw.metric("sidegate_quota_requests_total", result="limited", **labels) == 1


def test_a_header_key_and_several_limits(gateway: GatewayFactory) -> None:
    limits = {
        "limits": [
            {"requests": 100, "per": "1s", "key": "ip"},
            {"requests": 2, "per": "1m", "key": "header:x-user", "name": "per-user"},
        ]
    }
    gw = gateway(routes=[limited("multi", "/", limits)])
    assert statuses(gw, "/m", 3, {"X-User": "u1"}) == [200, 200, 429]
    assert statuses(gw, "/m", 1, {"X-User": "u2"}) == [200]
    assert fetch(gw, "/m", {"X-User": "u1"}).headers.get("RateLimit-Policy") == '"per-user";q=2;w=60'


def test_workers_of_a_pod_share_one_limit(gateway: GatewayFactory) -> None:
    gw = gateway(routes=[limited("shared", "/", {"requests": 5, "per": "1m", "key": "route"})], workers=2)
    got = statuses(gw, "/w", 12)  # a connection each: the kernel spreads them over both workers
    assert got.count(200) == 5 and got.count(429) == 7


def test_limits_hold_across_a_reload(gateway: GatewayFactory) -> None:
    gw = gateway(routes=[limited("steady", "/", {"requests": 4, "per": "1m", "key": "route"})])
    assert statuses(gw, "/r", 3) == [200, 200, 200]
    config = dict(gw.config)
    config["routes"] = [{"name": "extra", "match": {"path": "/new"}, "upstream": "app"}, *config["routes"]]
    gw.write_config(config)
    assert admin_post(gw.admin_port, "/reload")[0] == 200
    assert statuses(gw, "/r", 2) == [200, 429]


def test_a_bad_limit_is_a_config_error_naming_it(gateway: GatewayFactory, tmp_path: Path) -> None:
    with pytest.raises(AssertionError) as failed:
        gateway(routes=[limited("bad", "/", {"requests": 3, "per": "soon"})])
    assert "routes[0].filters.rate_limit" in str(failed.value) and "per" in str(failed.value)


# -- across pods, through Redis -----------------------------------------------------------------


def redis_routes(on_failure: str = "local") -> list[dict[str, Any]]:
    limit = {"requests": 6, "per": "1m", "key": "route", "store": "redis"}
    return [limited("global", "/", {**limit, "on_redis_failure": on_failure})]


def test_two_pods_sharing_redis_hold_one_limit(gateway: GatewayFactory, redis_server: Any) -> None:
    pods = [gateway(routes=redis_routes(), redis={"url": redis_server.url}) for _ in range(2)]
    got = [fetch(pods[i % 2], "/g").status for i in range(10)]
    assert got.count(200) == 6 and got.count(429) == 4


@pytest.mark.parametrize(("mode", "expected"), [("open", 200), ("closed", 503), ("local", 200)])
def test_a_redis_outage_never_hangs_a_request(
    gateway: GatewayFactory, redis_server: Any, mode: str, expected: int
) -> None:
    gw = gateway(routes=redis_routes(mode), redis={"url": redis_server.url, "timeout": "50ms"})
    assert fetch(gw, "/g").status == 200
    redis_server.stop()
    started = time.monotonic()
    answers = [fetch(gw, "/g").status for _ in range(3)]
    assert time.monotonic() - started < 3
    assert answers == [expected] * 3
    redis_server.start()
