"""The CONNECT SNI check through the egress listener on loopback: with ``connect_sni: match``
a tunnel whose ClientHello names the CONNECT host reaches the TLS origin and verifies end to end;
another SNI, none, or no TLS at all closes the tunnel with no byte reaching the origin, and the
audit line says why. Off (the default) carries any bytes."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.test_egress import audit_lines
from support.gateway import GatewayFactory, GatewayProcess, free_port
from support.sni_origin import TLSOrigin
from support.stub_dns import StubDNS
from support.tls import CertificateAuthority

pytestmark = pytest.mark.timeout(60)
HOST = "127.0.0.1"


@pytest.fixture
def tls_origin(tmp_path: Path) -> Iterator[tuple[TLSOrigin, CertificateAuthority]]:
    ca = CertificateAuthority.create(tmp_path / "ca")
    issued = ca.issue(tmp_path / "origin", "sni.test", dns=("sni.test", "other.test", "open.test"))
    origin = TLSOrigin(issued.cert, issued.key, "sni.test")
    yield origin, ca
    origin.close()


@pytest.fixture
def egress(
    gateway: GatewayFactory, tls_origin: tuple[TLSOrigin, CertificateAuthority], tmp_path: Path
) -> Iterator[GatewayProcess]:
    origin, _ = tls_origin
    dns = StubDNS()
    for name in ("sni.test", "other.test", "open.test"):
        dns.records[(name, "A")] = (60, [HOST])
    port = free_port()

    def add_egress(config: dict[str, Any]) -> None:
        config["listeners"]["egress"] = {"address": f"{HOST}:{port}"}
        config["observability"] = {"access_log": {"enabled": True, "path": str(tmp_path / "access.log")}}
        private = {"ports": [origin.port], "allow_private": ["127.0.0.1/32"]}
        config["egress"] = {
            "connect_sni": "match",
            "dns": {"servers": [f"{HOST}:{dns.port}"], "timeout": "1s"},
            "destinations": [
                {"name": "checked", "host": "sni.test", **private},
                {"name": "other", "host": "other.test", **private},
                {"name": "by-ip", "host": HOST, **private},
                {"name": "unchecked", "host": "open.test", "connect_sni": "off", **private},
            ],
        }

    gw = gateway(mutate=add_egress)
    gw.egress_port = port  # type: ignore[attr-defined]
    gw.access_log = tmp_path / "access.log"  # type: ignore[attr-defined]
    yield gw
    dns.close()


def tunnel(gw: GatewayProcess, host: str, port: int) -> socket.socket:
    sock = socket.create_connection((HOST, gw.egress_port), timeout=5)  # type: ignore[attr-defined]
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1024)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    return sock


def tls_through(sock: socket.socket, ca: CertificateAuthority, name: str) -> bytes:
    context = ssl.create_default_context(cafile=str(ca.cert))
    with context.wrap_socket(sock, server_hostname=name) as tls:
        return tls.recv(100)


def closed_without_reply(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_a_matching_sni_passes_end_to_end(
    egress: GatewayProcess, tls_origin: tuple[TLSOrigin, CertificateAuthority]
) -> None:
    origin, ca = tls_origin
    assert tls_through(tunnel(egress, "sni.test", origin.port), ca, "sni.test") == b"hello from sni.test\n"
    assert origin.connections == [True]


def test_another_sni_closes_the_tunnel_with_nothing_sent(
    egress: GatewayProcess, tls_origin: tuple[TLSOrigin, CertificateAuthority]
) -> None:
    origin, ca = tls_origin
    sock = tunnel(egress, "sni.test", origin.port)
    with pytest.raises((ssl.SSLError, OSError)):
        tls_through(sock, ca, "other.test")  # allowed too, but not what was CONNECTed to
    time.sleep(0.2)
    assert origin.connections == [False]  # the connection was opened and got no byte
    (line,) = [a for a in audit_lines(egress) if a["kind"] == "connect"]
    assert line["decision"] == "deny" and line["rule"] == "connect_sni"
    assert "SNI 'other.test' is not the CONNECT host 'sni.test'" in line["reason"]


def test_no_tls_at_all_closes_the_tunnel(
    egress: GatewayProcess, tls_origin: tuple[TLSOrigin, CertificateAuthority]
) -> None:
    origin, _ = tls_origin
    sock = tunnel(egress, "sni.test", origin.port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: sni.test\r\n\r\n")
    assert closed_without_reply(sock)
    time.sleep(0.2)
    assert origin.connections == [False]
    (line,) = audit_lines(egress)
    assert line["rule"] == "connect_sni" and "does not start with a TLS ClientHello" in line["reason"]


def test_an_ip_connect_passes_without_sni_but_not_with_a_name(
    egress: GatewayProcess, tls_origin: tuple[TLSOrigin, CertificateAuthority]
) -> None:
    origin, ca = tls_origin
    context = ssl.create_default_context(cafile=str(ca.cert))
    context.check_hostname = False  # an IP has no SNI; the CA is still checked
    with context.wrap_socket(tunnel(egress, HOST, origin.port)) as tls:
        assert tls.recv(100) == b"hello from sni.test\n"
    sock = tunnel(egress, HOST, origin.port)
    with pytest.raises((ssl.SSLError, OSError)):
        tls_through(sock, ca, "sni.test")
    time.sleep(0.2)
    assert origin.connections == [True, False]


def test_a_destination_can_turn_the_check_off(
    egress: GatewayProcess, tls_origin: tuple[TLSOrigin, CertificateAuthority]
) -> None:
    origin, ca = tls_origin
    assert tls_through(tunnel(egress, "open.test", origin.port), ca, "other.test") == b"hello from sni.test\n"
