"""Egress calls as an operator observes them on a real ``sidegate run``: the ``sidegate_egress_*``
families on ``/metrics`` (parsed with prometheus_client), ``/explain/{request-id}`` by the id a
refusal carries, CLIENT spans in ``/traces`` under the app's span (and the traceparent the
destination receives naming the egress span), and ``GET /egress``; with one process and with
two workers added up by the supervisor; and the dashboard's egress panel in a real browser."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.helpers import admin_json, admin_post, http
from support.browser import Browser, chromium_path
from support.egress_audit import audit_lines
from support.gateway import HOST, GatewayFactory, GatewayProcess, OriginProcess, free_port, send_raw

pytestmark = pytest.mark.timeout(90)

APP_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN = "00f067aa0ba902b7"
SECRET = "s3cr3t-observed-token-91b"
DURATION = "sidegate_egress_request_duration_seconds"
DEFAULT = "default_action: deny"


def observed(
    gateway: GatewayFactory, origin: OriginProcess, tmp_path: Path, *, workers: int = 1
) -> GatewayProcess:
    port = free_port()
    token = tmp_path / "token"
    token.write_text(SECRET + "\n")

    def add_egress(config: dict[str, Any]) -> None:
        config["listeners"]["egress"] = {"address": f"{HOST}:{port}"}
        config["observability"] = {
            "access_log": {"enabled": True, "path": str(tmp_path / "access.log")},
            "tracing": {"enabled": True, "sample_ratio": 1.0},
        }
        config["egress"] = {
            "destinations": [
                {
                    "name": "origin",
                    "host": HOST,
                    "ports": [origin.port],
                    "allow_private": ["127.0.0.1/32"],
                    "max_connections": 7,
                },
                {
                    "name": "partner",
                    "host": "partner.test",
                    "ports": [origin.port],
                    "origin": f"{HOST}:{origin.port}",
                    "allow_private": ["127.0.0.1/32"],
                    "credentials": {"name": "partner-token", "bearer": {"token_file": str(token)}},
                },
                {"name": "private", "host": "127.0.0.3", "ports": [9]},  # no allow_private: the guard says no
            ],
        }
        if workers > 1:
            config["workers"] = workers

    gw = gateway(mutate=add_egress)
    gw.egress_port = port  # type: ignore[attr-defined]
    gw.access_log = tmp_path / "access.log"  # type: ignore[attr-defined]
    return gw


def egress_port(gw: GatewayProcess) -> int:
    port: int = gw.egress_port  # type: ignore[attr-defined]
    return port


def call(gw: GatewayProcess, request: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    answer = send_raw(egress_port(gw), request.encode() + body)
    head, _, payload = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, payload


def refused(gw: GatewayProcess, url: str) -> dict[str, Any]:
    status, headers, payload = call(gw, f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    body: dict[str, Any] = json.loads(payload)
    assert status == 403 and body["request_id"] == headers["x-request-id"], (status, body)
    return body


def families(gw: GatewayProcess) -> dict[str, Any]:
    status, _, body = http(gw.admin_port, "/metrics")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def sample(found: dict[str, Any], family: str, name: str, **labels: str) -> float | None:
    values = [s.value for s in found[family].samples if s.name == name and s.labels == labels]
    return float(values[0]) if values else None


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_one_process_metrics_explain_traces_and_the_egress_view(
    gateway: GatewayFactory, origin: OriginProcess, tmp_path: Path
) -> None:
    gw = observed(gateway, origin, tmp_path)
    traceparent = f"00-{APP_TRACE}-{APP_SPAN}-01"
    status, _, payload = call(
        gw,
        f"POST http://{HOST}:{origin.port}/echo HTTP/1.1\r\nHost: x\r\ntraceparent: {traceparent}\r\n"
        "Content-Length: 11\r\nConnection: close\r\n\r\n",
        b"hello world",
    )
    assert (status, payload) == (200, b"hello world")
    (seen,) = origin.received()
    sent_parent = seen.header("traceparent")
    assert (
        sent_parent is not None and sent_parent.startswith(f"00-{APP_TRACE}-") and sent_parent.endswith("-01")
    )
    egress_span = sent_parent.split("-")[2]
    assert egress_span != APP_SPAN  # the destination's parent is the egress span, not the app's

    request = "GET /orders HTTP/1.1\r\nHost: partner\r\nX-Request-Id: inbound-7\r\nConnection: close\r\n\r\n"
    assert call(gw, request)[0] == 200
    denied = refused(gw, "http://api.elsewhere.test/x")
    assert denied["rule"] == DEFAULT
    guarded = refused(gw, "http://127.0.0.3:9/")
    assert guarded["rule"] == "ssrf_guard"

    # A tunnel held open shows as a gauge; its bytes count once it is closed.
    tunnel = socket.create_connection((HOST, egress_port(gw)), timeout=5)
    tunnel.sendall(f"CONNECT {HOST}:{origin.port} HTTP/1.1\r\nHost: {HOST}:{origin.port}\r\n\r\n".encode())
    assert tunnel.recv(1024).startswith(b"HTTP/1.1 200 ")
    tunnel.sendall(b"GET /status/204 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert b" 204 " in tunnel.recv(4096)
    found = families(gw)
    assert (
        sample(
            found, "sidegate_egress_tunnels_active", "sidegate_egress_tunnels_active", destination="origin"
        )
        == 1
    )
    open_calls = sample(
        found,
        "sidegate_egress_connections_active",
        "sidegate_egress_connections_active",
        destination="origin",
    )
    assert open_calls == 1
    tunnel.close()
    audit = audit_lines(gw, at_least=5)
    tunnel_line = next(line for line in audit if line["kind"] == "connect")

    found = families(gw)
    assert sample(found, DURATION, f"{DURATION}_count", destination="origin") == 2  # the POST and the tunnel
    assert sample(found, DURATION, f"{DURATION}_count", destination="partner") == 1
    assert found[DURATION].type == "histogram"
    bytes_sent = sample(
        found, "sidegate_egress_bytes", "sidegate_egress_bytes_total", destination="origin", direction="sent"
    )
    assert bytes_sent == 11 + tunnel_line["bytes_in"]
    assert sample(found, "sidegate_egress_denied", "sidegate_egress_denied_total", rule=DEFAULT) == 1
    assert sample(found, "sidegate_egress_denied", "sidegate_egress_denied_total", rule="ssrf_guard") == 1
    errors = sample(
        found,
        "sidegate_egress_errors",
        "sidegate_egress_errors_total",
        destination=DEFAULT,
        error="egress_denied",
    )
    assert errors == 1
    assert (
        sample(
            found, "sidegate_egress_tunnels_active", "sidegate_egress_tunnels_active", destination="origin"
        )
        == 0
    )
    assert (
        sample(
            found,
            "sidegate_egress_requests",
            "sidegate_egress_requests_total",
            destination="origin",
            decision="allow",
        )
        == 2
    )

    # Explain, by the id the 403 carried and by the id of an allowed call's audit line.
    explained = admin_json(gw.admin_port, f"/explain/{denied['request_id']}")
    assert explained["type"] == "egress" and explained["decision"] == "deny" and explained["rule"] == DEFAULT
    assert explained["status"] == 403 and explained["error"] == "egress_denied"
    assert explained["request"]["destination"] == "api.elsewhere.test:80"
    named = next(line for line in audit if line["kind"] == "named")
    explained = admin_json(gw.admin_port, f"/explain/{named['request_id']}")
    assert explained["decision"] == "allow" and explained["rule"] == "partner" and explained["status"] == 200
    assert explained["credential"] == "partner-token" and explained["resolved"] == f"{HOST}:{origin.port}"
    assert explained["request"]["app_request_id"] == named["app_request_id"] == "inbound-7"
    assert explained["timings_ms"]["total"] > 0
    assert SECRET not in json.dumps(explained)

    # The CLIENT span is the app's child, and the destination was told the egress span's id.
    traces = admin_json(gw.admin_port, f"/traces?trace_id={APP_TRACE}")
    (span,) = traces["spans"]
    assert span["kind"] == "client" and span["parent_span_id"] == APP_SPAN and span["span_id"] == egress_span
    assert span["attributes"]["http.response.status_code"] == 200 and span["name"] == "POST"
    assert span["attributes"]["sidegate.egress.rule"] == "origin"
    recent = admin_json(gw.admin_port, "/traces?limit=50")["spans"]
    assert {s["name"] for s in recent if s["kind"] == "client"} >= {"CONNECT", "GET", "POST"}

    # GET /egress: the destinations with their counts, the credential's state, the refusals.
    view = admin_json(gw.admin_port, "/egress")
    assert view["workers"] == 1 and view["listener"] == f"{HOST}:{egress_port(gw)}"
    destinations = {d["name"]: d for d in view["destinations"]}
    assert destinations["origin"]["allowed"] == 2 and destinations["origin"]["max_connections"] == 7
    assert destinations["origin"]["open"] == 0 and destinations["partner"]["credential"] == "partner-token"
    rules = {r["rule"]: r for r in view["rules"]}
    assert rules[DEFAULT]["denied"] == 1 and rules["ssrf_guard"]["denied"] == 1
    (credential,) = view["credentials"]
    assert credential["name"] == "partner-token" and credential["kind"] == "bearer"
    assert credential["state"] == "ok" and credential["last_refresh"] > time.time() - 60
    assert [d["request_id"] for d in view["recent_denials"]] == [guarded["request_id"], denied["request_id"]]
    assert {p["address"] for p in view["pools"]} == {f"{HOST}:{origin.port}"}
    assert SECRET not in json.dumps(view)


def test_two_workers_add_up_and_explain_through_the_supervisor(
    gateway: GatewayFactory, origin: OriginProcess, tmp_path: Path
) -> None:
    gw = observed(gateway, origin, tmp_path, workers=2)
    ids = [refused(gw, f"http://denied-{n}.test/")["request_id"] for n in range(12)]
    for _ in range(6):
        status, _, _ = call(gw, "GET /orders HTTP/1.1\r\nHost: partner\r\nConnection: close\r\n\r\n")
        assert status == 200
    audit = audit_lines(gw, at_least=18)
    assert len(audit) == 18

    found = families(gw)
    assert sample(found, DURATION, f"{DURATION}_count", destination="partner") == 6
    assert sample(found, "sidegate_egress_denied", "sidegate_egress_denied_total", rule=DEFAULT) == 12
    workers = set()
    for request_id in ids:
        explained = admin_json(gw.admin_port, f"/explain/{request_id}")
        assert explained["rule"] == DEFAULT and explained["request_id"] == request_id
        workers.add(explained["worker"])
    assert workers == {0, 1}  # the kernel spread 12 connections over both (all on one: 1 in 2048)
    parent = f"00-{APP_TRACE}-{APP_SPAN}-01"
    traced = f"GET /t HTTP/1.1\r\nHost: partner\r\ntraceparent: {parent}\r\nConnection: close\r\n\r\n"
    assert call(gw, traced)[0] == 200
    (span,) = eventually(lambda: admin_json(gw.admin_port, f"/traces?trace_id={APP_TRACE}")["spans"])
    assert span["kind"] == "client" and span["parent_span_id"] == APP_SPAN
    view = admin_json(gw.admin_port, "/egress")
    assert view["workers"] == 2
    assert {d["name"]: d["allowed"] for d in view["destinations"]}["partner"] == 7
    assert {r["rule"]: r["denied"] for r in view["rules"]}[DEFAULT] == 12
    assert sorted(d["request_id"] for d in view["recent_denials"]) == sorted(ids)
    (credential,) = view["credentials"]
    assert credential["state"] == "ok" and len(credential["workers"]) == 2


def test_without_an_egress_section_the_view_says_why(gateway: GatewayFactory) -> None:
    gw = gateway()
    status, _, body = http(gw.admin_port, "/egress")
    assert status == 404 and "no egress section" in json.loads(body)["reason"]


EGRESS_PANEL = """(() => {
  const attrs = (node) => Object.fromEntries([...node.attributes].map((a) => [a.name, a.value]));
  const q = (sel) => [...document.querySelectorAll(sel)];
  return {
    hidden: document.getElementById("egress").hidden,
    meta: document.getElementById("egress-meta").textContent,
    destinations: q("#egress-destinations tr.destination").map(attrs),
    credentials: q("#egress-credentials tr.credential").map((tr) => ({...attrs(tr), text: tr.textContent})),
    denials: q("#egress-denials tr.denial").map((tr) => ({...attrs(tr), text: tr.textContent})),
  };
})()"""


@pytest.mark.skipif(
    chromium_path() is None, reason="chromium is not installed: `make system-deps` installs it"
)
@pytest.mark.parametrize("workers", [1, 2])
def test_the_dashboard_shows_the_egress_panel(
    gateway: GatewayFactory, origin: OriginProcess, tmp_path: Path, workers: int
) -> None:
    gw = observed(gateway, origin, tmp_path, workers=workers)
    for _ in range(3):
        assert call(gw, "GET /orders HTTP/1.1\r\nHost: partner\r\nConnection: close\r\n\r\n")[0] == 200
    denied = refused(gw, "http://api.elsewhere.test/x")
    with Browser() as browser:
        browser.open(gw.admin_url("/?interval=0.5"))
        browser.wait_for("Number(document.getElementById('dashboard').dataset.egressPolls || 0) >= 1")
        panel = browser.evaluate(EGRESS_PANEL)
        assert panel["hidden"] is False and f"listener {HOST}:{egress_port(gw)}" in panel["meta"]
        assert ("1 worker" if workers == 1 else f"{workers} workers") in panel["meta"]
        rows = {row["data-destination"]: row for row in panel["destinations"]}
        assert rows["partner"]["data-allowed"] == "3" and rows["partner"]["data-denied"] == "0"
        assert rows[DEFAULT]["data-denied"] == "1" and "denied" in rows[DEFAULT]["class"]
        (credential,) = panel["credentials"]
        assert credential["data-state"] == "ok" and "partner-token" in credential["text"]
        assert "bearer" in credential["text"] and SECRET not in credential["text"]
        (denial,) = panel["denials"]
        assert denial["data-request-id"] == denied["request_id"] and denial["data-rule"] == DEFAULT
        assert "403" in denial["text"] and DEFAULT in denial["text"]
        assert "api.elsewhere.test:80" in denial["text"]

        # More traffic shows on a later poll.
        refused(gw, "http://127.0.0.3:9/")
        browser.wait_for("document.querySelectorAll('#egress-denials tr.denial').length == 2")
        newest = browser.evaluate(EGRESS_PANEL)["denials"][0]
        assert newest["data-rule"] == "ssrf_guard"


def test_the_dashboard_hides_the_panel_without_egress(gateway: GatewayFactory) -> None:
    if chromium_path() is None:
        pytest.skip("chromium is not installed: `make system-deps` installs it")
    gw = gateway()
    with Browser() as browser:
        browser.open(gw.admin_url("/?interval=0.5"))
        browser.wait_for("Number(document.getElementById('dashboard').dataset.polls) >= 2")
        assert browser.evaluate("document.getElementById('egress').hidden") is True
        assert browser.evaluate("document.getElementById('dashboard').dataset.error || null") is None


def test_a_reload_turns_tracing_on_for_egress_and_resizes_explain(
    gateway: GatewayFactory, origin: OriginProcess, tmp_path: Path
) -> None:
    gw = observed(gateway, origin, tmp_path)
    config = json.loads(json.dumps(gw.config))
    config["observability"]["tracing"] = {"enabled": False}
    gw.write_config(config)
    assert admin_post(gw.admin_port, "/reload")[0] == 200
    traceparent = f"00-{APP_TRACE}-{APP_SPAN}-01"
    named = (
        f"GET /orders HTTP/1.1\r\nHost: partner\r\ntraceparent: {traceparent}\r\nConnection: close\r\n\r\n"
    )
    assert call(gw, named)[0] == 200
    assert origin.received()[0].header("traceparent") == traceparent  # tracing off: as the app sent it
    first = refused(gw, "http://first.test/")["request_id"]
    assert admin_json(gw.admin_port, f"/traces?trace_id={APP_TRACE}")["spans"] == []

    config["observability"]["tracing"] = {"enabled": True, "sample_ratio": 1.0}
    config["observability"]["explain"] = {"recent": 1}
    gw.write_config(config)
    assert admin_post(gw.admin_port, "/reload")[0] == 200
    origin.reset()
    assert call(gw, named)[0] == 200
    sent = origin.received()[0].header("traceparent")
    assert sent is not None and sent != traceparent and sent.startswith(f"00-{APP_TRACE}-")
    (span,) = admin_json(gw.admin_port, f"/traces?trace_id={APP_TRACE}")["spans"]
    assert span["kind"] == "client" and span["span_id"] == sent.split("-")[2]
    last = refused(gw, "http://last.test/")["request_id"]
    assert http(gw.admin_port, f"/explain/{first}")[0] == 404  # only the last call is kept now
    assert admin_json(gw.admin_port, f"/explain/{last}")["rule"] == DEFAULT
    view = admin_json(gw.admin_port, "/egress")  # the counts go on across the reload
    assert {d["name"]: d["allowed"] for d in view["destinations"]}["partner"] == 2
    assert {r["rule"]: r["denied"] for r in view["rules"]}[DEFAULT] == 2


@pytest.mark.parametrize("workers", [1, 2])
def test_explain_of_an_inbound_request_lists_the_egress_calls_made_under_its_id(
    gateway: GatewayFactory, origin: OriginProcess, tmp_path: Path, workers: int
) -> None:
    gw = observed(gateway, origin, tmp_path, workers=workers)
    inbound = send_raw(
        gw.port,
        b"GET /checkout HTTP/1.1\r\nHost: shop\r\nX-Request-Id: inbound-42\r\nConnection: close\r\n\r\n",
    )
    assert inbound.startswith(b"HTTP/1.1 200 ")
    # The app serves it by calling out twice, passing the inbound request's id on (new connections:
    # with workers, the kernel may give them to any worker).
    for path in ("/orders", "/stock"):
        request = (
            f"GET {path} HTTP/1.1\r\nHost: partner\r\nX-Request-Id: inbound-42\r\nConnection: close\r\n\r\n"
        )
        assert call(gw, request)[0] == 200
    denied = "GET http://denied.test/ HTTP/1.1\r\nHost: x\r\nX-Request-Id: inbound-42\r\n\r\n"
    status, headers, _ = call(gw, denied)
    assert status == 403
    refused(gw, "http://unrelated.test/")  # another request's call: not listed

    explained = admin_json(gw.admin_port, "/explain/inbound-42")
    assert explained["route"] == "all" and explained["status"] == 200  # the inbound request's own record
    calls = explained["egress_calls"]
    assert [(c["rule"], c["decision"], c["status"]) for c in calls] == [
        ("partner", "allow", 200),
        ("partner", "allow", 200),
        (DEFAULT, "deny", 403),
    ]
    assert calls[2]["request_id"] == headers["x-request-id"]
    assert (
        admin_json(gw.admin_port, f"/explain/{calls[0]['request_id']}")["request"]["app_request_id"]
        == "inbound-42"
    )
