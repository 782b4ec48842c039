"""A real ``redis-server`` for the tests: its own process on a free loopback port, no persistence.

The binary is Debian's ``redis-server`` (``scripts/install-system-deps.sh redis-server``). Each
:class:`RedisServer` runs in its own directory with ``--save '' --appendonly no`` (nothing written to
disk), keeps its port across :meth:`RedisServer.stop` / :meth:`RedisServer.start` (so a client can
watch it go away and come back), and can be frozen with :meth:`RedisServer.pause` (SIGSTOP: the kernel
still accepts connections, nothing answers). :meth:`RedisServer.command` is a tiny blocking client
of its own, to look at the server from the side without the client under test.

With ``tls`` (:class:`RedisTls`: the server's certificate and key, the CA it trusts for clients, and
whether it demands a client certificate) the server listens with TLS only (``--port 0 --tls-port N``)
and its URL is ``rediss://``; :meth:`RedisServer.command` then speaks TLS too (with the client
certificate when one is given).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from support.gateway import free_port

HOST = "127.0.0.1"
INSTALL_HINT = (
    "redis-server is not installed; the Redis rate-limit tests need Debian's redis-server: "
    "run `scripts/install-system-deps.sh redis-server` (as root)"
)


def find_redis_server() -> str | None:
    """The redis-server binary, or None (it lives in /usr/bin on Debian; /usr/sbin on some systems)."""
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/sbin/redis-server", "/usr/local/bin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass(frozen=True)
class RedisTls:
    """How a TLS-only redis-server is set up (PEM files)."""

    cert: Path  # the server's certificate
    key: Path
    ca: Path  # the CA that signed it, and the one client certificates must come from
    require_client_cert: bool = False
    client_cert: Path | None = None  # what :meth:`RedisServer.command` presents, when required
    client_key: Path | None = None


class RedisError(Exception):
    """An error reply from :meth:`RedisServer.command`."""


class RedisServer:
    """One redis-server process: ``.url .port .start() .stop() .pause() .resume() .command(*args)``."""

    def __init__(
        self,
        workdir: Path,
        *,
        binary: str | None = None,
        password: str | None = None,
        tls: RedisTls | None = None,
    ) -> None:
        found = binary or find_redis_server()
        if found is None:
            raise RuntimeError(INSTALL_HINT)
        self.binary = found
        self.workdir = workdir
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = workdir / "redis.log"

    @property
    def url(self) -> str:
        login = f":{quote(self.password, safe='')}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{login}{HOST}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (on the same port as before) and wait until it answers PING."""
        if self.proc is not None:
            raise RuntimeError("redis-server is already running")
        args = [self.binary, "--bind", HOST, "--save", "", "--appendonly", "no"]
        tls = self.tls
        if tls is None:
            args += ["--port", str(self.port)]
        else:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls.cert)]
            args += ["--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca)]
            args += ["--tls-auth-clients", "yes" if tls.require_client_cert else "no"]
        args += ["--dir", str(self.workdir), "--logfile", str(self._log), "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.command("PING", timeout=0.5) == b"PONG":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (even a paused one); the data is gone, the port kept for :meth:`start`."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a SIGSTOPped process would not act on SIGTERM
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are still accepted, nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def command(self, *args: str | bytes | int, db: int = 0, timeout: float = 5.0) -> Any:
        """Run one command on a fresh connection (logging in and selecting ``db`` first); the reply."""
        commands: list[tuple[str | bytes | int, ...]] = []
        if self.password:
            commands.append(("AUTH", self.password))
        if db:
            commands.append(("SELECT", db))
        commands.append(args)
        with socket.create_connection((HOST, self.port), timeout=timeout) as raw:
            sock = raw if self.tls is None else self._tls_context().wrap_socket(raw, server_hostname=HOST)
            sock.sendall(b"".join(_encode(command) for command in commands))
            with sock.makefile("rb") as stream:
                replies = [_read(stream) for _ in commands]
        for reply in replies:
            if isinstance(reply, RedisError):
                raise reply
        return replies[-1]

    def _tls_context(self) -> ssl.SSLContext:
        assert self.tls is not None
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.check_hostname = False  # looking from the side: any certificate of our CA will do
        if self.tls.client_cert is not None:
            key = str(self.tls.client_key) if self.tls.client_key else None
            context.load_cert_chain(str(self.tls.client_cert), key)
        return context


def _encode(args: tuple[str | bytes | int, ...]) -> bytes:
    parts = [arg if isinstance(arg, bytes) else str(arg).encode() for arg in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _read(stream: Any) -> Any:
    line: bytes = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"redis closed the connection mid-reply: {line!r}")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else stream.read(size + 2)[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read(stream) for _ in range(count)]
    raise ConnectionError(f"not a RESP reply: {line!r}")
