"""The compiled fast paths of the jwt and rate_limit filters decide as the filters' general paths do.

Each test compiles a route with the filters and calls its hooks the way the exchange does (the
instance's hook, which is the fast path once the filter is bound), checking what a client, the app
and ``/metrics`` would see, and that the repeated case really is taken by the fast path.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.snapshot import Route
from sidegate.filters.base import Filter, RequestContext
from sidegate.filters.counters import POLICY
from sidegate.filters.jwt import Jwt
from sidegate.http.messages import LocalResponse, RequestHead, ResponseHead
from sidegate.ratelimit.pod import remove_table
from support.jwt_tokens import jwks, make_hs, sign

ISSUER = "https://login.example.com/"
KEY = make_hs("HS256", "hs-1")
OTHER_KEY = make_hs("HS256", "hs-2")


@pytest.fixture(autouse=True, scope="module")
def _table() -> Iterator[None]:
    yield
    remove_table()  # the rate-limit table this process made, named after its pid


def route(tmp_path: Path, name: str, jwt: str = "", limit: str = "") -> Route:
    keys = tmp_path / "jwks.json"
    if not keys.exists():
        keys.write_text(json.dumps(jwks(KEY)))
    filters = ""
    if jwt is not None:
        filters += f"      jwt: {{jwks_file: {keys}, issuer: '{ISSUER}', leeway: 0{jwt}}}\n"
    if limit:
        filters += f"      rate_limit: {limit}\n"
    text = (
        textwrap.dedent(f"""\
        listeners:
          inbound: {{address: "127.0.0.1:8080"}}
          admin:   {{address: "127.0.0.1:9901"}}
        upstreams:
          app: {{endpoints: ["127.0.0.1:3000"]}}
        routes:
          - name: {name}
            match: {{path_prefix: "/"}}
            upstream: app
            filters:
        """)
        + filters
    )
    (compiled,) = compile_checked(check_text(text, "test.yaml", environ={})).routes
    return compiled


def token(lifetime: int = 300, **extra: Any) -> str:
    now = int(time.time())
    return sign({"iss": ISSUER, "sub": "alice", "exp": now + lifetime, **extra}, KEY)


def request(
    authorization: str | None = None, name: bytes = b"Authorization", query: bytes = b""
) -> RequestHead:
    req = RequestHead()
    req.method, req.path, req.host, req.query = b"GET", b"/", b"example.com", query
    req.client_ip = "10.0.0.7"
    if authorization is not None:
        req.headers.append((name, authorization.encode()))
    return req


def run(flt: Filter, req: RequestHead) -> tuple[object, RequestContext]:
    ctx = RequestContext("r", b"example.com")
    return flt.on_request(req, ctx), ctx


def decisions(route_name: str) -> dict[str, int]:
    rows = POLICY.snapshot()["decisions"]
    return {str(row[2]): int(str(row[3])) for row in rows if row[0] == route_name and row[1] == "jwt"}


def test_a_repeated_token_is_accepted_again_with_the_same_outcome(tmp_path: Path) -> None:
    (jwt,) = route(tmp_path, "fast-jwt-same").filters
    assert isinstance(jwt, Jwt)
    sent = "Bearer " + token()
    first, ctx1 = run(jwt, request(sent))
    assert first is None and len(jwt.hits.hits) == 1  # accepted by the general path, remembered
    for header in (b"Authorization", b"authorization", b"AUTHORIZATION"):
        again, ctx2 = run(jwt, request(sent, header))
        assert again is None
        assert (ctx2.consumer, ctx2.tenant, ctx2.upstream_lines) == (
            ctx1.consumer,
            ctx1.tenant,
            ctx1.upstream_lines,
        )
        assert ctx2.claims == ctx1.claims and ctx2.claims["sub"] == "alice"
    assert decisions("fast-jwt-same") == {"ok": 4}
    consumers = [row for row in POLICY.snapshot()["consumers"] if row[0] == "fast-jwt-same"]
    assert consumers == [["fast-jwt-same", "_other", "_other", 4]]


def test_a_remembered_token_is_refused_once_it_expires(tmp_path: Path) -> None:
    (jwt,) = route(tmp_path, "fast-jwt-expiry").filters
    sent = "Bearer " + token(lifetime=1)
    assert run(jwt, request(sent))[0] is None
    assert run(jwt, request(sent))[0] is None
    time.sleep(max(0.0, int(time.time()) + 1.05 - time.time()) + 1.0)
    refused, ctx = run(jwt, request(sent))
    assert isinstance(refused, LocalResponse) and refused.status == 401
    assert b"token expired" in dict(refused.headers)[b"WWW-Authenticate"]
    assert ctx.consumer == "" and not jwt.hits.hits  # forgotten


def test_a_tampered_token_with_the_same_ending_is_not_taken_for_a_remembered_one(tmp_path: Path) -> None:
    (jwt,) = route(tmp_path, "fast-jwt-tamper").filters
    good = token()
    head, _, signature = good.split(".")
    forged_payload = sign({"iss": ISSUER, "sub": "mallory", "exp": int(time.time()) + 300}, OTHER_KEY).split(
        "."
    )[1]
    forged = f"{head}.{forged_payload}.{signature}"  # the same last bytes, another subject
    assert run(jwt, request("Bearer " + good))[0] is None
    refused, ctx = run(jwt, request("Bearer " + forged))
    assert isinstance(refused, LocalResponse) and refused.status == 401 and ctx.consumer == ""
    assert run(jwt, request("Bearer " + good))[1].consumer == "alice"  # still remembered


def test_a_token_from_the_query_is_not_remembered_for_the_header(tmp_path: Path) -> None:
    (jwt,) = route(tmp_path, "fast-jwt-query", jwt=", query: access_token").filters
    assert isinstance(jwt, Jwt)
    good = token()
    accepted, _ = run(jwt, request("Basic YWxpY2U6eA==", query=b"access_token=" + good.encode()))
    assert accepted is None and not jwt.hits.hits
    refused, _ = run(jwt, request("Basic YWxpY2U6eA=="))
    assert isinstance(refused, LocalResponse) and refused.status == 401


def test_a_new_key_set_forgets_the_remembered_tokens(tmp_path: Path) -> None:
    (jwt,) = route(tmp_path, "fast-jwt-rotation").filters
    assert isinstance(jwt, Jwt)
    sent = "Bearer " + token()
    assert run(jwt, request(sent))[0] is None and jwt.hits.hits
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks(OTHER_KEY)))
    later = time.time() + 5
    os.utime(keys, (later, later))
    time.sleep(1.1)  # the key source is looked at once a second
    refused, _ = run(jwt, request(sent))
    assert isinstance(refused, LocalResponse) and refused.status == 401 and not jwt.hits.hits


def test_local_limits_count_answer_and_refuse_as_the_filter_does(tmp_path: Path) -> None:
    jwt, limit = route(tmp_path, "fast-limit", limit="{requests: 3, per: 1h, key: consumer}").filters
    sent = "Bearer " + token()
    seen = []
    for _ in range(3):
        req = request(sent)
        ctx = RequestContext("fast-limit")
        assert jwt.on_request(req, ctx) is None and limit.on_request(req, ctx) is None
        response = ResponseHead()
        assert limit.on_response(req, response, ctx) is None
        seen.append(response.headers)
    assert [dict(h)[b"RateLimit"] for h in seen] == [b'"0";r=2;t=1200', b'"0";r=1;t=2400', b'"0";r=0;t=3600']
    assert all(dict(h)[b"RateLimit-Policy"] == b'"0";q=3;w=3600' for h in seen)
    req = request(sent)
    ctx = RequestContext("fast-limit")
    jwt.on_request(req, ctx)
    refused = limit.on_request(req, ctx)
    assert isinstance(refused, LocalResponse) and refused.status == 429
    assert dict(refused.headers)[b"Retry-After"] == b"1200"
    rows = {(r[1], r[2]): r[3] for r in POLICY.snapshot()["decisions"] if r[0] == "fast-limit"}
    assert rows[("rate_limit", "allowed")] == 3 and rows[("rate_limit", "limited")] == 1
