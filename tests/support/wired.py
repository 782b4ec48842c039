"""A whole gateway, built from its config, over fake transports: socket-free tests of a request's path.

Writing a test
--------------
::

    def test_hello(wire: Wire) -> None:
        gw = wire(routes=[{"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"}])
        client = gw.client()                     # a client connection, accepted
        client.send(get("/hello"))               # the client's bytes; the loop runs until idle
        app = gw.upstream()                      # the connection the gateway opened to the app
        assert app.request().target == "/hello"  # what the app received, parsed
        app.send(reply(b"hi"))                   # the app's response bytes
        assert client.response().body == b"hi"   # what the client received, parsed
        assert not client.closed                 # kept alive

``wire(**config)`` (the fixture of ``tests/component/conftest.py``) takes the arguments of
:func:`support.gateway.make_config` (``routes``, ``limits``, ``forwarded``, ``upstreams``, top-level
keys) or ``text=`` a whole YAML config. Upstream ``app`` is ``127.0.0.1:3000``: every connection
the gateway opens to any endpoint is a new :class:`App` in :attr:`Wired.upstreams` (unless
:attr:`Wired.connect` says ``refuse`` or ``hang``). The clock stands still until
:meth:`Wired.advance` moves it (timeouts fire exactly then). An exception raised on the loop
fails the test.

What the test sees is bytes and what a user notices: :meth:`Client.response` parses the next
response the client received (strictly: :func:`support.gateway.parse_one`), :meth:`App.request`
the next request the app received; ``closed``/``aborted`` tell whether the gateway closed the
connection (and whether with a reset); ``reading`` whether it reads from it.
:meth:`Wired.round_trip` is one request answered by the app, :func:`expect_error` checks a JSON
error the gateway made. Examples of every kind: ``tests/component/test_phase_loop*.py`` and
``test_inbound_connection.py``.

The seam
--------
Only :func:`gateway_for`, :func:`inbound_connection` and :func:`idle_upstream` know how the
gateway is assembled (``Gateway``, ``InboundConnection``, the pools); the benchmarks in ``bench/``
use them too. When the gateway's internals change, only they change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import yaml

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.gateway import Gateway
from sidegate.server.inbound import InboundConnection
from sidegate.upstream.connection import UpstreamConnection
from support.fake_transport import FakeTransport, ManualClockLoop, settle
from support.gateway import Headers, IncompleteError, Response, make_config, parse_one

APP_HOST, APP_PORT = "127.0.0.1", 3000  # upstream "app" of the default config (the network is fake)
APP = f"{APP_HOST}:{APP_PORT}"


# -- the seam: how a gateway is put together without sockets ---------------------------------------


class Attachable(Protocol):
    def attach(self, protocol: Any) -> None: ...


def gateway_for(loop: asyncio.AbstractEventLoop, config: str) -> Gateway:
    """The data plane of one process for the YAML ``config`` (validated and compiled as at start)."""
    return Gateway(loop, compile_checked(check_text(config)))


def inbound_connection(gateway: Gateway, transport: Attachable) -> InboundConnection:
    """A client connection accepted by ``gateway``'s inbound listener over ``transport``."""
    conn = InboundConnection(gateway.shared)
    transport.attach(conn)
    return conn


def idle_upstream(gateway: Gateway, transport: Attachable, upstream: str = "app") -> UpstreamConnection:
    """A keep-alive connection to the first endpoint of ``upstream``, over ``transport``, lying
    idle in its pool (the next request takes it instead of connecting)."""
    pool = gateway.clusters.clusters[upstream].pools[0]
    conn = UpstreamConnection(pool)
    transport.attach(conn)
    pool.idle.append(conn)
    return conn


# -- what the app received ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SeenRequest:
    """One request as the app received it: the head's parts and the body (de-chunked)."""

    method: str
    target: str
    version: str
    headers: Headers
    body: bytes
    chunked: bool
    head: bytes  # the head's bytes as written, up to and with the blank line

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


def parse_request(data: bytes, pos: int = 0) -> tuple[SeenRequest, int]:
    """One HTTP/1.1 request at ``pos`` and the offset after it; IncompleteError if cut short."""
    end = data.find(b"\r\n\r\n", pos)
    if end < 0:
        raise IncompleteError
    head = data[pos : end + 4]
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.append((name, value.strip()))
    headers = Headers(fields)
    pos = end + 4
    if (headers.get("transfer-encoding") or "").lower() == "chunked":
        body = bytearray()
        while True:
            line_end = data.find(b"\r\n", pos)
            if line_end < 0:
                raise IncompleteError
            size = int(data[pos:line_end].split(b";")[0], 16)
            pos = line_end + 2
            if size == 0:
                trailer_end = data.find(b"\r\n", pos)
                if trailer_end < 0:
                    raise IncompleteError
                pos = trailer_end + 2
                break
            if len(data) < pos + size + 2:
                raise IncompleteError
            body += data[pos : pos + size]
            pos += size + 2
        return SeenRequest(method, target, version, headers, bytes(body), True, head), pos
    length = int(headers.get("content-length") or 0)
    if len(data) < pos + length:
        raise IncompleteError
    return SeenRequest(method, target, version, headers, data[pos : pos + length], False, head), pos + length


def reply(
    body: bytes = b"",
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    reason: str = "OK",
    length: bool = True,
) -> bytes:
    """An app's response: ``body`` with a Content-Length (unless ``length`` is false or
    ``headers`` frame it otherwise)."""
    fields = dict(headers or {})
    names = {n.lower() for n in fields}
    if length and "content-length" not in names and "transfer-encoding" not in names:
        fields["Content-Length"] = str(len(body))
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{n}: {v}" for n, v in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def expect_error(response: Response, status: int, kind: str) -> dict[str, Any]:
    """``response`` is a JSON error the gateway made: ``status``, its ``kind``, a request id.
    Returns the JSON body (``detail`` says why)."""
    assert response.status == status, response
    assert (response.headers.get("content-type") or "").startswith("application/json"), response
    assert response.headers.get("x-request-id"), response
    body: dict[str, Any] = response.json()
    assert body["error"] == kind and body["status"] == status, body
    return body


# -- the two kinds of peer -------------------------------------------------------------------------


class Client(FakeTransport):
    """A client connection to the inbound listener, played by the test."""

    def __init__(self, loop: asyncio.AbstractEventLoop, peername: tuple[str, int]) -> None:
        super().__init__(loop, peername)
        self._parsed = 0  # offset in output of the next response to parse

    def response(self, method: str = "GET") -> Response:
        """The next response the client received, 1xx ones included (``method``: of its request,
        for HEAD). A body cut by the close comes back with ``complete`` false."""
        try:
            data = bytes(self.output)
            response, self._parsed = parse_one(data, self._parsed, method=method, eof=self.closed)
        except IncompleteError:
            rest = bytes(self.output[self._parsed :])
            raise AssertionError(f"no complete response (yet); the client has {rest[:300]!r}") from None
        return response

    def responses(self, methods: list[str] | None = None) -> list[Response]:
        """Every response not yet read with :meth:`response`, in order."""
        out: list[Response] = []
        while self._parsed < len(self.output):
            method = methods[len(out)] if methods and len(out) < len(methods) else "GET"
            out.append(self.response(method))
        return out

    @property
    def unread(self) -> bytes:
        """Bytes received but not yet parsed by :meth:`response`."""
        return bytes(self.output[self._parsed :])


class App(FakeTransport):
    """One connection the gateway opened to an upstream endpoint, played by the test."""

    def __init__(self, loop: asyncio.AbstractEventLoop, peername: tuple[str, int]) -> None:
        super().__init__(loop, peername)
        self._parsed = 0

    def request(self) -> SeenRequest:
        """The next request the app received on this connection."""
        try:
            seen, self._parsed = parse_request(bytes(self.output), self._parsed)
        except IncompleteError:
            rest = bytes(self.output[self._parsed :])
            raise AssertionError(f"no complete request (yet); the app has {rest[:300]!r}") from None
        return seen

    def requests(self) -> list[SeenRequest]:
        """Every request not yet read with :meth:`request`."""
        out: list[SeenRequest] = []
        while self._parsed < len(self.output):
            out.append(self.request())
        return out


# -- the harness -------------------------------------------------------------------------------------


class Wired:
    """A gateway over fake transports on a loop with a hand-moved clock (see the module doc)."""

    def __init__(self, config: str) -> None:
        self.loop = ManualClockLoop()
        self.loop.connector = self._connect
        self.gateway = gateway_for(self.loop, config)
        self.upstreams: list[App] = []  # every connection opened to an endpoint, in order
        self.connect: Literal["accept", "refuse", "hang"] = "accept"  # what the next connects meet
        self._clients = 0

    def client(self, ip: str = "127.0.0.1") -> Client:
        """A new client connection, accepted."""
        self._clients += 1
        client = Client(self.loop, (ip, 40000 + self._clients))
        inbound_connection(self.gateway, client)
        settle(self.loop)
        return client

    def upstream(self, index: int = -1) -> App:
        """A connection the gateway opened to the app (the latest by default)."""
        assert self.upstreams, "the gateway opened no upstream connection"
        return self.upstreams[index]

    def idle_upstream(self, upstream: str = "app") -> App:
        """Put an open connection in ``upstream``'s pool, as if a request had left it there."""
        app = App(self.loop, (APP_HOST, APP_PORT))
        idle_upstream(self.gateway, app, upstream)
        self.upstreams.append(app)
        return app

    def round_trip(self, client: Client, data: bytes, answer: bytes, method: str = "GET") -> Response:
        """``client`` sends ``data``; the app (on the latest upstream connection) reads the request
        and sends ``answer``; returns the response the client received."""
        client.send(data)
        self.upstream().request()
        self.upstream().send(answer)
        return client.response(method)

    def settle(self) -> None:
        """Run the loop until nothing is left to do now."""
        settle(self.loop)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on the loop clock; timeouts due meanwhile fire in order."""
        self.loop.advance(seconds)

    async def _connect(
        self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        if self.connect == "refuse":
            raise ConnectionRefusedError(f"connection to {host}:{port} refused (fake)")
        if self.connect == "hang":
            await self.loop.create_future()  # never answered: the connect timeout decides
        protocol = factory()
        assert isinstance(protocol, asyncio.Protocol)
        app = App(self.loop, (host, port))
        app.attach(protocol)
        self.upstreams.append(app)
        return app, protocol

    def close(self) -> None:
        """Stop what the gateway runs and close the loop (errors raised meanwhile are dropped)."""
        gateway = self.gateway
        gateway.clusters.close()
        gateway.sweeper.stop()
        gateway.proxy.recorder.close()
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        with contextlib.suppress(AssertionError):
            settle(self.loop)
        self.loop.close()


Wire = Callable[..., Wired]
"""The ``wire`` fixture: ``wire(**make_config_arguments)`` or ``wire(text=yaml)`` -> :class:`Wired`."""


def config_text(text: str | None = None, **config: Any) -> str:
    """The YAML of :func:`support.gateway.make_config` for the fake app ``127.0.0.1:3000`` (or ``text``)."""
    if text is not None:
        return text
    return yaml.safe_dump(make_config(APP, port=8080, admin_port=9901, **config), sort_keys=False)


@contextlib.contextmanager
def wiring() -> Iterator[Wire]:
    """A factory of :class:`Wired` gateways, each closed when the block ends (the fixture's body)."""
    made: list[Wired] = []

    def wire(text: str | None = None, **config: Any) -> Wired:
        wired = Wired(config_text(text, **config))
        made.append(wired)
        return wired

    try:
        yield wire
    finally:
        for wired in made:
            wired.close()
