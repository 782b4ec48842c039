"""The egress listener on a real ``sidegate run``, with real clients (curl, http.client, urllib
through HTTP_PROXY) and the recording origin on loopback: the allowed forms pass, everything
else gets a JSON refusal naming the rule, and a forbidden address is never connected to."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import admin_post
from support.egress_audit import audit_lines
from support.gateway import (
    GatewayFactory,
    GatewayProcess,
    OriginProcess,
    free_port,
    read_until_close,
    send_raw,
)
from support.stub_dns import StubDNS

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"


class Forbidden:
    """A listener on a loopback port the policy must never let the app reach; counts accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def accepted(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture(scope="module")
def forbidden() -> Iterator[Forbidden]:
    listener = Forbidden()
    yield listener
    listener.sock.close()


@pytest.fixture(scope="module")
def dns_server() -> Iterator[StubDNS]:
    """The pod's DNS, as egress.dns.servers: names the tests resolve, answered from loopback."""
    server = StubDNS()
    server.records[("localhost", "A")] = (60, [HOST])
    server.records[("api.partner.test", "A")] = (60, ["192.0.2.10"])
    server.records[("late.test", "A")] = (60, [HOST])
    server.delays["late.test"] = 0.25  # a slow lookup: the app's bytes come before the tunnel is up
    yield server
    server.close()


@pytest.fixture
def egress(
    gateway: GatewayFactory, origin: OriginProcess, forbidden: Forbidden, dns_server: StubDNS, tmp_path: Path
) -> GatewayProcess:
    port, closed = free_port(), free_port()

    def add_egress(config: dict[str, Any]) -> None:
        inbound_port = int(config["listeners"]["inbound"]["address"].rpartition(":")[2])
        config["listeners"]["egress"] = {"address": f"{HOST}:{port}"}
        config["observability"] = {"access_log": {"enabled": True, "path": str(tmp_path / "access.log")}}
        config["listeners"]["inbound"]["limits"]["head_timeout"] = "1s"
        config["egress"] = {
            "max_body": 1000,
            "dns": {"servers": [f"{HOST}:{dns_server.port}"], "timeout": "1s"},
            "destinations": [
                {"name": "origin", "host": HOST, "ports": [origin.port], "allow_private": ["127.0.0.1/32"]},
                {"name": "guarded", "host": "localhost", "ports": [forbidden.port]},
                {"name": "anything-on-the-forbidden-port", "host": "*", "ports": [forbidden.port]},
                {
                    "name": "slowpoke",
                    "host": "slow.test",
                    "ports": [origin.port],
                    "origin": f"{HOST}:{origin.port}",
                    "allow_private": ["127.0.0.1/32"],
                    "methods": ["GET"],
                    "timeouts": {"response": "500ms"},
                    "max_connections": 1,
                },
                {
                    "name": "late",
                    "host": "late.test",
                    "ports": [origin.port],
                    "allow_private": ["127.0.0.1/32"],
                },
                {
                    "name": "quiet",
                    "host": "quiet.test",
                    "ports": [origin.port],
                    "origin": f"{HOST}:{origin.port}",
                    "allow_private": ["127.0.0.1/32"],
                    "timeouts": {"idle": "500ms"},
                },
                {
                    "name": "prefixed",
                    "host": "prefixed.test",
                    "ports": [origin.port],
                    "origin": f"{HOST}:{origin.port}",
                    "allow_private": ["127.0.0.1/32"],
                    "path_prefixes": ["/v1/"],
                },
                {"name": "closed", "host": "127.0.0.2", "ports": [closed], "allow_private": ["127.0.0.0/8"]},
                {"name": "partner", "host": "*.partner.test", "schemes": ["https"]},
                {
                    "name": "rebinding",
                    "host": "rebind.test",
                    "ports": [origin.port],
                    "allow_private": ["127.0.0.1/32"],
                },
                {
                    "name": "self",
                    "host": HOST,
                    "ports": [inbound_port, port],
                    "allow_private": ["127.0.0.0/8"],
                },
            ],
        }

    gw = gateway(mutate=add_egress)
    gw.closed_port = closed  # type: ignore[attr-defined]
    gw.egress_port = port  # type: ignore[attr-defined]
    gw.access_log = tmp_path / "access.log"  # type: ignore[attr-defined]
    return gw


def proxy_port(gw: GatewayProcess) -> int:
    port: int = gw.egress_port  # type: ignore[attr-defined]
    return port


def curl(gw: GatewayProcess, url: str, *extra: str) -> tuple[int, bytes]:
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-x",
            f"http://{HOST}:{proxy_port(gw)}",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            *extra,
            url,
        ],
        capture_output=True,
        timeout=20,
        check=False,
        env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
    )
    body, _, code = out.stdout.rpartition(b"\n")
    return int(code), body


def test_absolute_form_reaches_the_origin_in_origin_form_with_host_rewritten(
    egress: GatewayProcess, origin: OriginProcess
) -> None:
    request = (
        f"GET http://{HOST}:{origin.port}/items?q=1 HTTP/1.1\r\nHost: somewhere.else\r\n"
        "Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\nConnection: close, X-Hop\r\n"
        "X-Hop: secret\r\nX-Kept: yes\r\nX-Request-Id: app-id-1\r\n"
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"
    ).encode()
    answer = send_raw(proxy_port(egress), request)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    (seen,) = origin.received()
    assert seen.raw.startswith(b"GET /items?q=1 HTTP/1.1\r\n")
    headers = seen.raw.partition(b"\r\n\r\n")[0].lower()
    assert f"\r\nhost: {HOST}:{origin.port}\r\n".encode() in headers
    assert b"somewhere.else" not in headers
    headers += b"\r\n"
    for dropped in (b"proxy-connection", b"proxy-authorization", b"x-hop"):
        assert dropped not in headers
    assert b"\r\nx-kept: yes\r\n" in headers
    assert b"\r\nvia: 1.1 sidegate-egress\r\n" in headers
    assert b"\r\nx-request-id: app-id-1\r\n" in headers  # the app's own, as it sent them
    assert b"\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n" in headers
    assert b"x-forwarded-for" not in headers


def test_curl_through_the_proxy(egress: GatewayProcess, origin: OriginProcess) -> None:
    status, body = curl(egress, f"http://{HOST}:{origin.port}/hello")
    assert status == 200
    assert json.loads(body)["target"] == "/hello"


def test_http_client_posts_through_the_proxy(egress: GatewayProcess, origin: OriginProcess) -> None:
    conn = http.client.HTTPConnection(HOST, proxy_port(egress), timeout=5)
    conn.request("POST", f"http://{HOST}:{origin.port}/echo", body=b"hello egress")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"hello egress")
    conn.request("GET", f"http://{HOST}:{origin.port}/second")  # the same client connection
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["target"] == "/second"
    conn.close()


def test_urllib_with_http_proxy_env(egress: GatewayProcess, origin: OriginProcess) -> None:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["HTTP_PROXY"] = f"http://{HOST}:{proxy_port(egress)}"
    code = (
        f"import urllib.request; print(urllib.request.urlopen('http://{HOST}:{origin.port}/via-env').status)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=20, check=True)
    assert out.stdout.strip() == b"200"
    assert origin.received()[0].raw.startswith(b"GET /via-env ")


def test_named_destination_needs_only_a_base_url(egress: GatewayProcess, origin: OriginProcess) -> None:
    conn = http.client.HTTPConnection(HOST, proxy_port(egress), timeout=5)
    conn.request("GET", "/named?x=1", headers={"Host": "origin"})
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["target"] == "/named?x=1"
    assert f"\r\nhost: {HOST}:{origin.port}\r\n".encode() in origin.received()[0].raw.lower()


def test_a_host_naming_no_destination_is_refused(egress: GatewayProcess, origin: OriginProcess) -> None:
    answer = send_raw(proxy_port(egress), b"GET / HTTP/1.1\r\nHost: unknown-thing\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "egress_denied"
    assert origin.received() == []


def test_denied_calls_get_403_json_with_the_rule(egress: GatewayProcess) -> None:
    status, body = curl(egress, "http://api.partner.test/")
    assert status == 403
    denial = json.loads(body)
    assert denial["error"] == "egress_denied" and denial["rule"] == "default_action: deny"
    assert "scheme http is not allowed by destination 'partner'" in denial["reason"]
    status, body = curl(egress, "http://elsewhere.test/")
    denial = json.loads(body)  # the only destination for any host is on another port
    assert status == 403 and denial["rule"] == "default_action: deny" and "port 80" in denial["reason"]


def test_redirects_are_passed_to_the_app(egress: GatewayProcess, origin: OriginProcess) -> None:
    status, _ = curl(egress, f"http://{HOST}:{origin.port}/status/302")
    assert status == 302
    assert len(origin.received()) == 1


@pytest.mark.parametrize(
    "authority",
    ["2130706433", "0x7f.1", "user@127.0.0.1", "127.0.0.1%25eth0", "127.1"],
)
def test_malformed_authorities_get_400(egress: GatewayProcess, origin: OriginProcess, authority: str) -> None:
    request = f"GET http://{authority}:{origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    answer = send_raw(proxy_port(egress), request)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert origin.received() == []


def test_connect_tunnel_carries_bytes_both_ways(egress: GatewayProcess, origin: OriginProcess) -> None:
    status, body = curl(egress, f"http://{HOST}:{origin.port}/tunnelled", "-p")  # curl --proxytunnel
    assert status == 200
    assert json.loads(body)["target"] == "/tunnelled"
    with socket.create_connection((HOST, proxy_port(egress)), timeout=5) as sock:
        sock.sendall(f"CONNECT {HOST}:{origin.port} HTTP/1.1\r\nHost: {HOST}:{origin.port}\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"abcde")
    tunnels = [line for line in audit_lines(egress, 2) if line["kind"] == "connect"]
    assert tunnels and tunnels[-1]["decision"] == "allow" and tunnels[-1]["bytes_out"] > 0


def test_connect_to_a_denied_port_is_refused(egress: GatewayProcess) -> None:
    answer = send_raw(proxy_port(egress), b"CONNECT api.partner.test:8443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert "port 8443" in json.loads(answer.partition(b"\r\n\r\n")[2])["reason"]


def test_a_name_resolving_to_loopback_is_never_dialled(egress: GatewayProcess, forbidden: Forbidden) -> None:
    forbidden.accepted()
    status, body = curl(egress, f"http://localhost:{forbidden.port}/")
    assert status == 403
    denial = json.loads(body)
    assert denial["rule"] == "ssrf_guard" and "loopback" in denial["reason"]
    answer = send_raw(proxy_port(egress), f"CONNECT localhost:{forbidden.port} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert forbidden.accepted() == 0


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.2", "0.0.0.0", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::1]", "[::]"]
)
def test_every_spelling_of_a_local_address_is_refused_unconnected(
    egress: GatewayProcess, forbidden: Forbidden, host: str
) -> None:
    forbidden.accepted()
    status, body = curl(egress, f"http://{host}:{forbidden.port}/")
    assert status == 403, body
    assert json.loads(body)["rule"] == "ssrf_guard"
    answer = send_raw(proxy_port(egress), f"CONNECT {host}:{forbidden.port} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 403 ") and b"ssrf_guard" in answer
    assert forbidden.accepted() == 0


def test_sidegate_never_reaches_itself(egress: GatewayProcess, origin: OriginProcess) -> None:
    for port in (egress.port, proxy_port(egress)):
        status, body = curl(egress, f"http://{HOST}:{port}/")
        assert status == 403 and json.loads(body)["rule"] == "loop_detection"
    request = f"GET http://{HOST}:{origin.port}/ HTTP/1.1\r\nHost: x\r\nVia: 1.1 sidegate-egress\r\n\r\n"
    answer = send_raw(proxy_port(egress), request.encode())
    assert answer.startswith(b"HTTP/1.1 403 ") and b"loop_detection" in answer
    assert origin.received() == []


def test_ambiguous_framing_is_rejected(egress: GatewayProcess, origin: OriginProcess) -> None:
    request = (
        f"POST http://{HOST}:{origin.port}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ).encode()
    assert send_raw(proxy_port(egress), request).startswith(b"HTTP/1.1 400 ")
    assert origin.received() == []
    (line,) = audit_lines(egress)
    assert line["kind"] == "unreadable" and line["status"] == 400 and line["decision"] == "deny"


def test_every_call_leaves_one_audit_line(egress: GatewayProcess, origin: OriginProcess) -> None:
    curl(egress, f"http://{HOST}:{origin.port}/audited")
    curl(egress, "http://elsewhere.test/")
    allowed, denied = audit_lines(egress, 2)
    assert allowed["decision"] == "allow" and allowed["rule"] == "origin" and allowed["status"] == 200
    assert allowed["resolved"] == f"{HOST}:{origin.port}" and allowed["path"] == "/audited"
    assert allowed["request_id"] and allowed["credential"] is None
    assert (
        denied["decision"] == "deny"
        and denied["status"] == 403
        and denied["destination"] == "elsewhere.test:80"
    )


def test_head_requests_end_at_the_head(egress: GatewayProcess, origin: OriginProcess) -> None:
    conn = http.client.HTTPConnection(HOST, proxy_port(egress), timeout=5)
    conn.request("HEAD", f"http://{HOST}:{origin.port}/head-cl")
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b""
    conn.request("GET", f"http://{HOST}:{origin.port}/after-head")  # the connection is still in step
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["target"] == "/after-head"
    conn.close()


def test_a_body_over_max_body_gets_413(egress: GatewayProcess, origin: OriginProcess) -> None:
    conn = http.client.HTTPConnection(HOST, proxy_port(egress), timeout=5)
    conn.request("POST", f"http://{HOST}:{origin.port}/echo", body=b"x" * 2000)
    response = conn.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"] == "payload_too_large"
    assert origin.received() == []


def named_call(gw: GatewayProcess, path: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(HOST, proxy_port(gw), timeout=10)
    conn.request(method, path, headers={"Host": "slowpoke"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, json.loads(body) if body.startswith(b"{") else {}


def test_a_named_destination_is_decided_by_its_own_rule(egress: GatewayProcess) -> None:
    status, body = named_call(egress, "/fine")
    assert status == 200 and body["target"] == "/fine"
    status, body = named_call(egress, "/fine", method="DELETE")
    assert status == 403 and "method DELETE is not allowed by destination 'slowpoke'" in body["reason"]


def test_path_prefixes_are_checked_on_the_normalised_path(
    egress: GatewayProcess, origin: OriginProcess
) -> None:
    conn = http.client.HTTPConnection(HOST, proxy_port(egress), timeout=5)
    conn.request("GET", "/v1/ok", headers={"Host": "prefixed"})
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["target"] == "/v1/ok"
    answer = send_raw(proxy_port(egress), b"GET /v1/../admin HTTP/1.1\r\nHost: prefixed\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403 ") and b"path /admin is not under" in answer
    assert [r.target for r in origin.received()] == ["/v1/ok"]


def test_expect_continue_is_answered_once_allowed(egress: GatewayProcess, origin: OriginProcess) -> None:
    started = time.monotonic()
    status, body = curl(
        egress, f"http://{HOST}:{origin.port}/echo", "-H", "Expect: 100-continue", "-d", "x" * 10
    )
    assert (status, body) == (200, b"x" * 10)
    assert time.monotonic() - started < 0.9  # curl waits 1 s for a 100 it never gets


def test_the_response_timeout_is_the_destinations(egress: GatewayProcess) -> None:
    started = time.monotonic()
    status, body = named_call(egress, "/slow?seconds=3")
    assert status == 504 and body["error"] == "egress_timeout"
    assert time.monotonic() - started < 2.5


def test_max_connections_per_destination(egress: GatewayProcess) -> None:
    import threading

    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(named_call(egress, "/slow?seconds=0.3")[0]))
    first.start()
    time.sleep(0.1)
    status, body = named_call(egress, "/second")
    first.join()
    assert results == [200]
    assert status == 503 and body["error"] == "egress_busy" and body["rule"] == "slowpoke"


def test_a_destination_that_refuses_connections_gets_502(egress: GatewayProcess) -> None:
    port: int = egress.closed_port  # type: ignore[attr-defined]
    status, body = curl(egress, f"http://127.0.0.2:{port}/")
    assert status == 502 and json.loads(body)["error"] == "egress_upstream_failed"
    answer = send_raw(proxy_port(egress), f"CONNECT 127.0.0.2:{port} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 502 ")


def test_a_request_that_stops_coming_gets_408(egress: GatewayProcess, origin: OriginProcess) -> None:
    started = time.monotonic()
    answer = send_raw(proxy_port(egress), f"GET http://{HOST}:{origin.port}/ HTTP/1.1\r\nHo".encode(), 5)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 3
    assert origin.received() == []


def test_connect_with_bytes_behind_the_head(egress: GatewayProcess, origin: OriginProcess) -> None:
    data = (
        f"CONNECT {HOST}:{origin.port} HTTP/1.1\r\n\r\n"
        "GET /early HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = send_raw(proxy_port(egress), data)
    assert answer.startswith(b"HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200 ")
    assert origin.received()[0].raw.startswith(b"GET /early ")


def test_bytes_sent_while_the_tunnel_opens_are_carried(egress: GatewayProcess, origin: OriginProcess) -> None:
    """A client that does not wait for the 200 (its bytes arrive while the name is still being
    resolved) loses none of them: they go to the destination once the tunnel is up, in order."""
    with socket.create_connection((HOST, proxy_port(egress)), timeout=5) as sock:
        sock.sendall(f"CONNECT late.test:{origin.port} HTTP/1.1\r\n\r\n".encode())
        time.sleep(0.1)
        sock.sendall(b"GET /sent-early HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.05)
        sock.sendall(b"Connection: close\r\n\r\n")
        answer = read_until_close(sock, 3)
    assert answer.startswith(b"HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200 "), answer[:200]
    assert origin.received()[0].raw.startswith(b"GET /sent-early HTTP/1.1\r\nHost: x\r\nConnection: close")


def test_an_idle_tunnel_is_closed(egress: GatewayProcess, origin: OriginProcess) -> None:
    # The idle limit is the deciding destination's: "origin" (300 s) is the first for 127.0.0.1,
    # so reload with "quiet" (500 ms) first for it.
    config = dict(egress.config)
    config["egress"] = dict(config["egress"])
    destinations = config["egress"]["destinations"]
    quiet = next(d for d in destinations if d["name"] == "quiet")
    config["egress"]["destinations"] = [{**quiet, "host": HOST}] + [d for d in destinations if d is not quiet]
    egress.write_config(config)
    status, answer = admin_post(egress.admin_port, "/reload")
    assert status == 200, answer
    started = time.monotonic()
    with socket.create_connection((HOST, proxy_port(egress)), timeout=5) as sock:
        sock.sendall(f"CONNECT {HOST}:{origin.port} HTTP/1.1\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
        assert sock.recv(100) == b""  # closed by the idle limit, not by the 5 s socket timeout
    assert time.monotonic() - started < 3
    (line,) = [a for a in audit_lines(egress) if a["kind"] == "connect" and a["status"] == 200]
    assert line["rule"] == "quiet" and line["closed"] == "idle"


def test_a_reload_changes_the_destinations(egress: GatewayProcess, origin: OriginProcess) -> None:
    assert curl(egress, f"http://{HOST}:{origin.port}/before")[0] == 200
    config = dict(egress.config)
    config["egress"] = {
        **config["egress"],
        "destinations": [d for d in config["egress"]["destinations"] if d["name"] != "origin"],
    }
    egress.write_config(config)
    status, answer = admin_post(egress.admin_port, "/reload")
    assert status == 200, answer
    status, body = curl(egress, f"http://{HOST}:{origin.port}/after")
    assert status == 403 and json.loads(body)["rule"] == "default_action: deny"


def test_pipelined_requests_are_answered_one_then_closed(
    egress: GatewayProcess, origin: OriginProcess
) -> None:
    one = f"GET http://{HOST}:{origin.port}/one HTTP/1.1\r\nHost: x\r\n\r\n"
    two = f"GET http://{HOST}:{origin.port}/two HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = send_raw(proxy_port(egress), (one + two).encode())
    assert answer.count(b"HTTP/1.1 200 ") == 1
    assert [r.target for r in origin.received()] == ["/one"]


def test_egress_with_workers(gateway: GatewayFactory, origin: OriginProcess) -> None:
    port = free_port()
    destination = {"name": "origin", "host": HOST, "ports": [origin.port], "allow_private": ["127.0.0.1/32"]}

    def add_egress(config: dict[str, Any]) -> None:
        config["listeners"]["egress"] = {"address": f"{HOST}:{port}"}
        config["egress"] = {"destinations": [destination]}

    gw = gateway(mutate=add_egress, workers=2)
    gw.egress_port = port  # type: ignore[attr-defined]
    for n in range(4):
        status, body = curl(gw, f"http://{HOST}:{origin.port}/w{n}")
        assert status == 200 and json.loads(body)["target"] == f"/w{n}"


def test_a_call_under_way_finishes_during_the_drain(egress: GatewayProcess, origin: OriginProcess) -> None:
    import signal
    import threading

    results: list[tuple[int, bytes]] = []
    call = threading.Thread(
        target=lambda: results.append(curl(egress, f"http://{HOST}:{origin.port}/slow?seconds=1"))
    )
    call.start()
    time.sleep(0.3)
    egress.proc.send_signal(signal.SIGTERM)
    call.join()
    assert results and results[0][0] == 200
    assert egress.proc.wait(10) == 0


def test_a_chunked_request_body_is_streamed_on_chunked(egress: GatewayProcess, origin: OriginProcess) -> None:
    url = f"http://{HOST}:{origin.port}/echo"
    status, body = curl(egress, url, "-H", "Transfer-Encoding: chunked", "--data-binary", "chunked body")
    assert (status, body) == (200, b"chunked body")
    (seen,) = origin.received()
    assert seen.header("transfer-encoding") == "chunked" and seen.header("content-length") is None


def test_host_names_match_whatever_their_case(egress: GatewayProcess) -> None:
    answer = send_raw(proxy_port(egress), b"GET http://API.Partner.TEST/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert "by destination 'partner'" in json.loads(answer.partition(b"\r\n\r\n")[2])["reason"]


def test_a_name_that_rebinds_to_a_forbidden_address_is_refused_unconnected(
    egress: GatewayProcess, origin: OriginProcess, dns_server: StubDNS
) -> None:
    """DNS rebinding: the first answer is allowed and dialled; when the name then answers a
    forbidden address, that exact address is checked (no second look-up) and never connected to."""
    trap = socket.socket()
    trap.bind(("127.0.0.2", origin.port))  # the forbidden address, on the port the policy allows
    trap.listen(8)
    trap.setblocking(False)
    try:
        dns_server.records[("rebind.test", "A")] = (0, [HOST])
        status, _ = curl(egress, f"http://rebind.test:{origin.port}/first")
        assert status == 200
        dns_server.records[("rebind.test", "A")] = (0, ["127.0.0.2"])
        status, body = curl(egress, f"http://rebind.test:{origin.port}/second")
        assert status == 403, body
        denial = json.loads(body)
        assert denial["rule"] == "ssrf_guard" and "loopback" in denial["reason"]
        with pytest.raises(BlockingIOError):
            trap.accept()
        assert dns_server.asked("rebind.test") >= 2  # asked again: TTL 0 is not cached
    finally:
        trap.close()
