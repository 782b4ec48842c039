"""Real processes and raw sockets for integration tests: the origin app, Sidegate, an HTTP/1.1 reader.

* :class:`OriginProcess` runs ``tests/support/origin.py`` and reads what it recorded.
* :class:`GatewayProcess` writes a YAML config with free ports, runs ``sidegate run`` and waits
  for ``/ready``; :func:`make_config` builds the config dict (one route to the origin by default).
* :func:`send_raw`, :class:`RawClient` and :func:`parse_responses` speak HTTP/1.1 byte for byte;
  the response reader is strict (CRLF only, valid framing) so a sloppy gateway response fails a test.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SIDEGATE = (
    str(VENV_BIN / "sidegate") if (VENV_BIN / "sidegate").exists() else str(ROOT / ".venv/bin/sidegate")
)
ORIGIN_SCRIPT = str(Path(__file__).with_name("origin.py"))
HOST = "127.0.0.1"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close), and
    never one handed out before in this run: the kernel may offer a closed port again, and a
    port kept free on purpose (an upstream that refuses) must not become a listener's."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def http_get(port: int, path: str, timeout: float = 5.0, method: str = "GET") -> tuple[int, bytes]:
    """A plain request with urllib (status, body); HTTP errors are returned, not raised."""
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# --- the origin app ----------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait up to 10 s, then SIGKILL; close its stdout pipe."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


@dataclass
class Received:
    """One request as the origin received it."""

    raw: bytes
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool
    continue_sent: bool
    conn_id: int
    peer_port: int

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    def header_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


class OriginProcess:
    """The recording origin app in its own process (see ``origin.py``)."""

    def __init__(self, workdir: Path) -> None:
        self.record_path = workdir / "origin-record.jsonl"
        self.log_path = workdir / "origin.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, ORIGIN_SCRIPT, "--port", "0", "--record", str(self.record_path)],
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip():
            self.stop()
            raise RuntimeError(f"origin did not start: {self.log_path.read_text(errors='replace')}")
        self.port = int(line)
        self.address = f"{HOST}:{self.port}"

    def _control(self, method: str, path: str) -> dict[str, Any]:
        status, body = http_get(self.port, path, method=method)
        assert status == 200, (status, body)
        data: dict[str, Any] = json.loads(body)
        return data

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self._control("POST", "/__reset")

    def state(self) -> dict[str, Any]:
        return self._control("GET", "/__received")

    def received(self) -> list[Received]:
        """Every complete request received since the last reset, in order."""
        out = []
        for r in self.state()["requests"]:
            out.append(
                Received(
                    raw=base64.b64decode(r["raw"]),
                    method=r["method"],
                    target=r["target"],
                    version=r["version"],
                    headers=[(n, v) for n, v in r["headers"]],
                    body=base64.b64decode(r["body"]),
                    chunked=r["chunked"],
                    continue_sent=r["continue_sent"],
                    conn_id=r["conn_id"],
                    peer_port=r["peer_port"],
                )
            )
        return out

    def all_bytes(self) -> bytes:
        """Every byte received since the last reset: complete requests, pending and partial ones."""
        state = self.state()
        entries = state["requests"] + state["pending"] + state["partial"]
        return b"".join(base64.b64decode(e["raw"]) for e in entries)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least ``count`` requests were received; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.received()
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.02)

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


# --- the gateway -------------------------------------------------------------------------------

DEFAULT_LIMITS: dict[str, Any] = {
    "head_size": "32KiB",
    "header_count": 100,
    "head_timeout": "10s",
    "body_idle": "30s",
    "keepalive_idle": "60s",
    "buffer": "64KiB",
}
DEFAULT_FORWARDED: dict[str, Any] = {"mode": "x-forwarded", "trust_incoming": True, "via": "1.1 sidegate"}


def make_config(
    upstream: str,
    *,
    port: int,
    admin_port: int,
    routes: list[dict[str, Any]] | None = None,
    upstreams: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    forwarded: dict[str, Any] | None = None,
    health_port: int | None = None,
    **top: Any,
) -> dict[str, Any]:
    """A config dict: ``upstream`` ("host:port") as upstream ``app``, one catch-all route by default.

    ``limits`` and ``forwarded`` are merged over the defaults; ``upstreams`` is merged over
    ``{"app": ...}``; ``top`` adds top-level keys (``workers``, ``drain_timeout``...).
    ``drain_delay`` is 0 unless given, so that stopping a test's gateway takes no 5 s. The health
    listener gets ``health_port`` (a free one by default: never the shared default 9902).
    """
    config: dict[str, Any] = {
        "listeners": {
            "inbound": {
                "address": f"{HOST}:{port}",
                "limits": {**DEFAULT_LIMITS, **(limits or {})},
                "forwarded": {**DEFAULT_FORWARDED, **(forwarded or {})},
            },
            "admin": {"address": f"{HOST}:{admin_port}"},
            "health": {"address": f"{HOST}:{health_port or free_port()}"},
        },
        "upstreams": {"app": {"endpoints": [upstream]}, **(upstreams or {})},
        "routes": copy.deepcopy(routes)
        if routes is not None
        else [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"}],
    }
    config["drain_delay"] = 0
    config.update(top)
    return config


def health_port_of(config: dict[str, Any]) -> int | None:
    """The health listener's port in ``config`` (None when off, unset or 0: unknown)."""
    address = config.get("listeners", {}).get("health", {}).get("address")
    if not isinstance(address, str) or address == "off":
        return None
    return int(address.rpartition(":")[2]) or None


class GatewayProcess:
    """``sidegate run`` on free loopback ports, with its log in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any],
        *,
        port: int,
        admin_port: int,
        log_level: str = "info",
        ready_timeout: float = 15.0,
    ) -> None:
        self.workdir = workdir
        self.port = port
        self.admin_port = admin_port
        self.config = config
        self.health_port = health_port_of(config)
        self.config_path = workdir / "sidegate.yaml"
        self.log_path = workdir / "sidegate.log"
        self.write_config(config)
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [SIDEGATE, "run", "--config", str(self.config_path), "--log-level", log_level],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        self.pid = self.proc.pid
        self.wait_ready(ready_timeout)

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config`` as YAML, atomically (a reload never sees half a file)."""
        self.config = config
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, self.config_path)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Poll ``/ready`` on the health port (as the kubelet does), or on admin with no health port."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sidegate exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = http_get(self.health_port or self.admin_port, "/ready", timeout=1.0)
                if status == 200:
                    return
                last = status
            except OSError as exc:
                last = exc
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"sidegate not ready within {timeout}s (last: {last!r}):\n{self.log()}")

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def admin_url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.admin_port}{path}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample from the admin ``/metrics`` (Prometheus text): ``name{labels}``; summed over
        the other labels. None if absent."""
        status, body = http_get(self.admin_port, "/metrics")
        assert status == 200, (status, body[:500])
        total: float | None = None
        for line in body.decode().splitlines():
            match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)", line.strip())
            if match is None or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total = (total or 0.0) + float(match.group(3))
        return total

    def rss_kib(self) -> int:
        """Resident memory of the gateway process (VmRSS), in KiB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match, status
        return int(match.group(1))

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit code (kills and raises on timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"sidegate did not exit within {timeout}s of SIGTERM:\n{self.log()}"
                ) from None
        self._log.close()
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


class GatewayFactory:
    """Starts gateways in ``base`` and stops them all at :meth:`close`."""

    def __init__(self, base: Path, origin: OriginProcess) -> None:
        self.base = base
        self.origin = origin
        self.started: list[GatewayProcess] = []
        self._ids = itertools.count(1)

    def __call__(
        self,
        *,
        mutate: Callable[[dict[str, Any]], None] | None = None,
        log_level: str = "info",
        upstream: str | None = None,
        **options: Any,
    ) -> GatewayProcess:
        workdir = self.base / f"gw{next(self._ids)}"
        workdir.mkdir(parents=True)
        port, admin_port = free_port(), free_port()
        while admin_port == port:
            admin_port = free_port()
        config = make_config(upstream or self.origin.address, port=port, admin_port=admin_port, **options)
        if mutate is not None:
            mutate(config)
        gw = GatewayProcess(workdir, config, port=port, admin_port=admin_port, log_level=log_level)
        self.started.append(gw)
        return gw

    def close(self) -> None:
        failures = []
        for gw in self.started:
            code = gw.stop(30.0)
            if code != 0:
                failures.append(
                    f"sidegate (pid {gw.pid}) exited with {code} after SIGTERM:\n{gw.log()[-4000:]}"
                )
        self.started.clear()
        assert not failures, "\n".join(failures)


# --- raw HTTP/1.1 ------------------------------------------------------------------------------


def send_raw(port: int, data: bytes, read_timeout: float = 2.0, *, half_close: bool = False) -> bytes:
    """Send ``data`` on a new connection; read until the server closes or ``read_timeout`` of silence."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_until_close(sock, read_timeout)


def read_until_close(sock: socket.socket, timeout: float) -> bytes:
    """Bytes until EOF (or a reset), or until nothing arrives for ``timeout`` seconds."""
    sock.settimeout(timeout)
    chunks = []
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


class Headers:
    """Response header fields in order; look-ups are case-insensitive."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self.fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.get_all(name)
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.fields if n.lower() == name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_all(name))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.fields)

    def __repr__(self) -> str:
        return f"Headers({self.fields!r})"


class _StatusHeadersBody(NamedTuple):
    status: int
    headers: Headers
    body: bytes


class Response(_StatusHeadersBody):
    """``(status, headers, body)``, plus ``complete`` (False: the connection ended inside the
    body) and ``chunked`` (the body came chunked)."""

    complete: bool
    chunked: bool

    def __new__(
        cls, status: int, headers: Headers, body: bytes, complete: bool = True, chunked: bool = False
    ) -> Response:
        self = super().__new__(cls, status, headers, body)
        self.complete = complete
        self.chunked = chunked
        return self

    def __repr__(self) -> str:
        extra = "" if self.complete else ", complete=False"
        return f"Response(status={self.status}, headers={self.headers!r}, body={self.body[:300]!r}{extra})"

    def json(self) -> Any:
        return json.loads(self.body)


class IncompleteError(Exception):
    """More bytes are needed to finish the response."""


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9]{2}) [\x20-\x7e\x80-\xff]*")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\x20-\x7e\x80-\xff\t]*?)[ \t]*")


def _line(data: bytes, pos: int) -> tuple[bytes, int]:
    end = data.find(b"\r\n", pos)
    if end < 0:
        if b"\n" in data[pos:] or b"\r" in data[pos:-1]:
            raise ValueError(f"bare LF or CR in response: {data[pos : pos + 200]!r}")
        raise IncompleteError
    line = data[pos:end]
    if b"\n" in line or b"\r" in line:
        raise ValueError(f"bare LF or CR in response line: {line!r}")
    return line, end + 2


def parse_one(data: bytes, pos: int = 0, *, method: str = "GET", eof: bool = True) -> tuple[Response, int]:
    """Parse one response at ``pos``; returns it and the offset after it.

    Raises :class:`IncompleteError` if more bytes are needed (with ``eof`` a body cut by the close is
    returned with ``complete=False`` instead), ``ValueError`` for anything not valid HTTP/1.1.
    """
    line, pos = _line(data, pos)
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise ValueError(f"invalid status line {line!r}")
    status = int(match.group(1))
    fields = []
    while True:
        line, pos = _line(data, pos)
        if not line:
            break
        field = _FIELD.fullmatch(line)
        if field is None:
            raise ValueError(f"invalid header line {line!r}")
        fields.append((field.group(1).decode(), field.group(2).decode("latin-1")))
    headers = Headers(fields)
    te = headers.get_all("transfer-encoding")
    cl = headers.get_all("content-length")
    if te and cl:
        raise ValueError(f"response with both Transfer-Encoding and Content-Length: {fields}")
    if len(cl) > 1:
        raise ValueError(f"several Content-Length fields: {cl}")
    if status < 200 or status in (204, 304) or method == "HEAD":
        if status < 200 and (te or cl):
            raise ValueError(f"a {status} response with framing headers")
        if status in (204, 304) and te:
            raise ValueError(f"a {status} response with Transfer-Encoding")
        return Response(status, headers, b""), pos
    if te:
        if [t.strip().lower() for t in te] != ["chunked"]:
            raise ValueError(f"unexpected Transfer-Encoding {te}")
        body = bytearray()
        try:
            while True:
                line, pos = _line(data, pos)
                if not re.fullmatch(rb"[0-9a-fA-F]+", line):
                    raise ValueError(f"invalid chunk size line {line!r}")
                size = int(line, 16)
                if size == 0:
                    while True:  # trailer section
                        line, pos = _line(data, pos)
                        if not line:
                            return Response(status, headers, bytes(body), chunked=True), pos
                if len(data) < pos + size + 2:
                    body += data[pos : pos + size]
                    raise IncompleteError
                body += data[pos : pos + size]
                if data[pos + size : pos + size + 2] != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
                pos += size + 2
        except IncompleteError:
            if eof:
                return Response(status, headers, bytes(body), complete=False, chunked=True), len(data)
            raise
    if cl:
        if not cl[0].isdigit():
            raise ValueError(f"invalid Content-Length {cl[0]!r}")
        length = int(cl[0])
        if len(data) - pos < length:
            if eof:
                return Response(status, headers, data[pos:], complete=False), len(data)
            raise IncompleteError
        return Response(status, headers, data[pos : pos + length]), pos + length
    if not eof:  # close-delimited: the body ends with the connection
        raise IncompleteError
    return Response(status, headers, data[pos:]), len(data)


def parse_responses(data: bytes, methods: list[str] | None = None) -> list[Response]:
    """Every response in ``data`` (a whole connection's bytes), interim 1xx ones included.

    ``methods`` gives the request method of each final response in order (for HEAD), default GET.
    """
    out: list[Response] = []
    pos = 0
    finals = 0
    while pos < len(data):
        method = methods[finals] if methods and finals < len(methods) else "GET"
        try:
            response, pos = parse_one(data, pos, method=method, eof=True)
        except IncompleteError:
            raise ValueError(f"truncated response head: {data[pos : pos + 300]!r}") from None
        out.append(response)
        if response.status >= 200:
            finals += 1
    return out


class RawClient:
    """One client connection for step-by-step tests: send bytes, read responses one by one."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self, deadline: float) -> bool:
        """Read more bytes; False at EOF. Raises TimeoutError at the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete response in time; have {self.buf[:300]!r}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_response(self, method: str = "GET", timeout: float | None = None) -> Response:
        """The next response (a 1xx counts as one), waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            if self.buf:
                try:
                    response, pos = parse_one(self.buf, method=method, eof=self.eof)
                    self.buf = self.buf[pos:]
                    return response
                except IncompleteError:
                    if self.eof:
                        raise ValueError(f"connection closed inside a response head: {self.buf!r}") from None
            elif self.eof:
                raise ConnectionError("connection closed before a response")
            self._recv(deadline)

    def read_final(self, method: str = "GET", timeout: float | None = None) -> Response:
        """The next non-1xx response."""
        while (response := self.read_response(method, timeout)).status < 200:
            pass
        return response

    def request(self, data: bytes, method: str = "GET", timeout: float | None = None) -> Response:
        self.send(data)
        return self.read_final(method, timeout)

    def is_closed(self, timeout: float = 2.0) -> bool:
        """True if the server closes the connection within ``timeout`` (no more bytes expected)."""
        deadline = time.monotonic() + timeout
        try:
            while self._recv(deadline):
                pass
        except TimeoutError:
            return False
        return True

    def read_until_close(self, timeout: float = 5.0) -> bytes:
        """All remaining bytes until the server closes (raises TimeoutError if it does not)."""
        deadline = time.monotonic() + timeout
        while self._recv(deadline):
            pass
        data, self.buf = self.buf, b""
        return data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get(path: str = "/", host: str = "example.com", headers: dict[str, str] | None = None) -> bytes:
    """A GET request's bytes (HTTP/1.1, keep-alive)."""
    return request("GET", path, host=host, headers=headers)


def request(
    method: str,
    path: str = "/",
    body: bytes | None = None,
    *,
    host: str | None = "example.com",
    headers: dict[str, str] | None = None,
    version: str = "1.1",
) -> bytes:
    """A request's bytes; ``body`` gets a Content-Length unless ``headers`` frame it otherwise."""
    lines = [f"{method} {path} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    hdrs = dict(headers or {})
    names = {n.lower() for n in hdrs}
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        hdrs["Content-Length"] = str(len(body))
    lines += [f"{n}: {v}" for n, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunked(*pieces: bytes) -> bytes:
    """A chunked body made of ``pieces`` (empty pieces are skipped), with the last chunk."""
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
