"""Helpers for the process-level suites (e2e CLI, reload, streams, workers, drain).

They complement ``tests/support`` (origin app, gateway process, raw HTTP client):

* :class:`DemoApp` runs ``examples/demo_app.py`` (WebSocket echo, SSE, ``/slow``) on a free port;
* :func:`metrics` parses the admin ``/metrics`` Prometheus text into ``{(name, labels): value}``;
* :func:`admin_json`, :func:`admin_post` and :func:`body_of` talk to a running gateway;
* :func:`worker_pids` finds the worker processes of a supervisor through ``/proc``;
* :class:`ConfigMapDir` lays a config out the way a Kubernetes ConfigMap volume does and swaps it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from support.gateway import stop_process

ROOT = Path(__file__).resolve().parents[2]
DEMO_APP = ROOT / "examples" / "demo_app.py"
HOST = "127.0.0.1"

T = TypeVar("T")


# --- the demo app ------------------------------------------------------------------------------


class DemoApp:
    """``examples/demo_app.py --port 0`` in its own process; ``port`` is the one it printed."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(DEMO_APP), "--host", HOST, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode(errors="replace")
        match = re.search(r"http://[\d.]+:(\d+)", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"demo app did not start: {line!r} {log_path.read_text(errors='replace')}")
        self.port = int(match.group(1))
        self.address = f"{HOST}:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


# --- talking to a gateway ----------------------------------------------------------------------


def http(
    port: int, path: str, *, method: str = "GET", body: bytes | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection (urllib): status, headers (lower-case names), body."""
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", method=method, data=body)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            headers = {k.lower(): v for k, v in resp.headers.items()}
            return int(resp.status), headers, resp.read()
    except urllib.error.HTTPError as err:
        headers = {k.lower(): v for k, v in err.headers.items()}
        return err.code, headers, err.read()


def body_of(port: int, path: str = "/") -> str:
    """The body of a GET (asserting a 200)."""
    status, _, body = http(port, path)
    assert status == 200, (status, body)
    return body.decode()


def admin_json(admin_port: int, path: str) -> Any:
    status, _, body = http(admin_port, path)
    assert status == 200, (path, status, body)
    return json.loads(body)


def admin_post(admin_port: int, path: str) -> tuple[int, Any]:
    status, _, body = http(admin_port, path, method="POST", body=b"", timeout=15.0)
    return status, json.loads(body) if body else None


def ready_status(admin_port: int) -> int | None:
    """The status of admin ``/ready``, or None if the admin listener does not answer."""
    try:
        return http(admin_port, "/ready", timeout=1.0)[0]
    except OSError:
        return None


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Labels = tuple[tuple[str, str], ...]


def parse_metrics(text: str) -> dict[tuple[str, Labels], float]:
    """Prometheus text exposition to ``{(name, sorted label pairs): value}``."""
    out: dict[tuple[str, Labels], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match is not None, f"not a Prometheus sample line: {line!r}"
        name, labels, value = match.groups()
        pairs = tuple(sorted(_LABEL.findall(labels or "")))
        out[name, pairs] = float(value)
    return out


def metrics(admin_port: int) -> dict[tuple[str, Labels], float]:
    status, headers, body = http(admin_port, "/metrics")
    assert status == 200, f"/metrics answered {status}: {body[:2000]!r}"
    assert headers.get("content-type", "").startswith("text/plain"), headers
    return parse_metrics(body.decode())


def metric(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, pairs), v in samples.items() if n == name and want <= set(pairs))


# --- processes ---------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Pids of the live (non-zombie) child processes of ``pid``, from ``/proc/*/stat``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return sorted(out)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_pids(supervisor_pid: int) -> list[int]:
    """The worker processes of a supervisor (its multiprocessing ``spawn`` children)."""
    return [pid for pid in children(supervisor_pid) if "spawn_main" in cmdline(pid)]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.02, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {what or predicate!r} (last: {value!r})")
        time.sleep(interval)


def connection_refused(port: int) -> bool:
    """True if a new TCP connection to ``port`` is refused."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True


def rid_prefix(headers: dict[str, str]) -> str:
    """The per-process part of an ``X-Request-Id`` (its first 8 hex digits)."""
    rid = headers.get("x-request-id", "")
    assert re.fullmatch(r"[0-9a-f]{16}", rid), f"unexpected X-Request-Id {rid!r}"
    return rid[:8]


# --- configs -----------------------------------------------------------------------------------


def direct(name: str, prefix: str, body: str, status: int = 200) -> dict[str, Any]:
    """A route that answers ``body`` itself (shows which config version answered)."""
    return {
        "name": name,
        "match": {"path_prefix": prefix},
        "upstream": "app",
        "filters": {"direct_response": {"status": status, "body": body}},
    }


def proxied(name: str, prefix: str, upstream: str = "app", **extra: Any) -> dict[str, Any]:
    return {"name": name, "match": {"path_prefix": prefix}, "upstream": upstream, **extra}


class ConfigMapDir:
    """A config directory as a Kubernetes ConfigMap volume presents it, updated the kubelet's way.

    ``dir/sidegate.yaml -> ..data/sidegate.yaml``, ``..data -> ..<timestamp>``; an update writes a
    new ``..<timestamp>`` directory, points a new ``..data_tmp`` symlink at it, renames that over
    ``..data`` (atomic) and removes the old timestamped directory.
    """

    def __init__(self, directory: Path, name: str = "sidegate.yaml") -> None:
        self.dir = directory
        self.name = name
        self.path = directory / name
        self._serial = 0
        self._current: Path | None = None

    def write(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self._serial += 1
        stamp = self.dir / time.strftime(f"..%Y_%m_%d_%H_%M_%S.{os.getpid()}{self._serial:04d}")
        stamp.mkdir()
        (stamp / self.name).write_text(text)
        tmp_link = self.dir / "..data_tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp_link.unlink()
        tmp_link.symlink_to(stamp.name)
        os.replace(tmp_link, self.dir / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to(f"..data/{self.name}")
        old, self._current = self._current, stamp
        if old is not None:
            (old / self.name).unlink()
            old.rmdir()


def detach_from_watcher(gw: Any) -> Path:
    """Make the config path a symlink to a file in another directory, which the watcher does not see.

    Edits of that file then change nothing until POST /reload or SIGHUP: the test shows that
    these two triggers work on their own. Returns the real file.
    """
    elsewhere = gw.workdir.parent / f"{gw.workdir.name}-elsewhere"
    elsewhere.mkdir()
    real = elsewhere / "sidegate.yaml"
    real.write_text(gw.config_path.read_text())
    link = gw.workdir / "sidegate.yaml.link"
    link.symlink_to(real)
    os.replace(link, gw.config_path)  # same content: the watcher sees no change
    return real


def write_yaml(path: Path, config: dict[str, Any]) -> None:
    """Write ``config`` to ``path`` atomically (temporary file, then rename)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)
