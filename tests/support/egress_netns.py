"""Run inside a network namespace of its own (``unshare -n``): Sidegate's egress listener asked
to reach addresses of every non-loopback SSRF class, each with a listener on it that counts
connections. The namespace has only its loopback interface, with those addresses on it, so
nothing can leave the machine whatever Sidegate does. Prints one JSON object and exits.

Usage: ``unshare -n python egress_netns.py SIDEGATE WORKDIR``.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

#: class -> an address of it, put on this namespace's loopback interface.
ADDRESSES = {
    "private-10": "10.1.2.3",
    "private-172": "172.16.5.5",
    "private-192": "192.168.7.7",
    "cloud-metadata": "169.254.169.254",
    "link-local": "169.254.10.10",
    "cgnat": "100.64.0.1",
    "unique-local": "fd00::5",
    "benchmarking": "198.18.0.9",
    "nat64-of-private": "64:ff9b::a01:203",  # 10.1.2.3 behind the NAT64 prefix
}
#: Other spellings of the addresses above, asked for too (their listeners count them).
SPELLINGS = {"ipv4-mapped": "[::ffff:10.1.2.3]", "ipv4-mapped-hex": "[::ffff:a01:203]"}
PORT = 18080  # where every forbidden listener waits
CONTROL = ("10.1.2.3", 18081)  # an HTTP server the config allows explicitly: the set-up works
EGRESS = 15001


def main() -> None:
    sidegate, workdir = sys.argv[1], Path(sys.argv[2])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for address in ADDRESSES.values():
        subprocess.run(["ip", "addr", "add", address, "dev", "lo"], check=True)
    listeners = {}
    for name, address in ADDRESSES.items():
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        sock.bind((address, PORT))
        sock.listen(8)
        sock.setblocking(False)
        listeners[name] = sock
    control = http.server.ThreadingHTTPServer(CONTROL, http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    config = {
        "listeners": {
            "inbound": {"address": "127.0.0.1:18000"},
            "admin": {"address": "127.0.0.1:18001"},
            "health": {"address": "off"},
            "egress": {"address": f"127.0.0.1:{EGRESS}"},
        },
        "drain_delay": 0,
        "upstreams": {"app": {"endpoints": ["127.0.0.1:1"]}},
        "routes": [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"}],
        "egress": {
            "destinations": [
                {
                    "name": "control",
                    "host": CONTROL[0],
                    "ports": [CONTROL[1]],
                    "allow_private": ["10.1.2.3/32"],
                },
                {"name": "any", "host": "*", "ports": [PORT]},
            ]
        },
    }
    path = workdir / "sidegate.yaml"
    path.write_text(yaml.safe_dump(config))
    with open(workdir / "sidegate.log", "wb") as log:
        proc = subprocess.Popen([sidegate, "run", "--config", str(path)], stdout=log, stderr=log)
        try:
            _wait_for(EGRESS)
            results = {
                "control": _status(f"GET http://{CONTROL[0]}:{CONTROL[1]}/ HTTP/1.1\r\nHost: x\r\n\r\n")
            }
            for name, address in ADDRESSES.items():
                host = f"[{address}]" if ":" in address else address
                results[name] = _status(f"GET http://{host}:{PORT}/ HTTP/1.1\r\nHost: x\r\n\r\n")
                results[f"{name} CONNECT"] = _status(f"CONNECT {host}:{PORT} HTTP/1.1\r\n\r\n")
            for name, host in SPELLINGS.items():
                results[name] = _status(f"GET http://{host}:{PORT}/ HTTP/1.1\r\nHost: x\r\n\r\n")
                results[f"{name} CONNECT"] = _status(f"CONNECT {host}:{PORT} HTTP/1.1\r\n\r\n")
            accepted = {name: _accepted(sock) for name, sock in listeners.items()}
        finally:
            proc.terminate()
            proc.wait(20)
    print(json.dumps({"status": results, "accepted": accepted}))


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the egress listener did not come up")


def _status(request: str) -> int:
    with socket.create_connection(("127.0.0.1", EGRESS), timeout=5) as sock:
        sock.sendall(request.encode())
        line = sock.recv(64)
    return int(line.split(b" ")[1])


def _accepted(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


if __name__ == "__main__":
    main()
