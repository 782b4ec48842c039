"""An HTTPS origin on loopback for the egress TLS tests, on the ssl module, in threads: it records
each request, the SNI it came with and the client certificate, and counts handshakes. Plus a
certificate that has expired (tests/support/tls.py makes only valid ones)."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.tls import CertificateAuthority, Issued, write_issued

HOST = "127.0.0.1"


@dataclass
class Seen:
    """One request the TLS origin read: its head, the SNI of its connection, the client cert."""

    head: bytes
    sni: str | None
    client_cert: str | None  # the client certificate's common name, if one was presented


@dataclass
class TlsOriginServer:
    """An HTTPS origin on 127.0.0.1 in threads (the ssl module), keep-alive, answering 200 with
    a fixed body; counts completed handshakes and records each request and its SNI.
    ``client_ca``: client certificates are required, and must chain to it."""

    issued: Issued
    client_ca: Path | None = None
    host: str = HOST
    port: int = 0  # 0: any free port
    handshakes: int = 0
    failures: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.issued.cert, self.issued.key)
        if self.client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.client_ca)
        self._sni: dict[int, str | None] = {}
        context.sni_callback = self._on_sni
        self.context = context
        self.sock = socket.create_server((self.host, self.port))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _on_sni(self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        self._sni[id(sock)] = name

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as error:
            self.failures.append(str(error))
            raw.close()
            return
        self.handshakes += 1
        sni = self._sni.pop(id(conn), None)
        peer = conn.getpeercert()
        common_name = dict(x[0] for x in peer["subject"]).get("commonName") if peer else None
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = conn.recv(65536)
                    except (ssl.SSLError, OSError) as error:
                        self.failures.append(str(error))
                        return
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                self.seen.append(Seen(head, sni, str(common_name) if common_name else None))
                body = b"hello over tls"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)


def expired_certificate(ca: CertificateAuthority, directory: Path, name: str) -> Issued:
    """A server certificate for ``name`` signed by ``ca`` that expired an hour ago."""
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    issuer = x509.load_pem_x509_certificate(ca.cert.read_bytes()).subject
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now - datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return write_issued(directory, cert, key)
