"""Credentials injected by the egress listener, on a real ``sidegate run`` and the recording origin:
the destination gets the secret from the mounted file, the app's own header of that name never
goes out, the audit line names the credential and no log holds its value, and a secret that is
gone refuses the call (503) instead of sending it without."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from support.gateway import GatewayFactory, GatewayProcess, OriginProcess, free_port, send_raw

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
SECRET = "s3cr3t-partner-token-7f2c"


@pytest.fixture
def egress(gateway: GatewayFactory, origin: OriginProcess, tmp_path: Path) -> GatewayProcess:
    port = free_port()
    token = tmp_path / "token"
    token.write_text(SECRET + "\n")

    def add_egress(config: dict[str, Any]) -> None:
        config["listeners"]["egress"] = {"address": f"{HOST}:{port}"}
        config["observability"] = {"access_log": {"enabled": True, "path": str(tmp_path / "access.log")}}
        config["egress"] = {
            "destinations": [
                {
                    "name": "partner",
                    "host": "partner.test",
                    "ports": [origin.port],
                    "origin": f"{HOST}:{origin.port}",
                    "allow_private": ["127.0.0.1/32"],
                    "credentials": {"name": "partner-token", "bearer": {"token_file": str(token)}},
                },
            ],
        }

    gw = gateway(mutate=add_egress)
    gw.egress_port = port  # type: ignore[attr-defined]
    return gw


def call(gw: GatewayProcess, extra: str = "") -> bytes:
    """A call by name (Host: the destination's name), as an app with no proxy support makes it."""
    request = f"GET /orders HTTP/1.1\r\nHost: partner\r\n{extra}Connection: close\r\n\r\n"
    return send_raw(gw.egress_port, request.encode())  # type: ignore[attr-defined]


def authorization_seen(origin: OriginProcess) -> list[bytes]:
    """The Authorization lines of the one request the origin got since the last look."""
    (seen,) = origin.received()
    origin.reset()
    head = seen.raw.partition(b"\r\n\r\n")[0]
    return [line for line in head.split(b"\r\n") if line.lower().startswith(b"authorization:")]


def test_the_destination_gets_the_secret_and_never_the_app_s_own(
    egress: GatewayProcess, origin: OriginProcess, tmp_path: Path
) -> None:
    answer = call(egress, "Authorization: Bearer the-app-s-own\r\nauthorization: Basic eDp5\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert authorization_seen(origin) == [f"Authorization: Bearer {SECRET}".encode()]
    access_log = tmp_path / "access.log"
    deadline = time.monotonic() + 5
    while '"type":"egress"' not in (access_log.read_text() if access_log.exists() else ""):
        assert time.monotonic() < deadline, "no audit line"
        time.sleep(0.05)
    (audit,) = [json.loads(line) for line in access_log.read_text().splitlines() if '"egress"' in line]
    assert audit["credential"] == "partner-token" and audit["status"] == 200
    assert SECRET not in access_log.read_text() and SECRET not in egress.log()


def test_a_rotated_secret_is_used_without_a_restart(
    egress: GatewayProcess, origin: OriginProcess, tmp_path: Path
) -> None:
    assert call(egress).startswith(b"HTTP/1.1 200 ")
    assert authorization_seen(origin) == [f"Authorization: Bearer {SECRET}".encode()]
    (tmp_path / "token").write_text("rotated-token-91\n")
    deadline = time.monotonic() + 5
    while True:  # the file is looked at again at most once a second
        assert call(egress).startswith(b"HTTP/1.1 200 ")
        if authorization_seen(origin) == [b"Authorization: Bearer rotated-token-91"]:
            break
        assert time.monotonic() < deadline, "the rotated token never reached the destination"
        time.sleep(0.2)


def test_a_secret_that_is_gone_refuses_the_call_instead_of_sending_it_without(
    egress: GatewayProcess, origin: OriginProcess, tmp_path: Path
) -> None:
    assert call(egress).startswith(b"HTTP/1.1 200 ")
    origin.reset()
    (tmp_path / "token").unlink()
    deadline = time.monotonic() + 5
    while True:
        answer = call(egress)
        if answer.startswith(b"HTTP/1.1 503 "):
            break
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        origin.reset()
        assert time.monotonic() < deadline, "a missing secret was never noticed"
        time.sleep(0.2)
    refusal = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert refusal["error"] == "egress_credential_unavailable" and refusal["rule"] == "partner"
    assert "token_file" in refusal["reason"] and SECRET not in answer.decode()
    assert origin.received() == []  # nothing went out without the credential
