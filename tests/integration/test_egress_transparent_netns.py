"""Transparent mode for real: a "pod" network namespace where Sidegate runs (as root, the UID
the rules exclude) and the app runs as another user (nobody, via setpriv), joined by a veth pair
(10.251.0.0/30) to a "world" namespace with an HTTP origin, a TLS origin and the DNS server.
``sidegate iptables --apply`` installs the nat rules in the pod; the app, which knows nothing
of any proxy, calls the world directly, and the origins' own logs show what reached them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.gateway import SIDEGATE
from support.tls import CertificateAuthority

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.geteuid() != 0
        or not all(shutil.which(t) for t in ("ip", "iptables", "iptables-save", "setpriv", "curl")),
        reason="needs root, ip (iproute2), iptables, setpriv and curl",
    ),
]

POD_IP, WORLD_IP = "10.251.0.1", "10.251.0.2"
APPLY = ("iptables", "--apply", "--proxy-uid", "0", "--inbound-ports", "8080", "--inbound-port", "18000")
APP = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]  # the app: nobody
EGRESS = 15001
SCRIPT = Path(__file__).resolve().parents[1] / "support" / "transparent_origin.py"


@dataclass
class Pod:
    ns: str
    world_ns: str
    world_log: Path
    audit_log: Path
    ca: Path

    def run(self, *command: str, app: bool = False) -> subprocess.CompletedProcess[str]:
        prefix = ["ip", "netns", "exec", self.ns, *(APP if app else [])]
        return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=30, check=False)

    def curl(self, url: str, *extra: str, app: bool = True) -> tuple[int, str, int]:
        """(exit code, body, status) of curl in the pod, as the app unless ``app`` is False."""
        out = self.run("curl", "-s", "--max-time", "10", "-w", "\n%{http_code}", *extra, url, app=app)
        body, _, code = out.stdout.rpartition("\n")
        return out.returncode, body, int(code or 0)

    def world(self) -> list[dict[str, Any]]:
        text = self.world_log.read_text() if self.world_log.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def audit(self, at_least: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 5
        while True:
            text = self.audit_log.read_text() if self.audit_log.exists() else ""
            lines = [json.loads(line) for line in text.splitlines() if '"egress"' in line]
            if len(lines) >= at_least or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def nat(self) -> list[str]:
        saved = self.run("iptables-save", "-t", "nat").stdout.splitlines()
        return [line for line in saved if not line.startswith("#")]


def _sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    work = tmp_path_factory.mktemp("transparent")
    shared = Path(tempfile.mkdtemp(prefix="sg-transparent-"))  # the app (nobody) reads the CA here
    shared.chmod(0o755)
    ca = CertificateAuthority.create(shared / "ca")
    (shared / "ca").chmod(0o755)
    issued = ca.issue(work / "origin", "world", dns=("allowed.test", "denied.test"))
    suffix = os.urandom(3).hex()
    pod_ns, world_ns, pod_if, world_if = (
        f"sg-pod-{suffix}",
        f"sg-world-{suffix}",
        f"sgp{suffix}",
        f"sgw{suffix}",
    )
    procs: list[subprocess.Popen[Any]] = []
    try:
        _sh("ip", "netns", "add", pod_ns)
        _sh("ip", "netns", "add", world_ns)
        _sh("ip", "link", "add", pod_if, "type", "veth", "peer", "name", world_if)
        for ns, link, address in ((pod_ns, pod_if, POD_IP), (world_ns, world_if, WORLD_IP)):
            _sh("ip", "link", "set", link, "netns", ns)
            _sh("ip", "-n", ns, "addr", "add", f"{address}/30", "dev", link)
            _sh("ip", "-n", ns, "link", "set", link, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        world = subprocess.Popen(
            ["ip", "netns", "exec", world_ns, sys.executable, str(SCRIPT), WORLD_IP, str(work / "world.log"),
             str(issued.cert), str(issued.key), f"allowed.test={WORLD_IP}", f"denied.test={WORLD_IP}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(world)
        assert world.stdout is not None
        dns_port = int(world.stdout.readline().split()[1])
        config = {
            "listeners": {
                "inbound": {"address": "0.0.0.0:18000"},  # redirected inbound arrives at the pod IP
                "admin": {"address": "127.0.0.1:18001"},
                "health": {"address": "off"},
                "egress": {"address": f"127.0.0.1:{EGRESS}"},
            },
            "drain_delay": 0,
            "upstreams": {"app": {"endpoints": ["127.0.0.1:1"]}},
            "routes": [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"}],
            "observability": {"access_log": {"enabled": True, "path": str(work / "access.log")}},
            "egress": {
                "transparent": True,
                "dns": {"servers": [f"{WORLD_IP}:{dns_port}"]},
                "destinations": [
                    {"name": "allowed", "host": "allowed.test", "allow_private": ["10.251.0.0/30"]},
                    {
                        "name": "raw-world",
                        "host": WORLD_IP,
                        "ports": [443],
                        "schemes": ["tcp"],
                        "allow_private": ["10.251.0.0/30"],
                    },
                ],
            },
        }
        (work / "sidegate.yaml").write_text(yaml.safe_dump(config))
        log = (work / "sidegate.log").open("wb")
        sidegate = subprocess.Popen(
            ["ip", "netns", "exec", pod_ns, str(SIDEGATE), "run", "--config", str(work / "sidegate.yaml")],
            stdout=log, stderr=log,
        )  # fmt: skip
        procs.append(sidegate)
        pod = Pod(pod_ns, world_ns, work / "world.log", work / "access.log", ca.cert)
        deadline = time.monotonic() + 20
        while pod.curl(f"http://127.0.0.1:{EGRESS}/", app=False)[2] == 0:
            assert time.monotonic() < deadline, (work / "sidegate.log").read_text()
            time.sleep(0.1)
        applied = pod.run(str(SIDEGATE), *APPLY)
        assert applied.returncode == 0, applied.stderr
        yield pod
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(20)
        for ns in (pod_ns, world_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        shutil.rmtree(shared, ignore_errors=True)


def test_the_apps_plain_http_goes_through_sidegate(pod: Pod) -> None:
    before = len(pod.world())
    code, body, status = pod.curl("http://allowed.test/hello", "--resolve", f"allowed.test:80:{WORLD_IP}")
    assert (code, status, body) == (0, 200, "origin 80 /hello")
    seen = pod.world()[before:]
    (request,) = [e for e in seen if "request" in e]
    assert "sidegate-egress" in request["headers"].get("Via", "")  # it came from Sidegate
    assert request["headers"]["Host"] == "allowed.test"
    line = [a for a in pod.audit(2) if a["kind"] == "transparent"][-1]  # the first: the readiness poll's
    assert line["original_destination"] == f"{WORLD_IP}:80"
    assert line["decision"] == "allow" and line["destination"] == "allowed.test:80"


def test_a_disallowed_host_gets_403_and_the_origin_sees_nothing(pod: Pod) -> None:
    before = len(pod.world())
    _, body, status = pod.curl("http://denied.test/", "--resolve", f"denied.test:80:{WORLD_IP}")
    assert status == 403 and json.loads(body)["error"] == "egress_denied"
    time.sleep(0.2)
    assert pod.world()[before:] == []


def test_tls_with_an_allowed_sni_is_verified_by_the_app_end_to_end(pod: Pod) -> None:
    url = "https://allowed.test/secure"
    code, body, status = pod.curl(url, "--cacert", str(pod.ca), "--resolve", f"allowed.test:443:{WORLD_IP}")
    assert (code, status, body) == (0, 200, "origin 443 /secure")
    line = [a for a in pod.audit(4) if a.get("original_destination") == f"{WORLD_IP}:443"][-1]
    assert line["kind"] == "transparent" and line["sni"] == "allowed.test" and line["decision"] == "allow"


def test_a_disallowed_sni_is_closed_with_no_connection_at_the_origin(pod: Pod) -> None:
    before = len(pod.world())
    url = "https://denied.test/"
    code, _, _ = pod.curl(url, "--cacert", str(pod.ca), "--resolve", f"denied.test:443:{WORLD_IP}")
    assert code != 0  # the connection was closed: no TLS answer
    time.sleep(0.2)
    assert pod.world()[before:] == []
    line = [a for a in pod.audit(5) if a.get("sni") == "denied.test"][-1]
    assert line["decision"] == "deny" and line["kind"] == "transparent"


NO_SNI_CLIENT = """
import socket, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[2])
context.check_hostname = False
sock = socket.create_connection((sys.argv[1], 443), timeout=5)
try:
    context.wrap_socket(sock)  # no server_hostname: no SNI
    print("handshake")
except (ssl.SSLError, OSError) as error:
    print("closed", type(error).__name__)
"""


def test_tls_without_sni_is_decided_on_the_original_ip(pod: Pod) -> None:
    before = len(pod.world())
    out = pod.run("/usr/bin/python3", "-c", NO_SNI_CLIENT, WORLD_IP, str(pod.ca), app=True)
    assert out.stdout.startswith("closed"), out.stdout + out.stderr
    time.sleep(0.2)
    assert pod.world()[before:] == []
    line = [a for a in pod.audit(6) if a.get("sni") == ""][-1]
    assert line["destination"] == f"{WORLD_IP}:443"  # the IP, as no name was sent
    assert "scheme https is not allowed by destination 'raw-world'" in line["reason"]


RAW_CLIENT = """
import socket, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
sock.sendall(b"HELLO raw protocol\\n")
print(repr(sock.recv(100)))
"""


def test_raw_tcp_needs_a_tcp_destination_for_that_ip_and_port(pod: Pod) -> None:
    before = len(pod.world())
    out = pod.run("/usr/bin/python3", "-c", RAW_CLIENT, WORLD_IP, "80", app=True)
    assert out.stdout.strip() == "b''", out.stderr  # closed: raw-world allows port 443 only
    time.sleep(0.2)
    assert pod.world()[before:] == []
    line = [a for a in pod.audit(7) if a.get("original_destination") == f"{WORLD_IP}:80"][-1]
    assert (
        line["decision"] == "deny" and "port 80 is not allowed by destination 'raw-world'" in line["reason"]
    )
    pod.run("/usr/bin/python3", "-c", RAW_CLIENT, WORLD_IP, "443", app=True)  # not TLS: the origin fails it
    assert {"accepted": 443, "peer": POD_IP} in pod.world()[before:]  # but it was let through


def test_the_sidecars_own_traffic_is_not_redirected(pod: Pod) -> None:
    before = len(pod.world())
    _, body, status = pod.curl(f"http://{WORLD_IP}/direct", "-H", "Host: denied.test", app=False)
    assert (status, body) == (200, "origin 80 /direct")  # denied.test would be a 403 through Sidegate
    (request,) = [e for e in pod.world()[before:] if "request" in e]
    assert "Via" not in request["headers"]


def test_inbound_is_redirected_on_the_listed_port_only(pod: Pod) -> None:
    def from_world(port: int) -> str:
        url = f"http://{POD_IP}:{port}/"
        command = [
            "ip",
            "netns",
            "exec",
            pod.world_ns,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            url,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=20, check=False).stdout

    assert from_world(8080) == "503"  # Sidegate's inbound listener answered (its app is not there)
    assert from_world(8081) == "000"  # not listed: nothing listens there, the connection is refused


def test_applying_again_changes_nothing_and_clean_removes_only_sidegate(pod: Pod) -> None:
    once = pod.nat()
    assert any(line.startswith(":SIDEGATE_OUTPUT") for line in once)
    pod.run("iptables", "-t", "nat", "-N", "OTHER_MESH")  # someone else's chain: left alone
    assert pod.run(str(SIDEGATE), *APPLY).returncode == 0
    twice = [line for line in pod.nat() if "OTHER_MESH" not in line]
    assert twice == once
    cleaned = pod.run(str(SIDEGATE), "iptables", "--clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert not any("SIDEGATE" in line for line in pod.nat())
    assert ":OTHER_MESH - [0:0]" in pod.nat()
    before = len(pod.world())
    _, _, status = pod.curl("http://denied.test/", "--resolve", f"denied.test:80:{WORLD_IP}")
    assert status == 200  # no rules: the app goes straight out again
    (request,) = [e for e in pod.world()[before:] if "request" in e]
    assert "Via" not in request["headers"]
