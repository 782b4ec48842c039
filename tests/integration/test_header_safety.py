"""Headers an app could be fooled by, upgrades a proxy must not pass on, responses too large.

Through a real Sidegate and the recording origin on raw sockets: names with an underscore that
CGI/WSGI fold onto a header Sidegate sets or strips never reach the app (``underscore_headers``:
drop_managed by default, drop, reject, allow); ``Upgrade: h2c`` is never forwarded; a refused
upgrade leaves a plain HTTP/1.1 connection whose pipelined requests are served in order; a
response with too many header fields is a 502 and its upstream connection is not reused.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.gateway import GatewayFactory, GatewayProcess, OriginProcess, RawClient, get, request

pytestmark = pytest.mark.timeout(30)

H = b"Host: example.com\r\n"


@pytest.fixture(scope="module")
def gw(gateway_module: GatewayFactory) -> GatewayProcess:
    routes = [
        {
            "name": "edited",
            "match": {"path_prefix": "/edited"},
            "upstream": "app",
            "headers": {"request": {"set": {"X-Internal-Role": "gateway"}, "remove": ["X-Debug"]}},
        },
        {
            "name": "local",
            "match": {"path_prefix": "/local"},
            "upstream": "app",
            "filters": {"direct_response": {"status": 403, "body": "not here"}},
        },
        {"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"},
    ]
    return gateway_module(routes=routes)


def received_names(origin: OriginProcess) -> list[str]:
    (received,) = origin.received()
    return [name for name, _ in received.headers]


# --- header names with an underscore -----------------------------------------------------------

FOLDED = [
    "X_Forwarded_For",
    "x_forwarded_proto",
    "X-Forwarded_Host",
    "X_Request_Id",
    "X_Consumer",
    "X_Tenant",
    "Content_Length",
    "Transfer_Encoding",
    "Proxy_Authorization",
    "HTTP2_Settings",
]


@pytest.mark.parametrize("name", FOLDED)
def test_underscore_name_folding_onto_a_managed_header_is_dropped(
    gw: GatewayProcess, origin: OriginProcess, name: str
) -> None:
    before = gw.metric("sidegate_request_fields_dropped_total") or 0
    with RawClient(gw.port) as client:
        response = client.request(get("/", headers={name: "6.6.6.6", "X_Plain_Field": "kept"}))
    assert response.status == 200
    names = received_names(origin)
    assert name not in names, names
    assert "X_Plain_Field" in names  # folds onto nothing Sidegate manages: the app's business
    assert (gw.metric("sidegate_request_fields_dropped_total") or 0) == before + 1


def test_folded_forwarding_header_cannot_spoof_the_client(gw: GatewayProcess, origin: OriginProcess) -> None:
    """The app reads X-Forwarded-For; an X_Forwarded_For beside it would win in a WSGI environ."""
    with RawClient(gw.port) as client:
        client.request(get("/", headers={"X_Forwarded_For": "10.0.0.1", "X_Real_Thing": "1"}))
    (received,) = origin.received()
    assert received.header_all("X-Forwarded-For") == ["127.0.0.1"]
    assert b"10.0.0.1" not in received.raw


def test_underscore_name_folding_onto_a_route_header_edit_is_dropped(
    gw: GatewayProcess, origin: OriginProcess
) -> None:
    with RawClient(gw.port) as client:
        headers = {"X_Internal_Role": "admin", "X_Debug": "1", "X-Debug": "1"}
        assert client.request(get("/edited", headers=headers)).status == 200
    (received,) = origin.received()
    assert received.header_all("X-Internal-Role") == ["gateway"]
    assert b"admin" not in received.raw and b"X_Debug" not in received.raw and b"X-Debug" not in received.raw


def underscore_gateway(gateway: GatewayFactory, mode: str) -> GatewayProcess:
    def mutate(config: dict[str, Any]) -> None:
        config["listeners"]["inbound"]["underscore_headers"] = mode

    return gateway(mutate=mutate)


def test_underscore_headers_drop_drops_every_such_name(
    gateway: GatewayFactory, origin: OriginProcess
) -> None:
    gw = underscore_gateway(gateway, "drop")
    with RawClient(gw.port) as client:
        assert client.request(get("/", headers={"X_Anything": "1", "X-Kept": "1"})).status == 200
    names = received_names(origin)
    assert "X_Anything" not in names and "X-Kept" in names
    assert gw.metric("sidegate_request_fields_dropped_total") == 1


def test_underscore_headers_reject_answers_400(gateway: GatewayFactory, origin: OriginProcess) -> None:
    gw = underscore_gateway(gateway, "reject")
    with RawClient(gw.port) as client:
        response = client.request(get("/", headers={"X_Anything": "1"}))
        assert response.status == 400
        assert "underscore" in response.json()["detail"]
        assert client.is_closed(3.0)
    assert origin.received() == []


def test_underscore_headers_allow_passes_them_on(gateway: GatewayFactory, origin: OriginProcess) -> None:
    gw = underscore_gateway(gateway, "allow")
    with RawClient(gw.port) as client:
        assert client.request(get("/", headers={"X_Forwarded_For": "1.2.3.4"})).status == 200
    assert "X_Forwarded_For" in received_names(origin)


# --- upgrades ----------------------------------------------------------------------------------


def upgrade(path: str, protocols: str, extra: dict[str, str] | None = None) -> bytes:
    headers = {"Connection": "Upgrade", "Upgrade": protocols, **(extra or {})}
    return request("GET", path, headers=headers)


def test_h2c_upgrade_is_never_forwarded(gw: GatewayProcess, origin: OriginProcess) -> None:
    """Upgrade: h2c through a proxy smuggles requests past it: the app gets a plain request (no
    Upgrade, no HTTP2-Settings, no Connection: upgrade), and the connection goes on as HTTP/1.1."""
    h2c = upgrade(
        "/first", "h2c", {"Connection": "Upgrade, HTTP2-Settings", "HTTP2-Settings": "AAMAAABkAAQAAP__"}
    )
    with RawClient(gw.port) as client:
        client.send(h2c + get("/second"))
        first, second = client.read_response(timeout=5), client.read_response(timeout=5)
    assert first.status == 200 and first.json()["path"] == "/first"
    assert second.status == 200 and second.json()["path"] == "/second"
    received = origin.received()
    assert [r.path for r in received] == ["/first", "/second"]
    names = {name.lower() for name, _ in received[0].headers}
    assert not names & {"upgrade", "http2-settings", "connection"}, received[0].headers


def test_h2c_is_stripped_from_a_list_of_upgrades(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        client.send(upgrade("/", "h2c, websocket"))
        response = client.read_response(timeout=5)
    assert response.status == 200
    (received,) = origin.received()
    assert received.header_all("Upgrade") == ["websocket"]


@pytest.mark.parametrize("path", ["/", "/status/426", "/status/400", "/local"])
def test_refused_upgrade_keeps_serving_pipelined_requests_in_order(
    gw: GatewayProcess, origin: OriginProcess, path: str
) -> None:
    """The app (or Sidegate itself: /local) answers an upgrade request with anything but 101:
    the connection is still plain HTTP/1.1, and the requests sent right behind it (same write)
    are served, in order."""
    data = upgrade(path, "websocket", {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    expected = {"/": 200, "/local": 403}.get(path) or int(path.rsplit("/", 1)[1])
    with RawClient(gw.port) as client:
        client.send(data + get("/second") + get("/third"))
        responses = [client.read_response(timeout=5) for _ in range(3)]
        assert responses[0].status == expected
        assert [r.json()["path"] for r in responses[1:]] == ["/second", "/third"]
        assert client.request(get("/fourth")).json()["path"] == "/fourth"  # and later ones too
    upgraded = [] if path == "/local" else [path]
    assert [r.path for r in origin.received()] == [*upgraded, "/second", "/third", "/fourth"]


# --- response heads ----------------------------------------------------------------------------


def test_response_with_too_many_fields_is_502(gw: GatewayProcess, origin: OriginProcess) -> None:
    with RawClient(gw.port) as client:
        ok = client.request(get("/fields?n=90"))
        assert ok.status == 200 and ok.headers.get("X-Field-89") == "89"
        response = client.request(get("/fields?n=1000"))
        assert response.status == 502
        body = response.json()
        assert body["error"] == "protocol_error" and "header fields" in body["detail"], body
        assert client.request(get("/after")).status == 200  # the client's connection goes on
    received = origin.received()
    assert [r.target for r in received] == ["/fields?n=90", "/fields?n=1000", "/after"]
    # the connection that brought the oversized head was closed, not lent again
    assert received[2].conn_id != received[1].conn_id
