"""The benchmark's own redis-server, for the Redis-backed rate limit (sidegate-auth-redis).

Started for the scenario and stopped with it: a free loopback port, no persistence (`--save ''
--appendonly no`), its working directory in the run's work dir, pinned to the load CPU with wrk and the
origin so the proxy's CPU stays the proxy's alone. `script_calls` reads how many EVALSHA/EVAL commands
it has run, which tells the harness whether the limit was really decided in Redis (a limiter that
falls back to its local table would otherwise pass for a fast Redis one).
"""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

from procs import BenchError, Proc, ProcessGroup, free_port, wait_until

READY_TIMEOUT = 10.0
_CALLS = re.compile(r"^cmdstat_(evalsha|eval):calls=(\d+)", re.M)


def redis_binary() -> str:
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if path is None:
        raise BenchError(
            "redis-server not found (the sidegate-auth-redis scenario starts its own): "
            "run `scripts/install-system-deps.sh redis-server` as root"
        )
    return path


def start_redis(group: ProcessGroup, name: str, cpu: int | None) -> tuple[Proc, int]:
    """Start redis-server on a free loopback port, pinned to `cpu`; returns it and its port once it PONGs."""
    name = group.unique(name)
    port = free_port()
    workdir = group.workdir / name
    workdir.mkdir()
    argv = [redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(workdir), "--daemonize", "no", "--logfile", ""]
    proc = group.start(name, argv, cpu)

    def probe() -> str | None:
        reply = redis_call(port, "PING")
        return None if reply == b"PONG" else repr(reply)

    wait_until(proc, probe, READY_TIMEOUT, "PING")
    return proc, port


def script_calls(port: int) -> int:
    """EVALSHA plus EVAL commands Redis has run since it started (`INFO commandstats`)."""
    try:
        info = redis_call(port, "INFO", "commandstats").decode()
    except OSError as exc:
        raise BenchError(f"cannot read INFO commandstats from redis on port {port}: {exc}") from exc
    return sum(int(calls) for _, calls in _CALLS.findall(info))


def redis_call(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """One command on a new connection: the reply of a status, integer or bulk string (an error raises)."""
    parts = [arg.encode() for arg in args]
    payload = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        sock.sendall(payload)
        buf = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError(f"redis on port {port} closed the connection")
            buf += chunk
            reply = _parse(buf)
            if reply is not None:
                return reply


def _parse(buf: bytes) -> bytes | None:
    """The reply in `buf` if it is complete, else None."""
    end = buf.find(b"\r\n")
    if end < 0:
        return None
    kind, line = buf[:1], buf[1:end]
    if kind in (b"+", b":"):
        return line
    if kind == b"-":
        raise BenchError(f"redis answered an error: {line.decode(errors='replace')}")
    if kind == b"$":
        size = int(line)
        if size < 0:
            return b""
        body = buf[end + 2 : end + 2 + size]
        return body if len(body) == size else None
    raise BenchError(f"redis answered something unexpected: {buf[:80]!r}")
