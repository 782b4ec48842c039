"""The world outside the pod, run in its own network namespace for the transparent-mode test:
an HTTP origin on :80, a TLS origin on :443 (the certificate given) and the DNS server the
sidecar asks, all on ADDRESS. Every accepted connection and every request is one JSON line in
LOG; the first line on stdout is ``ready <dns port>``.

Usage: ``ip netns exec NS python transparent_origin.py ADDRESS LOG CERT KEY NAME=IP...``.
"""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.stub_dns import StubDNS

LOCK = threading.Lock()


def note(log: Path, entry: dict[str, Any]) -> None:
    with LOCK, log.open("a") as out:
        out.write(json.dumps(entry) + "\n")


def server(address: str, port: int, log: Path, tls: ssl.SSLContext | None) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            note(log, {"request": self.path, "port": port, "headers": dict(self.headers.items())})
            body = f"origin {port} {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def get_request(self) -> tuple[socket.socket, Any]:
            sock, peer = self.socket.accept()
            note(log, {"accepted": port, "peer": peer[0]})
            if tls is not None:
                sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            return sock, peer

    return Server((address, port), Handler)


def main() -> None:
    address, log, cert, key = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    dns = StubDNS(host=address)
    for pair in sys.argv[5:]:
        name, _, ip = pair.partition("=")
        dns.records[(name, "A")] = (60, [ip])
    for port, tls in ((80, None), (443, context)):
        threading.Thread(target=server(address, port, log, tls).serve_forever, daemon=True).start()
    print(f"ready {dns.port}", flush=True)
    sys.stdin.read()  # until the test closes stdin


if __name__ == "__main__":
    main()
