"""``POST /shutdown``: only the pod itself may ask Sidegate to drain and exit.

The endpoint's handler is driven with the peer address the admin connection records (the real
socket path, a loopback client, is in tests/integration/test_lifecycle_stop.py); a non-loopback
peer cannot be made here without leaving loopback, so it is given as the connection would.
"""

from __future__ import annotations

import json

import pytest

from sidegate.admin.app import AdminRequest, AdminResponse
from sidegate.admin.shutdown import is_loopback, shutdown_routes


def ask(peer: str) -> tuple[AdminResponse, int]:
    asked: list[int] = []
    handler = shutdown_routes(lambda: asked.append(1))[("POST", "/shutdown")]
    response = handler(AdminRequest("POST", "/shutdown", peer=peer))
    assert isinstance(response, AdminResponse)
    return response, len(asked)


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.5.6.7", "::1", "::ffff:127.0.0.1"])
def test_a_loopback_peer_starts_the_drain(peer: str) -> None:
    response, asked = ask(peer)
    assert (response.status, asked) == (202, 1)
    assert json.loads(response.body)["status"] == "draining"


@pytest.mark.parametrize("peer", ["10.1.2.3", "192.168.0.9", "fe80::1", "::ffff:10.0.0.1", "", "garbage"])
def test_any_other_peer_is_refused_with_the_reason(peer: str) -> None:
    response, asked = ask(peer)
    assert (response.status, asked) == (403, 0)
    answer = json.loads(response.body)
    assert answer["error"] == "forbidden"
    assert "loopback only" in answer["reason"] and (peer or "unknown") in answer["reason"]


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("localhost")
