"""The admin JSON API through a real Sidegate: ``/routes``, ``/clusters`` and ``/stats`` after known
traffic (see ``support/traffic.py``), in one process and with ``workers: 2``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from e2e.helpers import admin_json, wait_until, worker_pids
from support import traffic
from support.gateway import GatewayFactory, GatewayProcess, OriginProcess, http_get

pytestmark = pytest.mark.timeout(60)


class Loaded(NamedTuple):
    gw: GatewayProcess
    dead: str
    before: dict[str, Any]  # /clusters before any traffic
    sent: traffic.Sent


@pytest.fixture(scope="module")
def loaded(gateway_module: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    gw, dead = traffic.start(gateway_module, tmp_path_factory.mktemp("cache"))
    before = admin_json(gw.admin_port, "/clusters")
    yield Loaded(gw, dead, before, traffic.send(gw))


def endpoints(clusters: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["name"]: u["endpoints"][0] for u in clusters["upstreams"]}


def test_routes_lists_the_running_routes_in_order_with_totals(loaded: Loaded) -> None:
    doc = admin_json(loaded.gw.admin_port, "/routes")
    assert [r["name"] for r in doc["routes"]] == ["cached", "limited", "dead", "all"]
    limited = doc["routes"][1]
    assert limited["match"] == {"path_prefix": "/limited"} and limited["upstream"] == "app"
    assert limited["filters"] == ["rate_limit"]
    assert limited["timeouts"] == {"connect": 2.0, "response": 15.0, "idle": 60.0, "send": 60.0}
    assert limited["requests"] == traffic.LIMIT + 2
    assert limited["status"] == {"2xx": traffic.LIMIT, "4xx": 2}
    assert doc["routes"][2]["upstream"] == "dead" and doc["routes"][2]["status"] == {"5xx": 2}
    assert doc["version"] == 1 and doc["unmatched_requests"] == 0


def test_clusters_shows_each_endpoint_and_its_state(loaded: Loaded, origin_server: OriginProcess) -> None:
    before = endpoints(loaded.before)
    assert before["app"]["state"] == before["dead"]["state"] == "unknown"  # no traffic yet
    now = endpoints(admin_json(loaded.gw.admin_port, "/clusters"))
    app, dead = now["app"], now["dead"]
    assert app["address"] == origin_server.address and app["state"] == "ok"
    assert app["connects"] >= 1 and app["idle"] >= 1 and app["failures"] == {}
    assert app["last_ok"] is not None
    assert dead["address"] == loaded.dead and dead["state"] == "failing"
    assert dead["failures"] == {"connect_refused": 2} and dead["connects"] == 0
    assert dead["last_failure"]["kind"] == "connect_refused"
    assert (app["requests"], dead["requests"]) == (5 + 2 + 1 + traffic.LIMIT, 2)  # no cache hit, no 429


def test_stats_counts_the_traffic_sent(loaded: Loaded) -> None:
    doc = admin_json(loaded.gw.admin_port, "/stats")
    sent = loaded.sent
    assert doc["totals"]["requests"] == sent.total == 17
    assert doc["totals"]["status"] == {"2xx": 11, "4xx": 4, "5xx": 2}
    assert doc["workers"] == 1 and doc["config_version"] == 1 and doc["uptime"] > 0
    routes = {r["name"]: r for r in doc["routes"]}
    assert list(routes) == ["cached", "limited", "dead", "all"]
    for name, route in routes.items():
        assert route["requests"] == sent.count(name) == sum(route["buckets"])
        assert len(route["buckets"]) == len(doc["buckets"]) + 1
    assert routes["all"]["codes"] == {"200": 5, "404": 2}
    assert doc["cache"] == {"hits": 2, "misses": 1, "ratio": 2 / 3, "results": {"HIT": 2, "MISS": 1}}
    assert routes["cached"]["cache"] == {"HIT": 2, "MISS": 1}
    assert doc["rate_limit"] == {"allowed": traffic.LIMIT, "rejected": 2}
    assert routes["limited"]["rate_limit"] == doc["rate_limit"]
    ups = {u["name"]: u["endpoints"][0] for u in doc["upstreams"]}
    assert ups["dead"]["state"] == "failing" and ups["app"]["state"] == "ok"
    assert doc["bytes"]["sent"] > 0 and set(doc["gauges"]) >= {"connections_active", "requests_active"}


def test_a_failing_endpoint_is_ok_again_once_a_request_succeeds(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw, dead = traffic.start(gateway, tmp_path / "cache")
    traffic.send(gw, ok=0, missing=0, hits=0, dead=1)
    assert endpoints(admin_json(gw.admin_port, "/clusters"))["dead"]["state"] == "failing"
    # The endpoint comes to life: the next request connects, and the state follows.
    host, port = dead.rsplit(":", 1)
    with socket.create_server((host, int(port))) as listener:

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        status, _ = http_get(gw.port, "/dead/again")
        thread.join(5)
    assert status == 200
    assert endpoints(admin_json(gw.admin_port, "/clusters"))["dead"]["state"] == "ok"


def test_workers_two_merge_every_workers_numbers(gateway: GatewayFactory, tmp_path: Path) -> None:
    gw, _ = traffic.start(gateway, tmp_path / "cache", workers=2)
    wait_until(lambda: len(worker_pids(gw.pid)) == 2, 15, what="two worker processes")
    sent = traffic.send(gw, ok=20, dead=4)
    doc = admin_json(gw.admin_port, "/stats")
    assert doc["workers"] == 2
    assert doc["totals"]["requests"] == sent.total
    routes = {r["name"]: r for r in doc["routes"]}
    assert routes["all"]["status"] == {"2xx": 20, "4xx": 2}
    assert routes["dead"]["codes"] == {"503": 4}
    assert doc["rate_limit"]["allowed"] + doc["rate_limit"]["rejected"] == traffic.LIMIT + 2
    clusters = admin_json(gw.admin_port, "/clusters")
    assert clusters["workers"] == 2
    dead = endpoints(clusters)["dead"]
    assert dead["state"] == "failing" and dead["failures"] == {"connect_refused": 4}
    app = endpoints(clusters)["app"]
    assert app["state"] == "ok" and app["requests"] == 20 + 2 + 1 + traffic.LIMIT
