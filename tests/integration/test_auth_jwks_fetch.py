"""A real Sidegate fetching its JWKS the way a pod does: through HTTPS_PROXY (or not, by NO_PROXY),
over TLS checked against the CA in SSL_CERT_FILE, refreshed when the answer's max-age says so."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from support.cache import fetch
from support.gateway import GatewayFactory, GatewayProcess
from support.jwks_http import Asked, JwksHttp, Proxy, TlsFiles
from support.jwt_tokens import SigningKey, jwks, make_ec, sign

pytestmark = pytest.mark.timeout(60)

KEY = make_ec("P-256", "ec-1")


def _status(gw: GatewayProcess, key: SigningKey) -> int:
    now = int(time.time())
    token = sign({"sub": "alice", "exp": now + 300}, key)
    return fetch(gw, "/orders", {"Authorization": f"Bearer {token}"}).status


def _gateway(gateway: GatewayFactory, url: str, **jwt: Any) -> GatewayProcess:
    route = {
        "name": "orders",
        "match": {"path_prefix": "/"},
        "upstream": "app",
        "filters": {"jwt": {"jwks_url": url, **jwt}},
    }
    return gateway(routes=[route])


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TlsFiles:
    files = TlsFiles.make(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(files.ca))  # inherited by the gateway process
    return files


def test_keys_are_fetched_through_the_https_proxy(
    gateway: GatewayFactory, tls: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    with JwksHttp(tls) as idp, Proxy() as proxy:
        idp.route("/jwks", json.dumps(jwks(KEY)).encode())
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        gw = _gateway(gateway, idp.url("/jwks"))
        assert _status(gw, KEY) == 200
        assert proxy.asked == [Asked("CONNECT", f"127.0.0.1:{idp.port}", None)]
        assert idp.paths == ["/jwks"]


def test_no_proxy_sends_the_fetch_direct(
    gateway: GatewayFactory, tls: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    with JwksHttp(tls) as idp, Proxy() as proxy:
        idp.route("/jwks", json.dumps(jwks(KEY)).encode())
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "idp.example.com,127.0.0.0/8")
        gw = _gateway(gateway, idp.url("/jwks"))
        assert _status(gw, KEY) == 200
        assert proxy.asked == [] and idp.paths == ["/jwks"]


def _requests_for(gw: GatewayProcess, key: SigningKey, seconds: float) -> list[int]:
    statuses = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        statuses.append(_status(gw, key))
        time.sleep(0.2)
    return statuses


def test_a_short_max_age_makes_sidegate_fetch_again(gateway: GatewayFactory) -> None:
    with JwksHttp() as idp:
        idp.route("/jwks", json.dumps(jwks(KEY)).encode(), ("Cache-Control", "max-age=1"))
        gw = _gateway(gateway, idp.url("/jwks"), refresh=300, refresh_min=0)
        assert _status(gw, KEY) == 200
        rotated = make_ec("P-256", "ec-rotated")
        idp.route("/jwks", json.dumps(jwks(rotated)).encode(), ("Cache-Control", "max-age=1"))
        # A new kid alone would wait for min_refetch (10 s): only the 1 s lifetime fetches this soon.
        statuses = _requests_for(gw, rotated, 4.0)
        assert statuses[-1] == 200, statuses
        assert idp.fetches("/jwks") >= 2


def test_a_long_max_age_is_respected(gateway: GatewayFactory) -> None:
    with JwksHttp() as idp:
        idp.route("/jwks", json.dumps(jwks(KEY)).encode(), ("Cache-Control", "max-age=120"))
        gw = _gateway(gateway, idp.url("/jwks"), refresh=1)  # refresh: only for answers that say nothing
        assert _status(gw, KEY) == 200
        assert set(_requests_for(gw, KEY, 3.0)) == {200}
        assert idp.fetches("/jwks") == 1
