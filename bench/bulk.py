"""The `connect-bulk` row of `make bench`: bulk bytes through a CONNECT tunnel against a direct TCP copy.

    .venv/bin/python bench/bulk.py serve --port P                  # the bulk origin
    .venv/bin/python bench/bulk.py read --port P --bytes N [--via-connect EGRESS_PORT]

The origin sends a 1 MiB block over and over to every client until it goes away, as fast as the kernel
takes it (blocking `sendall`, one thread per client: nothing of Python's runs per byte). The reader reads
N bytes (`recv_into` one reused buffer) either straight from the origin or through Sidegate's egress
listener after `CONNECT 127.0.0.1:P` (200 first), and prints `{"bytes": N, "seconds": S}`: the time
from the first body byte to the last, so neither the process start nor the CONNECT exchange counts.

Layout as for the wrk rows: origin and reader on the load CPU, Sidegate alone on the other. Direct and
tunnelled transfers alternate, `repeat` times each, and the medians are compared: a noisy neighbour on a
2-core machine moves one transfer, not the median. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from procs import BenchError, ProcessGroup, free_port, wait_until

HERE = Path(__file__).resolve()
BLOCK = 1024 * 1024
MIB = 1024 * 1024
TARGET = 0.8  # issue 16: a tunnel's bulk throughput at least 0.8x the direct copy's, same run
READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class BulkResult:
    """Medians over the repeats, in MB/s (10^6 bytes a second), and the tunnel's ratio to direct."""

    bytes_per_transfer: int
    repeat: int
    direct_mbps: list[float]
    tunnel_mbps: list[float]
    direct_median: float
    tunnel_median: float
    ratio: float

    def table(self) -> str:
        return "\n".join(
            [
                "| path | MB/s (median) | transfers | vs direct |",
                "|---|---|---|---|",
                f"| connect-bulk direct | {self.direct_median:,.0f} | {self.repeat} x "
                f"{self.bytes_per_transfer // MIB} MiB | - |",
                f"| connect-bulk tunnel | {self.tunnel_median:,.0f} | {self.repeat} x "
                f"{self.bytes_per_transfer // MIB} MiB | {self.ratio:.2f}x |",
            ]
        )

    def finding(self) -> str:
        verdict = "met" if self.ratio >= TARGET else "NOT met"
        return (
            f"connect-bulk target: tunnel throughput >= {TARGET:.2f}x the direct copy's; "
            f"here {self.ratio:.2f}x: {verdict}"
        )


def serve(port: int) -> None:
    block = memoryview(b"\x5a" * BLOCK)
    sock = socket.create_server(("127.0.0.1", port), backlog=16)
    print("ready", flush=True)

    def send(conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    conn.sendall(block)
            except OSError:
                return  # the reader has what it wanted and closed

    while True:
        conn, _ = sock.accept()
        threading.Thread(target=send, args=(conn,), daemon=True).start()


def read(port: int, size: int, via_connect: int | None) -> dict[str, float]:
    import time

    target = via_connect if via_connect is not None else port
    with socket.create_connection(("127.0.0.1", target), timeout=READ_TIMEOUT) as sock:
        buf = bytearray(BLOCK)
        view = memoryview(buf)
        got = 0
        if via_connect is not None:
            sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                more = sock.recv(4096)
                if not more:
                    raise SystemExit(f"the egress listener closed before answering the CONNECT: {head!r}")
                head += more
            if not head.startswith(b"HTTP/1.1 200 "):
                raise SystemExit(f"CONNECT refused: {head[:300]!r}")
            got = len(head.partition(b"\r\n\r\n")[2])
        first = sock.recv_into(view)
        if not first:
            raise SystemExit("the origin sent nothing")
        started = time.perf_counter()
        got += first
        while got < size:
            n = sock.recv_into(view)
            if not n:
                raise SystemExit(f"cut after {got} of {size} bytes")
            got += n
        seconds = time.perf_counter() - started
    return {"bytes": got, "seconds": seconds}


def start_origin(group: ProcessGroup, cpu: int) -> int:
    port = free_port()
    proc = group.start(
        group.unique("bulk-origin"), [sys.executable, str(HERE), "serve", "--port", str(port)], cpu
    )

    def probe() -> str | None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError as exc:
            return str(exc)
        return None

    wait_until(proc, probe, 10.0, f"the bulk origin on 127.0.0.1:{port}")
    return port


def _transfer(origin_port: int, size: int, cpu: int, via_connect: int | None) -> float:
    argv = ["taskset", "-c", str(cpu), sys.executable, str(HERE), "read", "--port", str(origin_port)]
    argv += ["--bytes", str(size)]
    if via_connect is not None:
        argv += ["--via-connect", str(via_connect)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=READ_TIMEOUT + 10, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"connect-bulk: the reader did not finish: {' '.join(argv)}") from exc
    if done.returncode != 0:
        raise BenchError(f"connect-bulk: the reader failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    result = json.loads(done.stdout)
    return float(result["bytes"]) / float(result["seconds"]) / 1e6


def measure_bulk(origin_port: int, egress_port: int, load_cpu: int, size: int, repeat: int) -> BulkResult:
    """``repeat`` direct and ``repeat`` tunnelled transfers of ``size`` bytes, alternating."""
    direct: list[float] = []
    tunnel: list[float] = []
    _transfer(origin_port, size // 4, load_cpu, egress_port)  # warm-up: the tunnel's first connect
    for _ in range(repeat):
        direct.append(_transfer(origin_port, size, load_cpu, None))
        tunnel.append(_transfer(origin_port, size, load_cpu, egress_port))
    d, t = statistics.median(direct), statistics.median(tunnel)
    return BulkResult(size, repeat, direct, tunnel, d, t, t / d if d else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["serve", "read"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bytes", type=int, default=256 * MIB)
    parser.add_argument("--via-connect", type=int, help="the egress listener's port: read through CONNECT")
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.port)
    else:
        print(json.dumps(read(args.port, args.bytes, args.via_connect)))


if __name__ == "__main__":
    main()
