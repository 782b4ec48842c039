"""CONNECT tunnels on the zero-copy path (:mod:`sidegate.egress.splice_relay`), on a real
``sidegate run``: big transfers both ways arrive whole (checksums), half-closes pass both ways,
a slow reader holds the destination back with Sidegate's memory bounded, the idle timeout and
the audit line's byte counts still hold, and many tunnels leave no file descriptor behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import admin_post
from support.gateway import GatewayFactory, GatewayProcess, free_port
from support.scripted_origin import ScriptedOrigin

pytestmark = pytest.mark.timeout(90)

HOST = "127.0.0.1"
MIB = 1024 * 1024


def pattern(size: int, seed: int) -> bytes:
    """``size`` bytes no two MiB of which are alike (a reordered or lost block changes the hash)."""
    blocks = []
    for i in range((size + MIB - 1) // MIB):
        blocks.append(hashlib.sha256(f"{seed}:{i}".encode()).digest() * (MIB // 32))
    return b"".join(blocks)[:size]


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(MIB):
        chunks.append(data)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def peer() -> Iterator[ScriptedOrigin]:
    p = ScriptedOrigin()
    yield p
    p.sock.close()


@pytest.fixture
def egress(gateway: GatewayFactory, peer: ScriptedOrigin, tmp_path: Path) -> GatewayProcess:
    port = free_port()

    def add_egress(config: dict[str, Any]) -> None:
        config["listeners"]["egress"] = {"address": f"{HOST}:{port}"}
        config["observability"] = {"access_log": {"enabled": True, "path": str(tmp_path / "access.log")}}
        config["egress"] = {
            "destinations": [
                {"name": "peer", "host": HOST, "ports": [peer.port], "allow_private": ["127.0.0.1/32"]},
            ],
        }

    gw = gateway(mutate=add_egress)
    gw.egress_port = port  # type: ignore[attr-defined]
    gw.access_log = tmp_path / "access.log"  # type: ignore[attr-defined]
    peer.results.clear()
    peer.errors.clear()
    return gw


def tunnel(gw: GatewayProcess, port: int) -> socket.socket:
    sock = socket.create_connection((HOST, gw.egress_port), timeout=20)  # type: ignore[attr-defined]
    sock.sendall(f"CONNECT {HOST}:{port} HTTP/1.1\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # byte by byte: nothing of the tunnel is read here
        more = sock.recv(1)
        assert more, head
        head += more
    assert head.startswith(b"HTTP/1.1 200 "), head
    return sock


def audit(gw: GatewayProcess, count: int) -> list[dict[str, Any]]:
    path: Path = gw.access_log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        lines = [x for x in lines if x.get("kind") == "connect"]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def fds(gw: GatewayProcess) -> list[str]:
    return [os.readlink(f"/proc/{gw.pid}/fd/{n}") for n in os.listdir(f"/proc/{gw.pid}/fd")]


def rss(gw: GatewayProcess) -> int:
    for line in Path(f"/proc/{gw.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_big_transfers_both_ways_arrive_whole_with_half_closes(
    egress: GatewayProcess, peer: ScriptedOrigin
) -> None:
    """The app uploads 48 MiB and half-closes; the destination, having read it all, answers
    with its hash and 40 MiB of its own, then closes. Both sides check every byte."""
    up, down = pattern(48 * MIB, 1), pattern(40 * MIB, 2)

    def handler(conn: socket.socket) -> None:
        got = read_all(conn)  # to the app's half-close
        conn.sendall(hashlib.sha256(got).digest() + down)
        peer.results.append(len(got))

    peer.handler = handler
    with tunnel(egress, peer.port) as sock:
        assert any(x.startswith("pipe:") for x in fds(egress))  # the relay has it
        sock.sendall(up)
        sock.shutdown(socket.SHUT_WR)
        answer = read_all(sock)
    assert not peer.errors
    assert answer[:32] == hashlib.sha256(up).digest()
    assert hashlib.sha256(answer[32:]).digest() == hashlib.sha256(down).digest()
    (line,) = audit(egress, 1)
    assert line["status"] == 200
    assert line["bytes_in"] == len(up) and line["bytes_out"] == len(down) + 32


def test_the_destinations_half_close_reaches_the_app_which_may_go_on_sending(
    egress: GatewayProcess, peer: ScriptedOrigin
) -> None:
    down, up = pattern(8 * MIB, 3), pattern(16 * MIB, 4)

    def handler(conn: socket.socket) -> None:
        conn.sendall(down)
        conn.shutdown(socket.SHUT_WR)
        peer.results.append(hashlib.sha256(read_all(conn)).digest())

    peer.handler = handler
    with tunnel(egress, peer.port) as sock:
        got = read_all(sock)  # the destination's EOF arrives while the app's side is open
        assert got == down
        sock.sendall(up)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # both ways over: Sidegate closes
    deadline = time.monotonic() + 5
    while not peer.results and time.monotonic() < deadline:
        time.sleep(0.02)
    assert peer.results == [hashlib.sha256(up).digest()]


def test_a_slow_reader_holds_the_destination_back_in_bounded_memory(
    egress: GatewayProcess, peer: ScriptedOrigin
) -> None:
    block = pattern(MIB, 5)
    sent = [0]

    def handler(conn: socket.socket) -> None:
        conn.settimeout(30)
        with pytest.raises(OSError):
            while True:
                conn.sendall(block)
                sent[0] += len(block)

    peer.handler = handler
    before = rss(egress)
    with tunnel(egress, peer.port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        time.sleep(1.5)  # the app reads nothing
        stalled = sent[0]
        time.sleep(0.5)
        assert sent[0] == stalled  # the destination is held back
        assert stalled < 48 * MIB  # socket buffers and one pipe, not everything it wanted to send
        assert rss(egress) - before < 8 * MIB  # nothing of it is in Sidegate's memory
        chunks, got = [], 0
        while got < 64 * MIB:
            data = sock.recv(MIB)
            assert data
            chunks.append(data)
            got += len(data)
    assert b"".join(chunks)[: 64 * MIB] == block * 64  # in order, none lost
    assert sent[0] >= 64 * MIB - MIB


def test_an_idle_tunnel_on_the_zero_copy_path_is_closed(egress: GatewayProcess, peer: ScriptedOrigin) -> None:
    config = dict(egress.config)
    config["egress"] = {
        "destinations": [{**config["egress"]["destinations"][0], "timeouts": {"idle": "500ms"}}]
    }
    egress.write_config(config)
    status, answer = admin_post(egress.admin_port, "/reload")
    assert status == 200, answer
    peer.handler = lambda conn: (conn.sendall(b"x" * 70000), time.sleep(5))
    started = time.monotonic()
    with tunnel(egress, peer.port) as sock:
        sock.sendall(b"hello")
        got = read_all(sock)  # closed by the idle limit once nothing moves
    assert len(got) == 70000
    assert time.monotonic() - started < 3
    (line,) = audit(egress, 1)
    assert line["closed"] == "idle"
    assert line["bytes_in"] == 5 and line["bytes_out"] == 70000


def test_many_tunnels_leave_no_file_descriptor_behind(egress: GatewayProcess, peer: ScriptedOrigin) -> None:
    def handler(conn: socket.socket) -> None:
        data = conn.recv(65536)
        if data == b"reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return
        conn.sendall(data * 4)
        if data != b"app-closes":
            conn.shutdown(socket.SHUT_WR)
            read_all(conn)

    peer.handler = handler
    with tunnel(egress, peer.port) as sock:  # the first tunnel's lazy imports and buffers
        sock.sendall(b"warm")
        sock.shutdown(socket.SHUT_WR)
        read_all(sock)
    time.sleep(0.2)
    before = len(fds(egress))
    for i in range(60):
        kind = (b"both-half-close", b"app-closes", b"reset")[i % 3]
        with tunnel(egress, peer.port) as sock:
            sock.sendall(kind)
            if kind == b"app-closes":
                assert sock.recv(65536)
                continue  # the app closes while the destination still has its side open
            if kind == b"both-half-close":
                sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(ConnectionResetError):
                read_all(sock)
    deadline = time.monotonic() + 5
    while len(fds(egress)) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(fds(egress)) <= before, fds(egress)
    assert len(audit(egress, 61)) == 61
