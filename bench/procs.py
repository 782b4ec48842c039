"""Processes the benchmark starts: pinned to a CPU, logged to files, always stopped.

Every process is started in its own session (so a Ctrl-C in the terminal reaches only the harness, which
then stops them in order) and registered with a `ProcessGroup`; leaving the group's `with` block, normally
or by an exception, stops all of them: SIGTERM to the leader, then SIGKILL to its process group.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


class BenchError(Exception):
    """A setup step failed; the message says which and why (with the process's stderr when useful)."""


def free_port() -> int:
    """A loopback port that is free right now (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def bench_cpus() -> tuple[int, int]:
    """(load CPU, proxy CPU): the first two CPUs this process may run on; the same one twice if only one."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], cpus[1] if len(cpus) > 1 else cpus[0]


@dataclass
class Proc:
    """A started process with its log files."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stderr_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.stderr_path, self.stdout_path):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def rss_bytes(self, *, checker: bool = False) -> int:
        """VmRSS of the process and all its descendants (e.g. nginx master + worker). Sidegate's
        config checker server (a separate, idle Python kept warm for reloads) is counted apart:
        ``checker=True`` gives its RSS alone, else the serving processes' without it."""
        pids = [self.pid, *_descendants(self.pid)]
        return sum(_vm_rss(pid) for pid in pids if _is_checker(pid) == checker)

    def pin(self, cpu: int) -> None:
        """Move every thread of the process and its descendants to `cpu`."""
        for pid in [self.pid, *_descendants(self.pid)]:
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(int(task.name), {cpu})

    def stop(self, timeout: float = 10.0) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        # Whatever is left in its session (workers of a killed master) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


@dataclass
class ProcessGroup:
    """Starts processes into a work directory and stops all of them, newest first, on exit."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)
    _names: set[str] = field(default_factory=set)

    def unique(self, name: str) -> str:
        """`name`, or `name-2`, `name-3`, ... so repeated starts keep their own files."""
        label, n = name, 1
        while label in self._names:
            n += 1
            label = f"{name}-{n}"
        self._names.add(label)
        return label

    def start(self, name: str, argv: list[str], cpu: int | None, env: dict[str, str] | None = None) -> Proc:
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        out, err = self.workdir / f"{name}.out", self.workdir / f"{name}.err"
        with out.open("wb") as out_f, err.open("wb") as err_f:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_f,
                stderr=err_f,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        proc = Proc(name, popen, out, err)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        while self.procs:
            self.procs.pop().stop()


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    status, _, body = http_get_full(port, path, headers)
    return status, body


def http_get_full(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """GET http://127.0.0.1:port/path on a new connection: status, response headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def wait_ready(proc: Proc, port: int, path: str, timeout: float) -> None:
    """Poll GET http://127.0.0.1:port/path until it answers 200; fail early if the process exits."""

    def probe() -> str | None:
        status, _ = http_get(port, path)
        return None if status == 200 else f"status {status}"

    wait_until(proc, probe, timeout, f"GET 127.0.0.1:{port}{path}")


def wait_until(proc: Proc, probe: Callable[[], str | None], timeout: float, what: str) -> None:
    """Call ``probe`` until it returns None (ready; else it says what it saw); fail early if the
    process exits, and after ``timeout`` seconds with the last answer and the process's stderr."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.running():
            raise BenchError(
                f"{proc.name} exited with status {proc.popen.returncode} before it was ready:\n"
                f"{proc.stderr_tail()}"
            )
        try:
            seen = probe()
            if seen is None:
                return
            last = seen
        except (OSError, BenchError) as exc:
            last = str(exc)
        time.sleep(0.05)
    raise BenchError(f"{proc.name} not ready after {timeout:.0f} s ({what}: {last}):\n{proc.stderr_tail()}")


def _vm_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _is_checker(pid: int) -> bool:
    try:
        return b"sidegate.config.check" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The command name in field 2 may contain spaces; the ppid follows its closing ")".
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found
