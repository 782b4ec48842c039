"""TLS origination on a real ``sidegate run``: the app speaks plain HTTP to the egress listener,
the sidecar speaks verified TLS to a real TLS origin on loopback (certificates from
tests/support/tls.py, names answered by the stub DNS server). A wrong CA, a wrong name and a
missing client certificate are 502 ``egress_tls_failed`` with the reason; a rotated CA file is
used without a restart; credentials ride inside the TLS; connections are reused."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import admin_post
from support.egress_audit import audit_lines
from support.gateway import GatewayFactory, GatewayProcess, free_port, send_raw
from support.stub_dns import StubDNS
from support.tls import CertificateAuthority, Issued
from support.tls_origin import TlsOriginServer, expired_certificate

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
SECRET = "tls-partner-token-51ab"
#: Names the origin's certificate holds; the stub DNS answers each with 127.0.0.1.
NAMES = ("api.partner.test", "wrongca.partner.test", "rotate.partner.test", "mtls.partner.test")


@dataclass
class Pki:
    ca: CertificateAuthority
    other_ca: CertificateAuthority  # signs nothing the origins present: the "wrong CA"
    client: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create(base / "ca", "Partner CA")
    other = CertificateAuthority.create(base / "other", "Somebody else's CA")
    return Pki(ca, other, ca.issue(base / "client", "orders-sidecar", client=True))


@pytest.fixture(scope="module")
def origin_tls(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsOriginServer]:
    issued = pki.ca.issue(tmp_path_factory.mktemp("origin"), "api", dns=NAMES, ips=(HOST,))
    server = TlsOriginServer(issued)
    yield server
    server.close()


@pytest.fixture(scope="module")
def expired_origin(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsOriginServer]:
    server = TlsOriginServer(
        expired_certificate(pki.ca, tmp_path_factory.mktemp("expired"), "old.partner.test")
    )
    yield server
    server.close()


@pytest.fixture(scope="module")
def origin_443(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsOriginServer]:
    """An origin on port 443 itself (root may bind it), on a loopback address of its own: the
    default ``tls.port``, and the Host an HTTPS client would send (no ``:443``)."""
    issued = pki.ca.issue(tmp_path_factory.mktemp("origin443"), "api443", dns=("api443.partner.test",))
    for third in range(16, 250):  # an address on 127.0.0.0/8 whose port 443 is free
        try:
            server = TlsOriginServer(issued, host=f"127.77.{third}.1", port=443)
            break
        except OSError:
            continue
    else:
        raise AssertionError("no loopback address with port 443 free")
    yield server
    server.close()


@pytest.fixture(scope="module")
def mtls_origin(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsOriginServer]:
    issued = pki.ca.issue(tmp_path_factory.mktemp("mtls"), "mtls", dns=NAMES)
    server = TlsOriginServer(issued, client_ca=pki.ca.cert)
    yield server
    server.close()


@pytest.fixture(scope="module")
def dns_server(origin_443: TlsOriginServer) -> Iterator[StubDNS]:
    server = StubDNS()
    for name in (*NAMES, "mtls-anonymous.partner.test", "old.partner.test"):
        server.records[(name, "A")] = (60, [HOST])
    server.records[("api443.partner.test", "A")] = (60, [origin_443.host])
    yield server
    server.close()


@pytest.fixture
def egress(
    gateway: GatewayFactory,
    *,
    origin_tls: TlsOriginServer,
    mtls_origin: TlsOriginServer,
    origin_443: TlsOriginServer,
    expired_origin: TlsOriginServer,
    dns_server: StubDNS,
    pki: Pki,
    tmp_path: Path,
) -> GatewayProcess:
    port = free_port()
    token = tmp_path / "token"
    token.write_text(SECRET + "\n")
    rotating_ca = tmp_path / "rotating-ca.pem"
    shutil.copy(pki.other_ca.cert, rotating_ca)  # wrong at first; the test puts the right one in
    for server in (origin_tls, mtls_origin, origin_443):
        server.seen.clear()
    private = ["127.0.0.1/32"]

    def destination(name: str, host: str, tls: dict[str, Any], **more: Any) -> dict[str, Any]:
        return {"name": name, "host": host, "allow_private": private, "tls": tls} | more

    def add_egress(config: dict[str, Any]) -> None:
        config["listeners"]["egress"] = {"address": f"{HOST}:{port}"}
        config["observability"] = {"access_log": {"enabled": True, "path": str(tmp_path / "access.log")}}
        tls_port = origin_tls.port
        config["egress"] = {
            "dns": {"servers": [f"{HOST}:{dns_server.port}"], "timeout": "1s"},
            "destinations": [
                destination(
                    "partner",
                    "api.partner.test",
                    {"originate": True, "port": tls_port, "ca_file": str(pki.ca.cert)},
                    ports=[80, tls_port],
                    credentials={"name": "partner-token", "bearer": {"token_file": str(token)}},
                ),
                destination(
                    "wrong-ca", "wrongca.partner.test", {"ca_file": str(pki.other_ca.cert)}, ports=[tls_port]
                ),
                destination(  # the right CA, but the certificate does not name this host
                    "mismatch",
                    "localhost",
                    {"originate": True, "ca_file": str(pki.ca.cert)},
                    ports=[tls_port],
                ),
                destination(
                    "rotating", "rotate.partner.test", {"ca_file": str(rotating_ca)}, ports=[tls_port]
                ),
                destination(
                    "mtls",
                    "mtls.partner.test",
                    {
                        "originate": True,
                        "port": mtls_origin.port,
                        "ca_file": str(pki.ca.cert),
                        "client_cert_file": str(pki.client.cert),
                        "client_key_file": str(pki.client.key),
                    },
                ),
                destination(
                    "expired",
                    "old.partner.test",
                    {"originate": True, "port": expired_origin.port, "ca_file": str(pki.ca.cert)},
                ),
                destination("by-ip", HOST, {"ca_file": str(pki.ca.cert)}, ports=[tls_port]),
                destination(  # tls.port left at 443
                    "api443",
                    "api443.partner.test",
                    {"originate": True, "ca_file": str(pki.ca.cert)},
                    allow_private=["127.0.0.0/8"],
                ),
                destination(  # the mTLS origin, but no client certificate configured
                    "mtls-anonymous",
                    "mtls-anonymous.partner.test",
                    {
                        "originate": True,
                        "port": mtls_origin.port,
                        "ca_file": str(pki.ca.cert),
                        "server_name": "mtls.partner.test",
                    },
                ),
            ],
        }

    gw = gateway(mutate=add_egress)
    gw.egress_port = port  # type: ignore[attr-defined]
    gw.access_log = tmp_path / "access.log"  # type: ignore[attr-defined]
    gw.rotating_ca = rotating_ca  # type: ignore[attr-defined]
    dns_server.records[("localhost", "A")] = (60, [HOST])
    return gw


def proxy(gw: GatewayProcess) -> int:
    port: int = gw.egress_port  # type: ignore[attr-defined]
    return port


def request(gw: GatewayProcess, target: str, host: str, extra: str = "") -> tuple[int, bytes, bytes]:
    """One request through the egress listener: status, head and body of the answer."""
    data = f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()
    answer = send_raw(proxy(gw), data)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), answer
    return int(head.split()[1]), head, body


def refusal(body: bytes) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(body)
    return document


def test_an_https_request_goes_out_verified_with_sni(
    egress: GatewayProcess, origin_tls: TlsOriginServer
) -> None:
    port = origin_tls.port
    status, _, body = request(
        egress, f"https://api.partner.test:{port}/orders?x=1", f"api.partner.test:{port}"
    )
    assert (status, body) == (200, b"hello over tls")
    (seen,) = origin_tls.seen
    assert seen.sni == "api.partner.test"
    request_line, *fields = seen.head.split(b"\r\n")
    assert request_line == b"GET /orders?x=1 HTTP/1.1"
    assert f"Host: api.partner.test:{port}".encode() in fields
    assert f"Authorization: Bearer {SECRET}".encode() in fields  # the credential, inside the TLS
    (audit,) = audit_lines(egress, 1)
    assert audit["tls"] == "originated" and audit["tls_server_name"] == "api.partner.test"
    assert audit["resolved"] == f"{HOST}:{port}" and audit["status"] == 200
    assert SECRET not in egress.log()


def test_originate_upgrades_a_plain_http_request_from_curl(
    egress: GatewayProcess, origin_tls: TlsOriginServer
) -> None:
    """``curl -x`` with an http:// URL on port 80: the sidecar speaks TLS to ``tls.port``."""
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-x",
            f"http://{HOST}:{proxy(egress)}",
            "-w",
            "\n%{http_code}",
            "http://api.partner.test/v1",
        ],
        capture_output=True,
        timeout=20,
        check=False,
        env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
    )
    body, _, code = out.stdout.rpartition(b"\n")
    assert (code, body) == (b"200", b"hello over tls"), out
    (seen,) = origin_tls.seen  # the origin speaks only TLS: it got the request, so TLS it was
    assert seen.sni == "api.partner.test"
    # The authority of the connection made: tls.port (a port of its own here; 443 would be left out)
    assert f"\r\nHost: api.partner.test:{origin_tls.port}\r\n".encode() in seen.head + b"\r\n"
    (audit,) = audit_lines(egress, 1)
    assert audit["destination"] == "api.partner.test:80" and audit["resolved"] == f"{HOST}:{origin_tls.port}"
    assert audit["tls"] == "originated"


def test_a_named_request_is_originated_and_the_connection_is_reused(
    egress: GatewayProcess, origin_tls: TlsOriginServer
) -> None:
    before = origin_tls.handshakes
    for _ in range(3):  # three app connections, one TLS connection to the destination
        status, _, body = request(egress, "/named", "partner")
        assert (status, body) == (200, b"hello over tls")
    assert len(origin_tls.seen) == 3
    assert origin_tls.handshakes - before == 1


def test_a_wrong_ca_fails_with_the_verify_reason(egress: GatewayProcess, origin_tls: TlsOriginServer) -> None:
    port = origin_tls.port
    status, _, body = request(egress, f"https://wrongca.partner.test:{port}/", f"wrongca.partner.test:{port}")
    answer = refusal(body)
    assert status == 502 and answer["error"] == "egress_tls_failed", answer
    assert "certificate verify failed: unable to get local issuer certificate" in answer["reason"]
    assert answer["rule"] == "wrong-ca"
    assert origin_tls.seen == []  # nothing was sent
    assert "Traceback" not in egress.log()


def test_a_certificate_for_another_name_fails(egress: GatewayProcess, origin_tls: TlsOriginServer) -> None:
    status, _, body = request(egress, f"http://localhost:{origin_tls.port}/", f"localhost:{origin_tls.port}")
    answer = refusal(body)
    assert status == 502 and answer["error"] == "egress_tls_failed", answer
    assert "Hostname mismatch" in answer["reason"] and "'localhost'" in answer["reason"]
    assert origin_tls.seen == []


def test_a_partner_that_wants_a_client_certificate_gets_the_configured_one(
    egress: GatewayProcess, mtls_origin: TlsOriginServer
) -> None:
    status, _, body = request(egress, "http://mtls-anonymous.partner.test/", "mtls-anonymous.partner.test")
    answer = refusal(body)
    assert status == 502 and answer["error"] == "egress_tls_failed", answer
    assert "failed: tlsv13 alert certificate required" in answer["reason"], answer
    assert mtls_origin.seen == []
    status, _, body = request(egress, "http://mtls.partner.test/", "mtls.partner.test")
    assert (status, body) == (200, b"hello over tls")
    (seen,) = mtls_origin.seen
    assert seen.client_cert == "orders-sidecar" and seen.sni == "mtls.partner.test"


def test_a_rotated_ca_file_is_used_without_a_restart(
    egress: GatewayProcess, origin_tls: TlsOriginServer, pki: Pki
) -> None:
    port = origin_tls.port
    target, host = f"https://rotate.partner.test:{port}/", f"rotate.partner.test:{port}"
    status, _, body = request(egress, target, host)
    assert status == 502 and "unable to get local issuer certificate" in refusal(body)["reason"]
    rotating: Path = egress.rotating_ca  # type: ignore[attr-defined]
    staged = rotating.with_suffix(".new")
    shutil.copy(pki.ca.cert, staged)
    staged.replace(rotating)  # a new inode at the path, as a Secret volume's rotation makes
    deadline = time.monotonic() + 5
    while True:  # the files are looked at again at most once a second
        status, _, body = request(egress, target, host)
        if status == 200:
            break
        assert status == 502, body
        assert time.monotonic() < deadline, "the rotated CA was never used"
        time.sleep(0.2)
    assert body == b"hello over tls"


def test_an_ip_destination_is_verified_against_the_ip_san_without_sni(
    egress: GatewayProcess, origin_tls: TlsOriginServer
) -> None:
    port = origin_tls.port
    status, _, body = request(egress, f"https://{HOST}:{port}/ip", f"{HOST}:{port}")
    assert (status, body) == (200, b"hello over tls")
    (seen,) = origin_tls.seen
    assert seen.sni is None  # no SNI for an IP literal (RFC 6066)
    (audit,) = audit_lines(egress, 1)
    assert audit["tls_server_name"] == HOST


def test_originate_goes_to_443_and_host_has_no_port(
    egress: GatewayProcess, origin_443: TlsOriginServer
) -> None:
    status, _, body = request(egress, "http://api443.partner.test/v2", "api443.partner.test")
    assert (status, body) == (200, b"hello over tls")
    (seen,) = origin_443.seen
    assert seen.sni == "api443.partner.test"
    assert seen.head.split(b"\r\n")[:2] == [b"GET /v2 HTTP/1.1", b"Host: api443.partner.test"]
    (audit,) = audit_lines(egress, 1)
    assert audit["resolved"] == f"{origin_443.host}:443"


def test_a_reload_keeps_an_unchanged_tls_block_s_connections(
    egress: GatewayProcess, origin_tls: TlsOriginServer
) -> None:
    """An unchanged ``tls:`` keeps its context, hence its pooled connection; a changed one is new."""
    assert request(egress, "/one", "partner")[0] == 200
    handshakes = origin_tls.handshakes
    config = copy.deepcopy(egress.config)
    destinations = config["egress"]["destinations"]
    destinations.append({"name": "unrelated", "host": "unrelated.test"})
    egress.write_config(config)
    status, answer = admin_post(egress.admin_port, "/reload")
    assert status == 200, answer
    assert request(egress, "/two", "partner")[0] == 200
    assert origin_tls.handshakes == handshakes  # the same TLS connection, after the reload
    partner = next(d for d in destinations if d["name"] == "partner")
    partner["tls"] = {**partner["tls"], "min_version": "1.3"}
    egress.write_config(config)
    status, answer = admin_post(egress.admin_port, "/reload")
    assert status == 200, answer
    assert request(egress, "/three", "partner")[0] == 200
    assert origin_tls.handshakes == handshakes + 1  # new settings: a new context, a new connection


def test_an_expired_certificate_fails(egress: GatewayProcess, expired_origin: TlsOriginServer) -> None:
    status, _, body = request(egress, "http://old.partner.test/", "old.partner.test")
    answer = refusal(body)
    assert status == 502 and answer["error"] == "egress_tls_failed", answer
    assert "certificate verify failed: certificate has expired" in answer["reason"]
    assert answer["rule"] == "expired" and expired_origin.seen == []


def test_a_ca_file_gone_before_the_first_call_refuses_it_naming_the_file(
    egress: GatewayProcess, origin_tls: TlsOriginServer
) -> None:
    rotating: Path = egress.rotating_ca  # type: ignore[attr-defined]
    rotating.unlink()  # checked at load; the context is built at the first call that needs it
    port = origin_tls.port
    status, _, body = request(egress, f"https://rotate.partner.test:{port}/", f"rotate.partner.test:{port}")
    answer = refusal(body)
    assert status == 502 and answer["error"] == "egress_tls_failed", answer
    assert answer["reason"] == f"ca_file {rotating}: no such file" and answer["rule"] == "rotating"
    assert origin_tls.seen == [] and "Traceback" not in egress.log()
