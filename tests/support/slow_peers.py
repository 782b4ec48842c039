"""Slow peers on real loopback sockets: an app that reads request bodies slowly (or not at all),
and client-side helpers that read a response slowly.

:class:`SlowApp` is a small HTTP/1.1 server in threads of the test process (one per connection),
with a small receive buffer so that what it does not read backs up into Sidegate rather than into
the kernel. Paths:

=============================================  ==============================================
``/upload?burst=B&pause=P``                    reads the body B bytes at a time, sleeping P s
                                               after each burst; answers 200 with JSON
                                               ``{"bytes": n, "sha256": hex}``
``/stuck``                                     reads the head, never the body; holds the
                                               connection until Sidegate closes it
``/tunnel?bytes=N``                            answers 101, then writes N bytes of
                                               :func:`stream_block` as fast as it is let
``/tunnel-stuck``                              answers 101, then reads nothing
``/tunnel-slow?bytes=N&burst=B&pause=P``       answers 101, reads N bytes as ``/upload`` does,
                                               writes their SHA-256 (64 hex digits), closes
=============================================  ==============================================

``states`` keeps, per connection, the socket of every ``/stuck`` and ``/tunnel-stuck`` request, so
a test can ask the kernel (:func:`tcp_state`) whether Sidegate closed it.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
BLOCK = bytes(range(256)) * 256  # 64 KiB
TCP_STATES = {1: "ESTABLISHED", 7: "CLOSE", 8: "CLOSE_WAIT", 11: "CLOSING"}


def stream_block(size: int) -> bytes:
    """The first ``size`` bytes of the stream that ``/tunnel`` and the origin's ``/big`` send."""
    return (BLOCK * (size // len(BLOCK) + 1))[:size]


def stream_digest(size: int) -> str:
    """SHA-256 of the first ``size`` bytes of that stream, made without holding it all."""
    digest = hashlib.sha256()
    whole, rest = divmod(size, len(BLOCK))
    for _ in range(whole):
        digest.update(BLOCK)
    digest.update(BLOCK[:rest])
    return digest.hexdigest()


def tcp_state(sock: socket.socket) -> str:
    """The kernel's TCP state of ``sock`` (``ESTABLISHED``, ``CLOSE_WAIT`` after the peer's FIN,
    ``CLOSE`` after its reset...)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return TCP_STATES.get(info[0], str(info[0]))


class SlowApp:
    """The slow app (see the module's docstring); ``address`` is its ``host:port``."""

    def __init__(self, recv_buffer: int = 64 * 1024) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)  # inherited
        self.listener.bind((HOST, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.address = f"{HOST}:{self.port}"
        self.held: list[socket.socket] = []  # connections of /stuck and /tunnel-stuck requests
        self.errors: list[str] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for sock in self.held:
            sock.close()

    def wait_held(self, count: int = 1, timeout: float = 5.0) -> socket.socket:
        deadline = time.monotonic() + timeout
        while len(self.held) < count:
            assert time.monotonic() < deadline, "the request never reached the app"
            time.sleep(0.02)
        return self.held[count - 1]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            head, rest = _read_head(sock)
            target = head.split(b" ", 2)[1].decode()
            parts = urlsplit(target)
            args = {k: v[0] for k, v in parse_qs(parts.query).items()}
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if parts.path == "/upload":
                self._upload(
                    sock, rest, length, int(args.get("burst", "65536")), float(args.get("pause", "1"))
                )
            elif parts.path in ("/stuck", "/tunnel-stuck"):
                if parts.path == "/tunnel-stuck":
                    sock.sendall(_SWITCHING)
                self.held.append(sock)
                return  # never read: the test closes it at the end
            elif parts.path == "/tunnel-slow":
                sock.sendall(_SWITCHING)
                burst, pause = int(args.get("burst", "65536")), float(args.get("pause", "1"))
                sock.sendall(self._read_slowly(sock, rest, int(args["bytes"]), burst, pause).encode())
                time.sleep(0.5)
            elif parts.path == "/tunnel":
                sock.sendall(_SWITCHING)
                size = int(args.get("bytes", "0"))
                sent = 0
                while sent < size:
                    piece = BLOCK[: min(len(BLOCK), size - sent)]
                    sock.sendall(piece)
                    sent += len(piece)
                time.sleep(0.5)
            sock.close()
        except OSError as exc:
            self.errors.append(repr(exc))
            sock.close()

    @classmethod
    def _upload(cls, sock: socket.socket, rest: bytes, length: int, burst: int, pause: float) -> None:
        hexdigest = cls._read_slowly(sock, rest, length, burst, pause)
        body = json.dumps({"bytes": length, "sha256": hexdigest}).encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        sock.sendall(head + body)

    @staticmethod
    def _read_slowly(sock: socket.socket, rest: bytes, length: int, burst: int, pause: float) -> str:
        """Read ``length`` bytes (``rest`` first), ``burst`` at a time with ``pause`` s between."""
        digest = hashlib.sha256(rest)
        got = len(rest)
        while got < length:
            burst_left = min(burst, length - got)
            while burst_left:
                data = sock.recv(min(burst_left, 65536))
                if not data:
                    raise ConnectionError(f"the body ended after {got} of {length} bytes")
                digest.update(data)
                got += len(data)
                burst_left -= len(data)
            if got < length:
                time.sleep(pause)
        return digest.hexdigest()


_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\nConnection: Upgrade\r\n\r\n"


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(4096)
        if not more:
            raise ConnectionError("closed before a whole head")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def small_receive_buffer_client(
    port: int, recv_buffer: int = 64 * 1024, timeout: float = 10.0
) -> socket.socket:
    """A client socket whose receive buffer is small, so that what it does not read backs up
    into Sidegate (set before connecting, so the window is negotiated for it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
    sock.settimeout(timeout)
    sock.connect((HOST, port))
    return sock


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response head (without the blank line) and the body bytes that came with it."""
    return _read_head(sock)
