"""The listeners a pod needs, on a real ``sidegate run``: the read-only health listener, the admin
API behind a bearer token read from a (rotating) file, and ``/ready`` that waits for every listener.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import ConfigMapDir, metric, parse_metrics, wait_until, worker_pids
from support.gateway import SIDEGATE, GatewayFactory, GatewayProcess, free_port, make_config, send_raw

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
TOKEN = "first-admin-token-0123456789"
ROTATED = "second-admin-token-9876543210"


def call(
    port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection: status, headers (lower-case names), body."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the health listener -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(gateway_module: GatewayFactory) -> GatewayProcess:
    return gateway_module()


def test_the_probes_and_metrics_answer_on_the_health_port_as_on_admin(gw: GatewayProcess) -> None:
    assert gw.health_port is not None
    for path in ("/live", "/ready"):
        health = call(gw.health_port, path)
        admin = call(gw.admin_port, path)
        assert (
            (health[0], json.loads(health[2])) == (admin[0], json.loads(admin[2])) == (200, health_body(path))
        )
        status, headers, body = call(gw.health_port, path, "HEAD")
        assert (status, body) == (200, b"") and int(headers["content-length"]) > 0
    for _ in range(3):
        assert call(gw.port, "/hello")[0] == 200
    status, headers, body = call(gw.health_port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain"), headers
    from_health = parse_metrics(body.decode())
    from_admin = parse_metrics(call(gw.admin_port, "/metrics")[2].decode())
    assert {name for name, _ in from_health} == {name for name, _ in from_admin}
    assert metric(from_health, "http_server_requests_total") >= 3
    assert metric(from_health, "http_server_requests_total") == metric(
        from_admin, "http_server_requests_total"
    )


def health_body(path: str) -> dict[str, Any]:
    return {"status": "live"} if path == "/live" else {"status": "ready", "reason": "ready"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/reload"),
        ("GET", "/config_dump"),
        ("POST", "/cache/purge"),
        ("GET", "/cache/stats"),
        ("GET", "/explain/abc"),
        ("GET", "/traces"),
        ("GET", "/stats"),
        ("GET", "/clusters"),
        ("GET", "/egress"),
        ("GET", "/"),
        ("GET", "/dashboard.js"),
        ("GET", "/login"),
        ("GET", "/routes"),
    ],
)
def test_nothing_but_probes_and_metrics_is_on_the_health_port(
    gw: GatewayProcess, method: str, path: str
) -> None:
    version = metric(parse_metrics(call(gw.admin_port, "/metrics")[2].decode()), "sidegate_config_version")
    assert gw.health_port is not None
    status, _, body = call(gw.health_port, path, method)
    answer = json.loads(body)
    assert status == 404, (status, body)
    assert answer["error"] == "not_found"
    assert sorted(answer["endpoints"]) == ["GET /live", "GET /metrics", "GET /ready"]
    after = metric(parse_metrics(call(gw.admin_port, "/metrics")[2].decode()), "sidegate_config_version")
    assert after == version  # nothing was reloaded
    assert b"no endpoint" not in call(gw.admin_port, path, method)[2]  # while admin serves it


def test_a_reload_that_moves_the_health_listener_says_it_waits_for_a_restart(gateway: GatewayFactory) -> None:
    gw = gateway()
    config = json.loads(json.dumps(gw.config))
    old = config["listeners"]["health"]["address"]
    config["listeners"]["health"]["address"] = f"{HOST}:{free_port()}"
    gw.write_config(config)
    status, _, body = call(gw.admin_port, "/reload", "POST")
    assert status == 200, body
    assert f"listeners.health.address stays {old} until restart" in json.loads(body)["message"]
    dump = json.loads(call(gw.admin_port, "/config_dump")[2])
    assert dump["restart_pending"] == [f"listeners.health.address stays {old} until restart"]
    assert dump["config"]["listeners"]["health"]["address"] == old  # what serves
    assert call(gw.health_port or 0, "/ready")[0] == 200


def test_the_health_listener_can_be_turned_off(gateway: GatewayFactory) -> None:
    gw = gateway(mutate=lambda config: config["listeners"]["health"].update(address="off"))
    assert gw.health_port is None
    dump = json.loads(call(gw.admin_port, "/config_dump")[2])
    assert dump["config"]["listeners"]["health"]["address"] == "off"
    assert "health off" in gw.log(), gw.log()


# --- the admin token ---------------------------------------------------------------------------


@pytest.fixture
def secret(tmp_path: Path) -> ConfigMapDir:
    """A Secret volume with key ``token``, updated the kubelet's way (``..data`` symlink swap)."""
    directory = tmp_path / "secret"
    directory.mkdir()
    volume = ConfigMapDir(directory, "token")
    volume.write(TOKEN + "\n")
    return volume


@pytest.fixture
def guarded(gateway: GatewayFactory, secret: ConfigMapDir) -> GatewayProcess:
    return gateway(mutate=lambda config: config["listeners"]["admin"].update(token_file=str(secret.path)))


def test_the_admin_api_needs_the_bearer_token(guarded: GatewayProcess) -> None:
    port = guarded.admin_port
    for path, method in (
        ("/config_dump", "GET"),
        ("/reload", "POST"),
        ("/ready", "GET"),
        ("/nowhere", "GET"),
    ):
        status, headers, body = call(port, path, method)
        assert status == 401, (path, status, body)
        assert headers["www-authenticate"].startswith("Bearer"), headers
        answer = json.loads(body)
        assert answer["error"] == "unauthorized" and "Authorization: Bearer" in answer["reason"], answer
        status, headers, body = call(port, path, method, bearer("not-" + TOKEN))
        assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"], (path, headers)
        assert "not the admin token" in json.loads(body)["reason"]
    assert call(port, "/config_dump", headers={"Authorization": f"Basic {TOKEN}"})[0] == 401
    assert call(port, "/config_dump", headers=bearer(TOKEN))[0] == 200
    assert call(port, "/reload", "POST", bearer(TOKEN))[0] == 200
    assert call(port, "/nowhere", headers=bearer(TOKEN))[0] == 404


@pytest.mark.parametrize(
    "field",
    [
        b"Authorization: Bearer \xff\xfe\x80",
        b"Authorization: bearer",
        b'Cookie: sidegate_admin="\xff;;==; =x',
    ],
)
def test_odd_credentials_are_a_401_never_an_error(guarded: GatewayProcess, field: bytes) -> None:
    request = b"GET /config_dump HTTP/1.1\r\nHost: admin\r\n" + field + b"\r\nConnection: close\r\n\r\n"
    answer = send_raw(guarded.admin_port, request)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"WWW-Authenticate: Bearer" in answer


def test_the_health_port_never_asks_for_the_token(guarded: GatewayProcess) -> None:
    assert guarded.health_port is not None
    for path in ("/live", "/ready", "/metrics"):
        assert call(guarded.health_port, path)[0] == 200, path


def test_a_rotated_token_takes_effect_without_a_restart(
    guarded: GatewayProcess, secret: ConfigMapDir
) -> None:
    port = guarded.admin_port
    assert call(port, "/stats", headers=bearer(TOKEN))[0] == 200
    secret.write(ROTATED + "\n")
    assert call(port, "/stats", headers=bearer(ROTATED))[0] == 200
    assert call(port, "/stats", headers=bearer(TOKEN))[0] == 401
    assert guarded.proc.poll() is None


def test_an_emptied_or_missing_token_file_refuses_everyone_with_the_reason(
    guarded: GatewayProcess, secret: ConfigMapDir
) -> None:
    port = guarded.admin_port
    secret.write("")
    for headers in ({}, bearer(TOKEN), bearer("")):
        status, _, body = call(port, "/config_dump", headers=headers)
        assert status == 503, (status, body)
        assert "the file is empty" in json.loads(body)["reason"]
    secret.path.unlink()
    status, _, body = call(port, "/config_dump", headers=bearer(TOKEN))
    assert status == 503 and "cannot read it" in json.loads(body)["reason"], body
    assert "every admin request is refused" in guarded.log()
    secret.write(ROTATED)
    assert call(port, "/config_dump", headers=bearer(ROTATED))[0] == 200


def test_a_reload_that_sets_a_token_file_guards_the_next_request(
    gateway: GatewayFactory, secret: ConfigMapDir
) -> None:
    gw = gateway()
    assert call(gw.admin_port, "/config_dump")[0] == 200
    config = json.loads(json.dumps(gw.config))
    config["listeners"]["admin"]["token_file"] = str(secret.path)
    gw.write_config(config)
    # The watcher may reload first: this request carries the token, which is ignored until then.
    assert call(gw.admin_port, "/reload", "POST", bearer(TOKEN))[0] == 200
    assert call(gw.admin_port, "/config_dump")[0] == 401
    assert call(gw.admin_port, "/config_dump", headers=bearer(TOKEN))[0] == 200


def test_the_dashboard_signs_in_with_a_cookie_that_cannot_change_anything(guarded: GatewayProcess) -> None:
    port = guarded.admin_port
    status, headers, page = call(port, "/login")
    assert (
        status == 200
        and b'name="token"' in page
        and "form-action 'self'" in headers["content-security-policy"]
    )
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert call(port, "/login", "POST", form, b"token=wrong")[0] == 401
    status, headers, _ = call(port, "/login", "POST", form, f"token={TOKEN}".encode())
    assert status == 303 and headers["location"] == "./", headers
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie, cookie
    session = {"Cookie": cookie.split(";", 1)[0]}
    assert call(port, "/", headers=session)[0] == 200
    assert call(port, "/stats", headers=session)[0] == 200
    assert call(port, "/reload", "POST", session)[0] == 401  # the cookie reads, never acts
    assert call(port, "/stats", headers={"Cookie": "sidegate_admin=forged"})[0] == 401


# --- /ready waits for every listener -----------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_a_health_port_in_use_means_never_ready_and_exit_1_naming_the_field(
    tmp_path: Path, workers: int
) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind((HOST, 0))
    holder.listen()
    busy = holder.getsockname()[1]
    admin = free_port()
    config = make_config("127.0.0.1:9", port=free_port(), admin_port=admin, health_port=busy, workers=workers)
    path = tmp_path / "sidegate.yaml"
    path.write_text(json.dumps(config))
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen(
            [SIDEGATE, "run", "--config", str(path)], stdout=log, stderr=subprocess.STDOUT
        )
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                seen.add(call(admin, "/ready")[0])
        code = proc.poll()
        output = (tmp_path / "run.log").read_text(errors="replace")
        assert code == 1, f"exit {code} (None: still running):\n{output}"
        assert 200 not in seen, seen
        assert f"listeners.health.address: cannot listen on {HOST}:{busy}" in output, output
        assert "Traceback" not in output, output
        assert not worker_pids(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        holder.close()


def test_with_workers_the_health_port_is_not_ready_until_every_worker_serves(gateway: GatewayFactory) -> None:
    gw = gateway(workers=2)
    assert gw.health_port is not None
    (first, _) = worker_pids(gw.pid)
    subprocess.run(["kill", "-KILL", str(first)], check=True)

    def reason() -> str:
        status, _, body = call(gw.health_port or 0, "/ready")
        return json.loads(body)["reason"] if status == 503 else ""

    assert wait_until(reason, 5, what="/ready on the health port goes 503") == "1 of 2 workers serving"
    wait_until(lambda: call(gw.health_port or 0, "/ready")[0] == 200, 20, what="the worker serves again")
