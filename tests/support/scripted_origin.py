"""A loopback TCP destination whose every connection is served by ``handler``, which a test sets.

What a handler raises is kept in ``errors`` for the test to assert (never printed by a stray
thread), and ``results`` is a place for handlers to leave what they saw.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

from support.gateway import HOST


class ScriptedOrigin:
    def __init__(self, timeout: float | None = None) -> None:
        self.sock = socket.create_server((HOST, 0))
        self.port: int = self.sock.getsockname()[1]
        self.timeout = timeout  # each connection's socket timeout (None: blocking)
        self.handler: Callable[[socket.socket], None] = lambda conn: None
        self.results: list[Any] = []
        self.errors: list[BaseException] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(self.timeout)
            try:
                self.handler(conn)
            except BaseException as error:  # reported by the test
                self.errors.append(error)

    def close(self) -> None:
        self.sock.close()
