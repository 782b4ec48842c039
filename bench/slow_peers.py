"""Slow peers through Sidegate at full size: a big download to a client that reads slowly, and a
big upload to an app that reads slowly, each with stalls longer than the idle timeouts.

    .venv/bin/python bench/slow_peers.py                       # the issue's figures (about 2.6 h)
    .venv/bin/python bench/slow_peers.py --down-size 256MiB --rate 4MiB --up-size 48MiB --up-rate 1MiB

Defaults are the issue's: 512 MiB read by the client at 64 KiB/s, 48 MiB read by the app at
64 KiB/s. The route's idle timeout and the listener's body idle are ``--idle`` (default 10 s), and
the slow side stops reading ``--stalls`` times for ``--stall`` seconds (default 3 times 15 s): a
gateway that blamed a peer for the silence it imposed would cut both transfers. The app and the
client run in this process (threads, real loopback sockets with small receive buffers); Sidegate
runs as ``sidegate run``. Printed per direction: completed or not (SHA-256 of what arrived against
what was sent), time, bytes, and the gateway's resident memory (baseline, peak sampled every
0.2 s, and the kernel's high-water mark VmHWM).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway import start_sidegate
from procs import BenchError, Proc, ProcessGroup

BLOCK = bytes(range(256)) * 256  # 64 KiB: the stream sent both ways is this, repeated
RECV_BUFFER = 64 * 1024  # the slow side's socket receive buffer: what it does not read backs up
_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2}


def size_arg(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: write e.g. 512MiB, 64KiB, 1048576")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def digest_of_stream(size: int) -> str:
    digest = hashlib.sha256()
    whole, rest = divmod(size, len(BLOCK))
    for _ in range(whole):
        digest.update(BLOCK)
    digest.update(BLOCK[:rest])
    return digest.hexdigest()


class Pacer:
    """Keeps a reader at ``rate`` bytes/s, and makes it stop for ``stall`` s ``stalls`` times,
    evenly spread over ``size`` bytes."""

    def __init__(self, rate: int, size: int, stalls: int, stall: float) -> None:
        self.rate, self.stall = rate, stall
        self.started = time.monotonic()
        self.stalled = 0.0
        step = size // (stalls + 1) if stalls else 0
        self.stall_at = [step * (i + 1) for i in range(stalls)]

    def piece(self) -> int:
        return max(1024, min(65536, self.rate // 20))

    def after(self, got: int) -> None:
        if self.stall_at and got >= self.stall_at[0]:
            self.stall_at.pop(0)
            time.sleep(self.stall)
            self.stalled += self.stall
        ahead = got / self.rate - (time.monotonic() - self.started - self.stalled)
        if ahead > 0:
            time.sleep(ahead)


@dataclass
class Plan:
    rate: int
    stalls: int
    stall: float


class App:
    """The app: ``GET /down?bytes=N`` sends N bytes of the stream as fast as it is let;
    ``POST /up`` reads the body paced by ``plan`` and answers its SHA-256."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            try:
                head, rest = read_head(sock)
                target = head.split(b" ", 2)[1]
                if target.startswith(b"/down"):
                    size = int(target.split(b"bytes=")[1])
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                    send_stream(sock, size)
                else:
                    length = int(re.findall(rb"(?i)content-length: *(\d+)", head)[0])
                    plan = self.plan
                    digest, got = read_stream(
                        sock, length, rest, Pacer(plan.rate, length, plan.stalls, plan.stall)
                    )
                    body = json.dumps({"bytes": got, "sha256": digest}).encode()
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
            except OSError:
                pass


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise ConnectionError(f"closed before a whole head: {data[:200]!r}")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def send_stream(sock: socket.socket, size: int) -> None:
    sent = 0
    while sent < size:
        piece = BLOCK[: min(len(BLOCK), size - sent)]
        sock.sendall(piece)
        sent += len(piece)


def read_stream(sock: socket.socket, size: int, already: bytes, pacer: Pacer | None) -> tuple[str, int]:
    """Read ``size`` bytes (``already`` first), paced; returns their SHA-256 and how many came."""
    digest = hashlib.sha256(already)
    got = len(already)
    while got < size:
        data = sock.recv(min(pacer.piece() if pacer else 1 << 20, size - got))
        if not data:
            break
        digest.update(data)
        got += len(data)
        if pacer is not None:
            pacer.after(got)
    return digest.hexdigest(), got


class Memory:
    """Samples the gateway's VmRSS every 0.2 s in a thread."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.baseline = self.peak = proc.rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self.proc.rss_bytes())

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        hwm = int(re.findall(r"VmHWM:\s+(\d+) kB", status)[0]) * 1024
        mib = 1024 * 1024
        return {
            "rss_baseline_mib": self.baseline / mib,
            "rss_peak_mib": self.peak / mib,
            "vmhwm_mib": hwm / mib,
        }


def download(port: int, size: int, pacer: Pacer) -> dict[str, Any]:
    started = time.monotonic()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
    with sock:
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /down?bytes=%d HTTP/1.1\r\nHost: bench\r\n\r\n" % size)
        head, rest = read_head(sock)
        digest, got = read_stream(sock, size, rest, pacer)
    complete = head.startswith(b"HTTP/1.1 200") and got == size and digest == digest_of_stream(size)
    return {
        "complete": complete,
        "seconds": time.monotonic() - started,
        "bytes": got,
        "status": head[:15].decode(),
    }


def upload(port: int, size: int) -> dict[str, Any]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        try:
            sock.sendall(b"POST /up HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % size)
            send_stream(sock, size)
            head, rest = read_head(sock)
        except OSError as exc:
            return {"complete": False, "seconds": time.monotonic() - started, "bytes": 0, "status": repr(exc)}
        length = int(re.findall(rb"(?i)content-length: *(\d+)", head)[0])
        while len(rest) < length:
            more = sock.recv(65536)
            if not more:
                break
            rest += more
    answer: dict[str, Any] = json.loads(rest) if head.startswith(b"HTTP/1.1 200") else {}
    got = int(answer.get("bytes", 0))
    complete = got == size and answer.get("sha256") == digest_of_stream(size)
    return {
        "complete": complete,
        "seconds": time.monotonic() - started,
        "bytes": got,
        "status": head[:15].decode(),
    }


def config(idle: float) -> dict[str, Any]:
    return {
        "listeners": {"inbound": {"address": "", "limits": {"body_idle": idle}}, "admin": {"address": ""}},
        "upstreams": {"app": {"endpoints": [""]}},
        "routes": [
            {
                "name": "all",
                "match": {"path_prefix": "/"},
                "upstream": "app",
                "max_body": 0,
                "timeouts": {"idle": idle},
            }
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--down-size", type=size_arg, default=512 * 1024**2, help="download size (512MiB)")
    parser.add_argument(
        "--rate", type=size_arg, default=64 * 1024, help="the client's read rate, per second (64KiB)"
    )
    parser.add_argument("--up-size", type=size_arg, default=48 * 1024**2, help="upload size (48MiB)")
    parser.add_argument(
        "--up-rate", type=size_arg, default=64 * 1024, help="the app's read rate, per second (64KiB)"
    )
    parser.add_argument("--idle", type=float, default=10.0, help="route idle timeout and body idle, s (10)")
    parser.add_argument("--stalls", type=int, default=3, help="times the slow side stops reading (3)")
    parser.add_argument("--stall", type=float, default=15.0, help="seconds of each stop (15)")
    parser.add_argument("--only", choices=("down", "up"), help="one direction only")
    args = parser.parse_args()
    if args.rate <= 0 or args.up_rate <= 0 or args.stalls < 0 or args.stall < 0 or args.idle <= 0:
        parser.error("rates and --idle must be positive, --stalls and --stall not negative")
    app = App(Plan(args.up_rate, args.stalls, args.stall))
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="sidegate-slow-") as tmp, ProcessGroup(Path(tmp)) as group:
            source = Path(tmp) / "slow.yaml"
            source.write_text(yaml.safe_dump(config(args.idle), sort_keys=False))
            proc, port = start_sidegate(group, "sidegate", source, app.port, None)
            if args.only != "up":
                memory = Memory(proc)
                pacer = Pacer(args.rate, args.down_size, args.stalls, args.stall)
                results["download"] = {**download(port, args.down_size, pacer), **memory.stop()}
                print(json.dumps({"download": results["download"]}), flush=True)
            if args.only != "down":
                memory = Memory(proc)
                results["upload"] = {**upload(port, args.up_size), **memory.stop()}
                print(json.dumps({"upload": results["upload"]}), flush=True)
    except BenchError as exc:
        print(f"slow_peers: {exc}", file=sys.stderr)
        return 2
    return 0 if all(r["complete"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
