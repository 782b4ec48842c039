"""Real servers on loopback for the JWKS fetch: a JWKS server (plain or TLS) and an HTTP proxy.

    tls = TlsFiles.make(tmp_path)                 # a CA and a certificate for 127.0.0.1 / localhost
    with JwksHttp(tls) as idp, Proxy() as proxy:  # threads; both record what they were asked
        idp.route("/jwks", body, ("Cache-Control", "max-age=60"))
        idp.redirect("/old", "/jwks", status=301)
        env = {"HTTPS_PROXY": proxy.url}           # and SSL_CERT_FILE=tls.ca for the client

The proxy speaks both forms a client uses: ``CONNECT host:port`` (a tunnel: it never sees inside the
TLS) and absolute-form requests (``GET http://host:port/path``, made on the client's behalf). It
records each request's method, target and ``Proxy-Authorization``, or answers ``refuse`` instead.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import selectors
import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TlsFiles:
    """A test CA (``ca``: PEM, for SSL_CERT_FILE) and a server certificate and key it signed."""

    ca: Path
    cert: Path
    key: Path

    @staticmethod
    def make(directory: Path) -> TlsFiles:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sidegate test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
        files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return files


@dataclass
class Answer:
    status: int
    fields: list[tuple[str, str]]
    body: bytes


class JwksHttp:
    """An HTTP(S) server on 127.0.0.1 answering each path as told (404 otherwise); records paths."""

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.answers: dict[str, Answer] = {}
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.paths.append(self.path)
                answer = outer.answers.get(self.path, Answer(404, [], b"not here"))
                self.send_response(answer.status)
                for name, value in answer.fields:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert, tls.key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def route(self, path: str, body: bytes, *fields: tuple[str, str]) -> None:
        self.answers[path] = Answer(200, [("Content-Type", "application/json"), *fields], body)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.answers[path] = Answer(status, [("Location", location)], b"")

    def fetches(self, path: str) -> int:
        return self.paths.count(path)

    def __enter__(self) -> JwksHttp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@dataclass(frozen=True)
class Asked:
    """One request the proxy received."""

    method: str
    target: str
    authorization: str | None


class Proxy:
    """A forward proxy on 127.0.0.1 (CONNECT tunnels and absolute-form requests) that records use."""

    def __init__(self, refuse: int | None = None) -> None:
        self.asked: list[Asked] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request_line = self.rfile.readline().decode("latin-1")
                lines = []
                while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                    lines.append(line.decode("latin-1").rstrip("\r\n"))
                fields = [line.partition(":") for line in lines]
                auth = next((v.strip() for n, _, v in fields if n.lower() == "proxy-authorization"), None)
                method, target, _ = request_line.split(" ", 2)
                outer.asked.append(Asked(method, target, auth))
                if refuse is not None:
                    self.wfile.write(b"HTTP/1.1 %d Refused\r\nContent-Length: 0\r\n\r\n" % refuse)
                    return
                if method == "CONNECT":
                    host, _, port = target.rpartition(":")
                    upstream = socket.create_connection((host.strip("[]"), int(port)))
                    self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:
                    parts = urlsplit(target)
                    upstream = socket.create_connection((parts.hostname or "", parts.port or 80))
                    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                    kept = "".join(f"{line}\r\n" for line in lines if not line.lower().startswith("proxy-"))
                    upstream.sendall(f"{method} {path} HTTP/1.1\r\n{kept}\r\n".encode("latin-1"))
                with upstream:
                    _pipe(self.connection, upstream)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _pipe(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        while True:
            for key, _ in selector.select(timeout=10):
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                data = source.recv(65536)
                if not data:
                    return
                key.data.sendall(data)
