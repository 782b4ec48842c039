"""Live reload as an operator sees it: POST /reload, SIGHUP, file and ConfigMap changes.

Which config answers is made visible with a ``direct_response`` route whose body is the version
(``/v`` answers ``v1``, then ``v2`` ...), or a request header the route sets for proxied requests.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from e2e.helpers import (
    ConfigMapDir,
    DemoApp,
    admin_json,
    admin_post,
    body_of,
    detach_from_watcher,
    direct,
    metric,
    metrics,
    proxied,
    wait_until,
    write_yaml,
)
from support.gateway import GatewayProcess, OriginProcess, RawClient, free_port, get, make_config

pytestmark = pytest.mark.timeout(60)

RELOAD_WITHIN = 1.0  # seconds: what "takes effect within 1 s" means here


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoApp]:
    app = DemoApp(tmp_path_factory.mktemp("demo") / "demo.log")
    yield app
    app.stop()


def versioned_routes(version: str) -> list[dict[str, Any]]:
    """``/v`` answers the version itself; everything else goes to the app with X-Config-Version."""
    return [
        direct("v", "/v", version),
        proxied("all", "/", headers={"request": {"set": {"X-Config-Version": version}}}),
    ]


def with_version(config: dict[str, Any], version: str) -> dict[str, Any]:
    new = copy.deepcopy(config)
    new["routes"] = versioned_routes(version)
    return new


def start(gateway: Any, version: str = "v1", **options: Any) -> GatewayProcess:
    gw: GatewayProcess = gateway(routes=versioned_routes(version), **options)
    assert body_of(gw.port, "/v") == version
    return gw


def serves(gw: GatewayProcess, version: str) -> bool:
    return body_of(gw.port, "/v") == version


def reloads(gw: GatewayProcess, result: str) -> float:
    return metric(metrics(gw.admin_port), "sidegate_config_reloads_total", result=result)


# --- the three triggers ------------------------------------------------------------------------


def test_post_reload_applies_the_new_file_before_answering(gateway: Any) -> None:
    gw = start(gateway)
    real = detach_from_watcher(gw)
    write_yaml(real, with_version(gw.config, "v2"))
    status, answer = admin_post(gw.admin_port, "/reload")
    assert status == 200, answer
    assert answer["status"] == "reloaded"
    assert body_of(gw.port, "/v") == "v2"  # no waiting: the reload is done when POST answers
    dump = admin_json(gw.admin_port, "/config_dump")
    assert dump["version"] == 2
    assert dump["last_reload"]["ok"] is True
    assert reloads(gw, "ok") == 1


def test_sighup_reloads_within_a_second(gateway: Any) -> None:
    gw = start(gateway)
    real = detach_from_watcher(gw)
    write_yaml(real, with_version(gw.config, "v2"))
    sent = time.monotonic()
    os.kill(gw.pid, signal.SIGHUP)
    wait_until(lambda: serves(gw, "v2"), RELOAD_WITHIN, what="v2 served after SIGHUP")
    assert time.monotonic() - sent < RELOAD_WITHIN
    assert gw.proc.poll() is None, "SIGHUP stopped the gateway"


def test_a_replaced_file_is_picked_up_within_a_second(gateway: Any) -> None:
    gw = start(gateway)
    for version in ("v2", "v3"):
        gw.write_config(with_version(gw.config, version))  # write a temp file, rename over
        wait_until(lambda v=version: serves(gw, v), RELOAD_WITHIN, what=f"{version} served")
    assert admin_json(gw.admin_port, "/config_dump")["version"] == 3


def test_a_file_edited_in_place_is_picked_up_within_a_second(gateway: Any) -> None:
    import yaml

    gw = start(gateway)
    with open(gw.config_path, "w") as file:  # truncate and rewrite the same inode, like `cat >`
        file.write(yaml.safe_dump(with_version(gw.config, "v2"), sort_keys=False))
    wait_until(lambda: serves(gw, "v2"), RELOAD_WITHIN, what="v2 served after an in-place edit")
    assert reloads(gw, "failed") == 0, "a half-written file was loaded"


class ConfigMapGateway(GatewayProcess):
    """A gateway whose ``sidegate.yaml`` is a ConfigMap volume file (``..data`` symlink swaps)."""

    configmap: ConfigMapDir | None = None

    def write_config(self, config: dict[str, Any]) -> None:
        self.config = config
        if self.configmap is None:
            self.configmap = ConfigMapDir(self.workdir)
        self.configmap.write(config)


def test_a_kubernetes_configmap_update_is_picked_up(
    gateway: Any, origin: OriginProcess, tmp_path: Path
) -> None:
    port, admin_port = free_port(), free_port()
    workdir = tmp_path / "configmap"
    workdir.mkdir()
    config = make_config(origin.address, port=port, admin_port=admin_port, routes=versioned_routes("v1"))
    gw = ConfigMapGateway(workdir, config, port=port, admin_port=admin_port)
    gateway.started.append(gw)  # stopped (and its exit code checked) by the fixture
    assert gw.config_path.is_symlink()
    assert os.readlink(workdir / "..data").startswith("..")
    assert serves(gw, "v1")
    for n, version in enumerate(("v2", "v3"), start=1):
        gw.write_config(with_version(config, version))
        wait_until(lambda v=version: serves(gw, v), RELOAD_WITHIN, what=f"{version} after ..data swap")
        time.sleep(0.3)  # let any late events of the swap arrive: they must not reload again
        assert reloads(gw, "ok") == n, "one ConfigMap update should be one reload"
    assert reloads(gw, "failed") == 0, gw.log()


# --- bad configs -------------------------------------------------------------------------------

BAD = {
    "unknown-upstream": (lambda cfg: cfg.replace("upstream: app", "upstream: nowhere", 1), "nowhere"),
    "yaml-syntax": (lambda cfg: cfg[: cfg.index("routes:")] + "routes: [\n  - {name: x\n", "YAML"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_file_keeps_the_old_config_and_is_reported_then_a_good_one_recovers(
    gateway: Any, kind: str
) -> None:
    gw = start(gateway)
    before = metrics(gw.admin_port)
    breaker, word = BAD[kind]
    good_text = gw.config_path.read_text()
    tmp = gw.config_path.with_suffix(".tmp")
    tmp.write_text(breaker(good_text))
    os.replace(tmp, gw.config_path)

    wait_until(lambda: reloads(gw, "failed") >= 1, RELOAD_WITHIN + 1, what="a failed reload in the metrics")
    assert serves(gw, "v1"), "the old config must keep serving"
    assert body_of(gw.port, "/anything").startswith("{")  # proxied routes too
    dump = admin_json(gw.admin_port, "/config_dump")
    assert dump["last_reload"]["ok"] is False
    assert word in dump["last_reload"]["error"]
    assert dump["version"] == 1
    after = metrics(gw.admin_port)
    assert metric(after, "sidegate_config_last_reload_success") == 0
    assert metric(after, "sidegate_config_version") == 1
    assert metric(after, "sidegate_config_reloads_total", result="ok") == metric(
        before, "sidegate_config_reloads_total", result="ok"
    )
    log = wait_until(lambda: word in gw.log() and gw.log(), 2.0, what="the rejection in the log")
    assert any("reload" in line and word in line for line in log.splitlines()), log

    gw.write_config(with_version(gw.config, "v3"))
    wait_until(lambda: serves(gw, "v3"), RELOAD_WITHIN, what="v3 served after the fix")
    dump = admin_json(gw.admin_port, "/config_dump")
    assert dump["last_reload"] == {**dump["last_reload"], "ok": True, "error": None}
    assert metric(metrics(gw.admin_port), "sidegate_config_last_reload_success") == 1


def test_post_reload_of_a_bad_file_answers_400_with_the_error(gateway: Any) -> None:
    gw = start(gateway)
    real = detach_from_watcher(gw)
    real.write_text(real.read_text().replace("upstream: app", "upstream: nowhere", 1))
    status, answer = admin_post(gw.admin_port, "/reload")
    assert status == 400, answer
    assert answer["status"] == "rejected"
    assert "nowhere" in answer["error"]
    assert serves(gw, "v1")
    assert reloads(gw, "failed") == 1


# --- nothing dropped, nothing changed mid-flight -----------------------------------------------


def test_no_request_is_dropped_across_reloads(gateway: Any) -> None:
    """2000+ keep-alive requests on 4 connections while the config is reloaded 5 times.

    Each reload also changes the app's pool settings, so the upstream cluster is rebuilt and the
    old one retired while requests are using its connections.
    """
    gw = start(gateway, "v0")

    def next_config(version: str, i: int) -> dict[str, Any]:
        new = with_version(gw.config, version)
        new["upstreams"]["app"]["pool"] = {"max_idle": 10 + i}
        return new

    versions = [f"v{i}" for i in range(6)]
    per_client = 500
    done = threading.Event()
    reloaded = threading.Event()
    count = [0]
    lock = threading.Lock()
    errors: list[str] = []
    seen: list[list[str]] = [[] for _ in range(4)]

    def client(index: int) -> None:
        proxied_client = index % 2 == 1  # two connections to the app, two answered by the gateway
        try:
            with RawClient(gw.port, timeout=10) as conn:
                n = after = 0  # after: requests sent once the last reload had answered
                while n < per_client or after < 20:
                    after += reloaded.is_set()
                    response = conn.request(get("/app" if proxied_client else "/v"))
                    if response.status != 200:
                        errors.append(
                            f"client {index} request {n}: {response.status} {response.body[:200]!r}"
                        )
                        return
                    if proxied_client:
                        headers = dict(response.json()["headers"])
                        version = headers.get("X-Config-Version", "?")
                    else:
                        version = response.body.decode()
                    seen[index].append(version)
                    n += 1
                    with lock:
                        count[0] += 1
        except Exception as exc:  # a dropped connection or a timeout
            errors.append(f"client {index} after {len(seen[index])} requests: {exc!r}")
        finally:
            done.set()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        for i, version in enumerate(versions[1:], start=1):
            wait_until(lambda i=i: count[0] >= 300 * i or errors, 20, interval=0.001, what="progress")
            gw.write_config(next_config(version, i))
            status, answer = admin_post(gw.admin_port, "/reload")
            assert status == 200, answer
    finally:
        reloaded.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors
    total = sum(map(len, seen))
    assert total >= 2000
    for index, versions_seen in enumerate(seen):
        assert set(versions_seen) <= set(versions), (index, set(versions_seen))
        order = [versions.index(v) for v in versions_seen]
        assert order == sorted(order), f"connection {index} went back to an older config"
        assert versions_seen[-1] == "v5", f"connection {index} never saw the last config"
    assert len({v for s in seen for v in s}) >= 3, "the reloads did not happen during the traffic"
    assert reloads(gw, "failed") == 0


def test_a_request_in_flight_finishes_on_the_config_it_started_with(
    gateway: Any, origin: OriginProcess, demo: DemoApp
) -> None:
    """``/slow`` goes to the origin; mid-request the route moves to the demo app and the origin's
    upstream is removed from the config. The slow request still completes, from the origin."""
    gw: GatewayProcess = gateway(routes=[proxied("all", "/")])
    with RawClient(gw.port, timeout=10) as slow:
        slow.send(get("/slow?seconds=1"))
        wait_until(origin.received, 3, what="the slow request at the origin")
        new = copy.deepcopy(gw.config)
        new["upstreams"] = {"demo": {"endpoints": [demo.address]}}
        new["routes"] = [proxied("all", "/", upstream="demo")]
        gw.write_config(new)
        status, answer = admin_post(gw.admin_port, "/reload")
        assert status == 200, answer
        assert json.loads(body_of(gw.port, "/"))["message"].startswith("Hello from the Sidegate demo app")
        response = slow.read_final(timeout=5)
    assert response.status == 200
    assert response.body == b"slow done\n"
    assert [r.target for r in origin.received()] == ["/slow?seconds=1"]


def ws_connect(port: int, path: str = "/ws") -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{port}{path}", proxy=None, compression=None, ping_interval=None, open_timeout=5
    )


def test_a_websocket_opened_before_a_reload_keeps_working(gateway: Any, demo: DemoApp) -> None:
    routes = [proxied("ws", "/ws", upstream="demo"), direct("v", "/v", "v1")]
    gw: GatewayProcess = gateway(routes=routes, upstreams={"demo": {"endpoints": [demo.address]}})
    with ws_connect(gw.port) as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
        new = copy.deepcopy(gw.config)
        new["routes"] = [direct("ws", "/ws", "maintenance", status=503), direct("v", "/v", "v2")]
        gw.write_config(new)
        status, answer = admin_post(gw.admin_port, "/reload")
        assert status == 200, answer
        assert serves(gw, "v2")
        with pytest.raises(InvalidStatus) as refused:  # a new WebSocket gets the new config
            ws_connect(gw.port).close()
        assert refused.value.response.status_code == 503
        for i in range(20):  # the old one still reaches the app
            ws.send(f"after {i}")
            assert ws.recv(timeout=5) == f"after {i}"
        ws.send(b"\x00binary\xff")
        assert ws.recv(timeout=5) == b"\x00binary\xff"
        assert ws.ping(b"still there").wait(5)
        ws.close()
    assert ws.close_code == 1000


@pytest.mark.parametrize("workers", [1, 2])
def test_a_reload_that_moves_the_listener_says_a_restart_is_needed(gateway: Any, workers: int) -> None:
    """Listener addresses are bound once: a reload keeps the old one and must say so."""
    gw = start(gateway, workers=workers)
    new = with_version(gw.config, "v2")
    moved = f"127.0.0.1:{free_port()}"
    new["listeners"]["inbound"]["address"] = moved
    gw.write_config(new)
    status, answer = admin_post(gw.admin_port, "/reload")
    assert status == 200, answer
    assert serves(gw, "v2"), "the rest of the new config applies"
    assert "restart" in answer["message"], f"no hint that the address change needs a restart: {answer}"
    assert "restart" in wait_until(lambda: "restart" in gw.log() and gw.log(), 2, what="a warning in the log")
    dump = admin_json(gw.admin_port, "/config_dump")
    listening = f"127.0.0.1:{gw.port}"
    assert dump["config"]["listeners"]["inbound"]["address"] == listening, (
        "/config_dump shows an address sidegate does not listen on"
    )


# --- how long a reload takes under load --------------------------------------------------------


def reload_times_under_load(gw: GatewayProcess, rounds: int, clients: int = 2) -> list[float]:
    """Seconds from each file change to the new config answering, while ``clients`` keep-alive
    connections send requests (half to the app, half answered by the gateway) without pause."""
    stop = threading.Event()
    errors: list[str] = []
    sent = [0] * clients

    def load(index: int) -> None:
        target = get("/app") if index % 2 else get("/v")
        try:
            with RawClient(gw.port, timeout=10) as conn:
                while not stop.is_set() and sent[index] < 200_000:  # bounded, whatever happens
                    response = conn.request(target)
                    if response.status != 200:
                        errors.append(f"client {index}: {response.status} {response.body[:200]!r}")
                        return
                    sent[index] += 1
        except Exception as exc:
            errors.append(f"client {index} after {sent[index]} requests: {exc!r}")

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    times: list[float] = []
    try:
        with RawClient(gw.port, timeout=10) as probe:
            for n in range(1, rounds + 1):
                version = f"r{n}"
                before = sum(sent)
                wait_until(lambda b=before: sum(sent) >= b + 200 or errors, 20, what="load running")
                gw.write_config(with_version(gw.config, version))
                changed = time.monotonic()
                while probe.request(get("/v")).body.decode() != version:
                    if time.monotonic() - changed > 10:
                        raise AssertionError(f"{version} not served within 10 s:\n{gw.log()[-3000:]}")
                    time.sleep(0.005)
                times.append(time.monotonic() - changed)
                time.sleep(0.3)  # the reloads are apart, as edits of a ConfigMap are
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert not errors, errors
    assert min(sent) > 100, f"the load did not run: {sent}"
    return times


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_reload_under_load_takes_effect_within_a_second(gateway: Any, workers: int) -> None:
    gw = start(gateway, workers=workers)
    times = reload_times_under_load(gw, rounds=10, clients=4)
    worst, median = max(times), sorted(times)[len(times) // 2]
    print(
        f"\nreload under load, workers {workers}: worst {worst:.3f} s, median {median:.3f} s",
        [round(t, 2) for t in times],
    )
    assert worst < RELOAD_WITHIN, f"worst {worst:.3f} s, median {median:.3f} s: {sorted(times)}"
    assert reloads(gw, "failed") == 0
