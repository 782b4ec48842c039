"""API keys, consumers, access rules and CORS through a real Sidegate and a real app."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.cache import fetch
from support.gateway import SIDEGATE, GatewayFactory, GatewayProcess, OriginProcess

pytestmark = pytest.mark.timeout(60)

BILLING_KEY = "billing-key-0123456789"
REPORTS_KEY = "reports-key-0123456789"
FILE_KEY = "file-key-abcdefghijklmnop"

CONSUMERS = [
    {"name": "billing", "tenant": "acme", "api_keys": [BILLING_KEY]},
    {
        "name": "reports",
        "tenant": "globex",
        "api_keys": ["sha256:" + hashlib.sha256(REPORTS_KEY.encode()).hexdigest()],
    },
]


def routes(keys_file: Path) -> list[dict[str, Any]]:
    return [
        {
            "name": "keyed",
            "match": {"path_prefix": "/keyed"},
            "upstream": "app",
            "filters": {"api_key": {"header": "x-api-key", "keys_file": str(keys_file)}},
        },
        {
            "name": "query",
            "match": {"path_prefix": "/query"},
            "upstream": "app",
            "filters": {"api_key": {"header": "", "query": "api_key"}},
        },
        {
            "name": "billing-only",
            "match": {"path_prefix": "/billing"},
            "upstream": "app",
            "filters": {"api_key": {"consumers": ["billing"]}},
        },
        {
            "name": "acme-only",
            "match": {"path_prefix": "/acme"},
            "upstream": "app",
            "filters": {"api_key": {}, "access": {"allow_tenants": ["acme"], "deny_ips": ["10.0.0.0/8"]}},
        },
        {
            "name": "local-only",
            "match": {"path_prefix": "/local"},
            "upstream": "app",
            "filters": {"access": {"allow_ips": ["192.0.2.0/24"]}},
        },
        {
            "name": "browser",
            "match": {"path_prefix": "/browser"},
            "upstream": "app",
            "filters": {
                "cors": {
                    "origins": ["https://app.example.com", "https://*.example.org"],
                    "headers": ["content-type", "x-api-key"],
                    "expose_headers": ["x-request-id"],
                    "credentials": True,
                },
                "api_key": {},
            },
        },
        {"name": "open", "match": {"path_prefix": "/"}, "upstream": "app"},
    ]


@pytest.fixture
def gw(gateway: GatewayFactory, tmp_path: Path) -> GatewayProcess:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# consumer key\nbilling {FILE_KEY}\n")
    return gateway(routes=routes(keys_file), consumers=CONSUMERS)


def app_headers(response_body: bytes) -> dict[str, str]:
    return {name.lower(): value for name, value in json.loads(response_body)["headers"]}


def test_a_valid_key_reaches_the_app_as_its_consumer(gw: GatewayProcess) -> None:
    answer = fetch(gw, "/keyed/a", {"X-API-Key": BILLING_KEY, "X-Consumer": "admin", "X-Tenant": "root"})
    assert answer.status == 200
    seen = app_headers(answer.body)
    assert (seen["x-consumer"], seen["x-tenant"]) == ("billing", "acme")  # client copies replaced
    assert "x-api-key" not in seen  # the credential stays in the gateway


def test_hashed_keys_and_keys_from_a_secret_file_work(gw: GatewayProcess) -> None:
    assert app_headers(fetch(gw, "/keyed/b", {"X-API-Key": REPORTS_KEY}).body)["x-consumer"] == "reports"
    assert app_headers(fetch(gw, "/keyed/c", {"X-API-Key": FILE_KEY}).body)["x-consumer"] == "billing"


def test_a_key_file_change_is_picked_up_without_a_restart(gw: GatewayProcess, tmp_path: Path) -> None:
    new_key = "rotated-key-0123456789abc"
    (tmp_path / "keys.tmp").write_text(f"reports {new_key}\n")
    (tmp_path / "keys.tmp").replace(tmp_path / "keys")
    deadline = time.monotonic() + 5
    while fetch(gw, "/keyed/d", {"X-API-Key": new_key}).status != 200:
        assert time.monotonic() < deadline, "the rotated key was not picked up"
        time.sleep(0.2)
    assert fetch(gw, "/keyed/d", {"X-API-Key": FILE_KEY}).status == 401  # the old file key is gone


def test_missing_and_wrong_keys_get_401_with_a_challenge(gw: GatewayProcess, origin: OriginProcess) -> None:
    missing = fetch(gw, "/keyed/x")
    wrong = fetch(gw, "/keyed/x", {"X-API-Key": "not-a-key-at-all-000"})
    assert missing.status == wrong.status == 401
    assert missing.headers.get("WWW-Authenticate") == 'ApiKey realm="sidegate", header="x-api-key"'
    assert 'error="invalid_key"' in (wrong.headers.get("WWW-Authenticate") or "")
    assert json.loads(wrong.body)["error"] == "unauthorized"
    assert not [r for r in origin.received() if r.path == "/keyed/x"]


def test_a_key_in_the_query(gw: GatewayProcess) -> None:
    assert fetch(gw, f"/query?api_key={BILLING_KEY}").status == 200
    assert fetch(gw, "/query?api_key=nope-nope-nope-nope").status == 401


def test_routes_admit_some_consumers_and_tenants(gw: GatewayProcess) -> None:
    assert fetch(gw, "/billing", {"X-API-Key": BILLING_KEY}).status == 200
    assert fetch(gw, "/billing", {"X-API-Key": REPORTS_KEY}).status == 403
    assert fetch(gw, "/acme", {"X-API-Key": BILLING_KEY}).status == 200
    refused = fetch(gw, "/acme", {"X-API-Key": REPORTS_KEY})
    assert refused.status == 403 and "tenants" in json.loads(refused.body)["detail"]


def test_client_address_rules(gw: GatewayProcess) -> None:
    refused = fetch(gw, "/local")  # the test client is 127.0.0.1, outside 192.0.2.0/24
    assert refused.status == 403 and "allow_ips" in json.loads(refused.body)["detail"]


def test_identity_headers_are_removed_on_every_route(gw: GatewayProcess) -> None:
    seen = app_headers(fetch(gw, "/anything", {"X-Consumer": "admin", "X-Tenant": "root"}).body)
    assert "x-consumer" not in seen and "x-tenant" not in seen


def test_cors_preflight_is_answered_by_the_gateway(gw: GatewayProcess, origin: OriginProcess) -> None:
    asks = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key",
    }
    answer = fetch(gw, "/browser/items", asks, method="OPTIONS")
    assert answer.status == 204
    assert answer.headers.get("Access-Control-Allow-Origin") == "https://app.example.com"
    assert answer.headers.get("Access-Control-Allow-Credentials") == "true"
    assert "POST" in (answer.headers.get("Access-Control-Allow-Methods") or "")
    assert answer.headers.get("Access-Control-Allow-Headers") == "content-type, x-api-key"
    assert not [r for r in origin.received() if r.path == "/browser/items"]
    wildcard = fetch(gw, "/browser/items", {**asks, "Origin": "https://shop.example.org"}, method="OPTIONS")
    assert wildcard.status == 204
    stranger = fetch(gw, "/browser/items", {**asks, "Origin": "https://evil.example.net"}, method="OPTIONS")
    assert stranger.status == 403


def test_cors_headers_on_actual_responses(gw: GatewayProcess) -> None:
    answer = fetch(gw, "/browser/items", {"Origin": "https://app.example.com", "X-API-Key": BILLING_KEY})
    assert answer.status == 200
    assert answer.headers.get("Access-Control-Allow-Origin") == "https://app.example.com"
    assert answer.headers.get("Access-Control-Expose-Headers") == "x-request-id"
    assert "Origin" in answer.headers.get_all("Vary")
    other = fetch(gw, "/browser/items", {"Origin": "https://evil.example.net", "X-API-Key": BILLING_KEY})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_metrics_count_decisions_by_consumer(gw: GatewayProcess) -> None:
    fetch(gw, "/keyed/m", {"X-API-Key": BILLING_KEY})
    fetch(gw, "/keyed/m")
    assert (
        gw.metric("sidegate_policy_decisions_total", http_route="keyed", filter="api_key", result="ok") == 1
    )
    assert (
        gw.metric("sidegate_policy_decisions_total", http_route="keyed", filter="api_key", result="missing")
        == 1
    )
    assert (
        gw.metric("sidegate_consumer_requests_total", http_route="keyed", tenant="acme", consumer="billing")
        == 1
    )


def test_config_errors_name_the_field(gateway: GatewayFactory, tmp_path: Path) -> None:
    config = {
        "upstreams": {"app": {"endpoints": ["127.0.0.1:9"]}},
        "consumers": [{"name": "a", "api_keys": ["short"]}, {"name": "a"}],
        "routes": [
            {
                "name": "r",
                "match": {"path_prefix": "/"},
                "upstream": "app",
                "filters": {"api_key": {"consumers": ["nobody"]}},
            }
        ],
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [SIDEGATE, "validate", "--config", str(path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 1
    assert "consumers[0].api_keys[0]" in out.stdout + out.stderr
