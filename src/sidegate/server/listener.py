"""Listening sockets, shared between worker processes with SO_REUSEPORT."""

from __future__ import annotations

import socket


def bind_tcp(host: str, port: int, *, reuse_port: bool = True, backlog: int = 1024) -> socket.socket:
    """A non-blocking listening socket on ``host:port``.

    With ``reuse_port`` every worker process binds its own socket on the same address and the
    kernel spreads new connections across them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if host in ("", "0.0.0.0"):
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        raise OSError(error.errno, f"cannot listen on {host}:{port}: {reason}") from None
    return sock
