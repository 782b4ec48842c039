"""Run wrk against a loopback URL and read its report (requests/s, latency percentiles, errors)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from procs import BenchError

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in", re.M)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass(frozen=True)
class WrkResult:
    connections: int
    requests: int
    rps: float
    percentiles_us: dict[str, float]  # "50" -> microseconds
    socket_errors: int
    non_2xx: int

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk not found: run `scripts/install-system-deps.sh nginx-light wrk` as root")
    return path


def wrk_version() -> str:
    out = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True, check=False)
    first = (out.stdout + out.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


def run_wrk(
    url: str,
    connections: int,
    duration: int,
    cpu: int | None,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    script: str | None = None,
) -> WrkResult:
    """One wrk thread, `connections` keep-alive connections, for `duration` seconds, with --latency."""
    argv = [wrk_binary(), "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for name, value in headers:
        argv += ["-H", f"{name}: {value}"]
    if script:
        argv += ["-s", script]
    argv.append(url)
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from exc
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}): {' '.join(argv)}\n{out.stdout}{out.stderr}")
    return parse_wrk(out.stdout, connections)


def parse_wrk(text: str, connections: int) -> WrkResult:
    rps = _RPS.search(text)
    total = _TOTAL.search(text)
    if rps is None or total is None:
        raise BenchError(f"cannot read wrk's report:\n{text}")
    percentiles = {p: float(v) * _UNITS[unit] * 1e6 for p, v, unit in _PERCENTILE.findall(text)}
    sock = _SOCKET_ERRORS.search(text)
    non_2xx = _NON_2XX.search(text)
    return WrkResult(
        connections=connections,
        requests=int(total.group(1)),
        rps=float(rps.group(1)),
        percentiles_us=percentiles,
        socket_errors=sum(int(n) for n in sock.groups()) if sock else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )
