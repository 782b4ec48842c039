"""``workers: 2``: a supervisor, two worker processes sharing the inbound port (SO_REUSEPORT).

Which worker answered is visible in ``X-Request-Id``: its first 8 hex digits are random per
process. Connections are new for every request (urllib) so the kernel spreads them.
"""

from __future__ import annotations

import copy
import os
import signal
from typing import Any

import pytest

from e2e.helpers import (
    admin_json,
    admin_post,
    alive,
    children,
    connection_refused,
    detach_from_watcher,
    direct,
    http,
    metric,
    metrics,
    ready_status,
    rid_prefix,
    wait_until,
    worker_pids,
    write_yaml,
)
from support.gateway import GatewayProcess

pytestmark = pytest.mark.timeout(60)


def start(gateway: Any, body: str = "v1") -> GatewayProcess:
    gw: GatewayProcess = gateway(routes=[direct("count", "/", body)], workers=2)
    wait_until(lambda: len(worker_pids(gw.pid)) == 2, 15, what="two worker processes")
    return gw


def hit(gw: GatewayProcess, n: int, path: str = "/") -> tuple[set[str], list[str]]:
    """``n`` GETs, each on a new connection: (X-Request-Id prefixes seen, bodies)."""
    prefixes, bodies = set(), []
    for _ in range(n):
        status, headers, body = http(gw.port, path)
        assert status == 200, (status, body)
        prefixes.add(rid_prefix(headers))
        bodies.append(body.decode())
    return prefixes, bodies


def with_body(gw: GatewayProcess, body: str) -> dict[str, Any]:
    config = copy.deepcopy(gw.config)
    config["routes"] = [direct("count", "/", body)]
    return config


def test_two_workers_are_children_of_the_supervisor_and_both_serve(gateway: Any) -> None:
    gw = start(gateway)
    pids = worker_pids(gw.pid)
    assert len(pids) == 2, [(p, children(gw.pid)) for p in pids]
    dump = admin_json(gw.admin_port, "/config_dump")
    assert sorted(w["pid"] for w in dump["workers"]) == pids
    assert all(w["ready"] for w in dump["workers"])
    prefixes, bodies = hit(gw, 200)
    assert len(prefixes) == 2, f"over 200 connections only {prefixes} answered"
    assert set(bodies) == {"v1"}


def test_metrics_count_the_requests_of_both_workers(gateway: Any) -> None:
    gw = start(gateway)
    sent = 150
    prefixes, _ = hit(gw, sent)
    assert len(prefixes) == 2  # so both workers have counted some
    samples = metrics(gw.admin_port)
    counted = metric(
        samples, "http_server_requests_total", http_route="count", http_response_status_code="200"
    )
    assert counted == sent
    histogram = metric(samples, "http_server_request_duration_seconds_count", http_route="count")
    assert histogram == sent


def test_a_reload_reaches_every_worker(gateway: Any) -> None:
    gw = start(gateway)
    gw.write_config(with_body(gw, "v2"))
    status, answer = admin_post(gw.admin_port, "/reload")
    assert status == 200, answer
    prefixes, bodies = hit(gw, 100)
    assert len(prefixes) == 2
    assert set(bodies) == {"v2"}, "a worker still serves the old config"
    assert admin_json(gw.admin_port, "/config_dump")["last_reload"]["ok"] is True

    # The supervisor's file watcher and SIGHUP reach the workers too.
    gw.write_config(with_body(gw, "v3"))
    wait_until(lambda: set(hit(gw, 20)[1]) == {"v3"}, 2, what="every worker serving v3")
    real = detach_from_watcher(gw)
    write_yaml(real, with_body(gw, "v4"))
    os.kill(gw.pid, signal.SIGHUP)
    wait_until(lambda: set(hit(gw, 20)[1]) == {"v4"}, 2, what="every worker serving v4")

    # A rejected file changes nothing on any worker.
    bad = with_body(gw, "v5")
    bad["routes"][0]["upstream"] = "nowhere"
    write_yaml(real, bad)
    status, answer = admin_post(gw.admin_port, "/reload")
    assert status == 400, answer
    prefixes, bodies = hit(gw, 60)
    assert len(prefixes) == 2
    assert set(bodies) == {"v4"}
    dump = admin_json(gw.admin_port, "/config_dump")
    assert dump["last_reload"]["ok"] is False
    assert "nowhere" in dump["last_reload"]["error"]


def test_sigterm_exits_0_and_leaves_no_process_behind(gateway: Any) -> None:
    gw = start(gateway)
    family = children(gw.pid)  # the workers and multiprocessing's helper
    assert len(worker_pids(gw.pid)) == 2
    assert gw.stop(15) == 0, gw.log()
    wait_until(lambda: not [p for p in family if alive(p)], 5, what=f"children {family} gone")
    assert connection_refused(gw.port), "something still listens on the inbound port"


def test_a_killed_worker_is_started_again(gateway: Any) -> None:
    gw = start(gateway)
    gw.write_config(with_body(gw, "v2"))
    assert admin_post(gw.admin_port, "/reload")[0] == 200
    before_prefixes, _ = hit(gw, 60)
    victim, survivor = worker_pids(gw.pid)
    os.kill(victim, signal.SIGKILL)

    wait_until(lambda: ready_status(gw.admin_port) == 503, 2, interval=0.01, what="/ready 503 (degraded)")
    wait_until(lambda: ready_status(gw.admin_port) == 200, 10, what="/ready 200 again")
    pids = worker_pids(gw.pid)
    assert len(pids) == 2, pids
    assert victim not in pids and survivor in pids
    assert sorted(w["pid"] for w in admin_json(gw.admin_port, "/config_dump")["workers"]) == pids

    prefixes, bodies = hit(gw, 200)
    assert len(prefixes) == 2
    assert prefixes - before_prefixes, "the new worker does not answer"
    assert set(bodies) == {"v2"}, "the restarted worker runs an old config"


def test_workers_exit_when_the_supervisor_is_killed(gateway: Any) -> None:
    gw = start(gateway)
    pids = worker_pids(gw.pid)
    gateway.started.remove(gw)  # it will not exit 0: it is killed on purpose
    try:
        gw.kill()
        wait_until(lambda: not [p for p in pids if alive(p)], 10, what="orphaned workers exit")
        assert connection_refused(gw.port)
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
