"""A TLS origin on loopback for tunnel tests: each connection is noted (did any byte arrive?),
then answered with a TLS handshake and one line, ``hello from <name>``."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path


class TLSOrigin:
    def __init__(self, cert: Path, key: Path, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.name = name
        self.sock = socket.create_server((host, port))
        self.port: int = self.sock.getsockname()[1]
        self.connections: list[bool] = []  # per connection: whether any byte came
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            got = bool(conn.recv(1, socket.MSG_PEEK))
        except OSError:
            got = False
        with self.lock:
            self.connections.append(got)
        if not got:
            conn.close()
            return
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(f"hello from {self.name}\n".encode())
                tls.recv(100)
        except (OSError, ssl.SSLError):
            pass

    def close(self) -> None:
        self.sock.close()
