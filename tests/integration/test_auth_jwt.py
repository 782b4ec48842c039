"""JWT through a real Sidegate: the classic attacks refused, claims mapped, keys rotated live."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from support.cache import fetch
from support.gateway import GatewayFactory, GatewayProcess, OriginProcess
from support.jwt_tokens import (
    b64url,
    encode,
    jwks,
    make_ec,
    make_ed25519,
    make_hs,
    make_rsa,
    public_pem,
    sign,
)

pytestmark = pytest.mark.timeout(60)

ISSUER = "https://login.example.com/"
RSA = make_rsa("rsa-1")
EC = make_ec("P-256", "ec-1")
ED = make_ed25519("ed-1")


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": "orders",
        "sub": "alice",
        "org": "acme",
        "exp": now + 300,
        "nbf": now - 5,
        **extra,
    }


def routes(jwks_file: Path) -> list[dict[str, Any]]:
    jwt = {"jwks_file": str(jwks_file), "issuer": ISSUER, "audiences": ["orders"], "tenant_claim": "org"}
    return [
        {
            "name": "scoped",
            "match": {"path_prefix": "/scoped"},
            "upstream": "app",
            "filters": {"jwt": {**jwt, "required_scopes": ["orders:write"]}},
        },
        {"name": "orders", "match": {"path_prefix": "/"}, "upstream": "app", "filters": {"jwt": jwt}},
    ]


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(RSA, EC, ED)))
    return path


@pytest.fixture
def gw(gateway: GatewayFactory, keys_file: Path) -> GatewayProcess:
    return gateway(routes=routes(keys_file), consumers=[{"name": "alice", "tenant": "acme-corp"}])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(gw: GatewayProcess, token: str, path: str = "/orders") -> tuple[int, str, dict[str, Any]]:
    answer = fetch(gw, path, bearer(token))
    body = json.loads(answer.body) if answer.body.startswith(b"{") else {}
    return answer.status, answer.headers.get("WWW-Authenticate") or "", body


@pytest.mark.parametrize("key", [RSA, EC, ED], ids=["RS256", "ES256", "EdDSA"])
def test_a_valid_token_reaches_the_app_as_its_consumer(gw: GatewayProcess, key: Any) -> None:
    status, _, body = call(gw, sign(claims(), key))
    assert status == 200
    seen = {n.lower(): v for n, v in body["headers"]}
    assert seen["x-consumer"] == "alice"
    assert seen["x-tenant"] == "acme-corp"  # a configured consumer's tenant wins over the claim
    assert seen["authorization"].startswith("Bearer ")


def test_a_consumer_not_configured_takes_its_tenant_from_the_claim(gw: GatewayProcess) -> None:
    status, _, body = call(gw, sign(claims(sub="bob"), RSA))
    seen = {n.lower(): v for n, v in body["headers"]}
    assert (status, seen["x-consumer"], seen["x-tenant"]) == (200, "bob", "acme")


def attacks() -> dict[str, str]:
    good = sign(claims(), RSA)
    head, payload, signature = good.split(".")
    hs_with_rsa_public = sign(claims(), public_pem(RSA), alg="HS256", kid="rsa-1")
    return {
        "alg none": encode({"alg": "none", "kid": "rsa-1"}, claims()),
        "alg none, no signature part": encode({"alg": "none"}, claims())[:-1],
        "RS/HS confusion": hs_with_rsa_public,
        "expired": sign(claims(exp=int(time.time()) - 3600), RSA),
        "not yet valid": sign(claims(nbf=int(time.time()) + 3600), RSA),
        "wrong issuer": sign(claims(iss="https://evil.example.com/"), RSA),
        "wrong audience": sign(claims(aud="billing"), RSA),
        "unknown key": sign(claims(), make_rsa("rsa-unknown")),
        "signed by another key with a known kid": sign(claims(), make_rsa("rsa-1")),
        "tampered payload": f"{head}.{b64url(json.dumps(claims(sub='admin')).encode())}.{signature}",
        "malformed": "not.a.token",
        "two parts": f"{head}.{payload}",
        "garbage": "%%%.@@@.$$$" * 5,
        "huge": "a" * 3_000 + "." + "b" * 3_000 + "." + "c" * 3_000,  # over 8 KiB, under the head limit
        "HMAC key as attacker": sign(claims(), make_hs(kid="rsa-1")),
    }


@pytest.mark.parametrize("attack", list(attacks()))
def test_the_classic_attacks_are_refused(gw: GatewayProcess, origin: OriginProcess, attack: str) -> None:
    token = attacks()[attack]
    status, challenge, body = call(gw, token, "/attack")
    assert status == 401, (attack, body)
    assert challenge.startswith('Bearer realm="sidegate", error="invalid_token"')
    assert body["error"] == "unauthorized"
    assert not [r for r in origin.received() if r.path == "/attack"]


def test_a_missing_token_gets_a_plain_challenge(gw: GatewayProcess) -> None:
    answer = fetch(gw, "/orders")
    assert (answer.status, answer.headers.get("WWW-Authenticate")) == (401, 'Bearer realm="sidegate"')
    assert fetch(gw, "/orders", {"Authorization": "Basic YTpi"}).status == 401


def test_a_valid_token_without_the_scope_is_forbidden(gw: GatewayProcess) -> None:
    status, challenge, _ = call(gw, sign(claims(scope="orders:read"), RSA), "/scoped")
    assert status == 403
    assert 'error="insufficient_scope"' in challenge and 'scope="orders:write"' in challenge
    assert call(gw, sign(claims(scope="orders:read orders:write"), RSA), "/scoped")[0] == 200


def test_a_key_rotation_is_picked_up_without_a_restart(gw: GatewayProcess, keys_file: Path) -> None:
    new = make_ec("P-256", "ec-2")
    token = sign(claims(), new)
    assert call(gw, token)[0] == 401
    tmp = keys_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(jwks(new)))
    tmp.replace(keys_file)
    deadline = time.monotonic() + 5
    while call(gw, token)[0] != 200:
        assert time.monotonic() < deadline, "the new key was not picked up"
        time.sleep(0.2)
    assert call(gw, sign(claims(), RSA))[0] == 401  # the old keys are gone


def test_decisions_are_counted(gw: GatewayProcess) -> None:
    call(gw, sign(claims(), RSA))
    call(gw, "bad")
    assert gw.metric("sidegate_policy_decisions_total", http_route="orders", filter="jwt", result="ok") == 1
    assert (
        gw.metric("sidegate_policy_decisions_total", http_route="orders", filter="jwt", result="invalid") == 1
    )


class _JwksServer:
    """A real HTTP server on loopback serving a JWKS document that a test can replace."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = json.dumps(document).encode()
        self.fetches = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.document)))
                self.end_headers()
                self.wfile.write(outer.document)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_keys_from_a_jwks_url_are_fetched_and_kept_fresh(gateway: GatewayFactory) -> None:
    served = _JwksServer(jwks(RSA))
    try:
        jwt = {"jwks_url": served.url, "issuer": ISSUER, "audiences": ["orders"], "refresh": 1}
        route = {"name": "url", "match": {"path_prefix": "/"}, "upstream": "app", "filters": {"jwt": jwt}}
        gw = gateway(routes=[route])
        assert call(gw, sign(claims(), RSA))[0] == 200  # the first request waits for the first fetch
        rotated = make_ed25519("ed-rotated")
        served.document = json.dumps(jwks(rotated)).encode()
        deadline = time.monotonic() + 10
        while call(gw, sign(claims(), rotated))[0] != 200:  # refreshed every second (and on a new kid)
            assert time.monotonic() < deadline, "the rotated key set was not fetched"
            time.sleep(0.2)
        assert call(gw, sign(claims(), RSA))[0] == 401
    finally:
        served.stop()
