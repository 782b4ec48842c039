"""The splice relay on its own, over loopback TCP pairs under uvloop: bytes both ways in order
and counted, half-closes passed on, everything it opened closed; and when no pipe can be had it
undoes what it took and says so (the tunnel then stays on the copying path)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import select
import socket
from collections.abc import Iterator

import pytest
import uvloop

from sidegate.egress import splice_relay
from sidegate.egress.audit import AuditRecord
from sidegate.egress.splice_relay import SpliceRelay

pytestmark = pytest.mark.skipif(not splice_relay.AVAILABLE, reason="os.splice is Linux only")


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    return a, b


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


def pump(loop: asyncio.AbstractEventLoop, peer: socket.socket, send: bytes) -> bytes:
    """``send`` into ``peer`` and half-close, while reading it to its EOF: the other end of the
    relay, run on a thread so the loop can relay meanwhile."""

    def run() -> bytes:
        out = bytearray()
        view, sent = memoryview(send), 0
        peer.setblocking(False)
        eof = False
        while not (eof and sent == len(view)):
            progressed = False
            if sent < len(view):
                try:
                    sent += peer.send(view[sent : sent + 65536])
                    progressed = True
                except BlockingIOError:
                    pass
                if sent == len(view):
                    peer.shutdown(socket.SHUT_WR)
            if not eof:
                try:
                    data = peer.recv(65536)
                    out += data
                    eof = not data
                    progressed = True
                except BlockingIOError:
                    pass
            if not progressed:
                select.select([] if eof else [peer], [peer] if sent < len(view) else [], [], 1)
        return bytes(out)

    return run()


def test_bytes_both_ways_half_closes_and_nothing_left_open(loop: asyncio.AbstractEventLoop) -> None:
    app, app_side = tcp_pair()
    dest_side, dest = tcp_pair()
    for s in (app_side, dest_side):
        s.setblocking(False)
    record = AuditRecord("id", "connect", "CONNECT", "127.0.0.1", 0.0)
    ended = []
    before = open_fds()
    relay = SpliceRelay(loop, record, lambda: None, lambda: ended.append(True))
    assert relay.start(app_side.fileno(), dest_side.fileno())
    assert open_fds() == before + 6  # two duplicates, two pipes
    up, down = os.urandom(3 * 1024 * 1024), os.urandom(5 * 1024 * 1024)

    async def both() -> tuple[bytes, bytes]:
        got_down = loop.run_in_executor(None, pump, loop, app, up)
        got_up = loop.run_in_executor(None, pump, loop, dest, down)
        return await got_up, await got_down

    got_up, got_down = loop.run_until_complete(asyncio.wait_for(both(), 20))
    assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
    assert (record.bytes_in, record.bytes_out) == (len(up), len(down))
    assert ended == [True] and relay.closed
    assert open_fds() == before
    for s in (app, app_side, dest_side, dest):
        s.close()


def test_no_pipe_to_be_had_undoes_everything(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, app_side = tcp_pair()
    record = AuditRecord("id", "connect", "CONNECT", "127.0.0.1", 0.0)

    def no_pipe(flags: int) -> tuple[int, int]:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(splice_relay.os, "pipe2", no_pipe)
    before = open_fds()
    relay = SpliceRelay(loop, record, lambda: None, lambda: None)
    assert not relay.start(app_side.fileno(), app.fileno())
    assert open_fds() == before
    app_side.sendall(b"still a plain socket")
    assert app.recv(100) == b"still a plain socket"
    app.close()
    app_side.close()
