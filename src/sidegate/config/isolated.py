"""Validating a config in a child process, so that the serving process stays small and safe.

Validation needs YAML, pydantic and the config models: about 14 MiB that a gateway process would
keep for its whole life after using them for a fraction of a second at each (re)load. So the
serving process never imports them. :func:`validate_file` and :func:`validate_text` hand the
config to the config checker, ``python -m sidegate.config.check`` (:mod:`sidegate.config.check`),
with this interpreter, and return the :class:`Normalised` config it printed;
:func:`sidegate.config.compile.compile_checked` turns that into a snapshot. An invalid file is a
:class:`~sidegate.errors.ConfigError` with the checker's issues (dotted paths, lines), exactly as
in-process validation reports them; a checker that crashes, hangs past ``timeout`` or prints
something else than its JSON answer is a ``ConfigError`` that says so.

Starting Python and importing pydantic is most of a check's time (0.2 s on an idle machine,
close to a second on a busy one), so it is paid once, not at each reload: the checker runs as a
server (``--serve``, :mod:`sidegate.config.forking`) that does its imports, then forks a child
for each check, which answers and exits. Nothing a config does to the process that checks it
(memory, a filter module's state, a crash) outlives its check, and the server never reads a
config itself. A request is one JSON line: the path or the text, this process's environment for
``${ENV}`` and its working directory. After a config is taken, the server is told to import its
filters (``warm NAMES``), ready for the next one. A server that died is started again (the
check it was given is asked again of the new one); one that does not answer within ``timeout``
is killed with its child (its own process group). It is killed when this process exits, and
exits by itself if this process dies (its stdin closes). Only the process that validates keeps
one: the supervisor with ``workers: N``, never its workers.

Both functions block until the checker answers (about 10 ms): from the event loop, call them
with ``await loop.run_in_executor(None, validate_file, path)``.

This module imports neither pydantic nor YAML (a test checks it in a fresh interpreter).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidegate.errors import ConfigError, ConfigIssue

log = logging.getLogger("sidegate.config")

# The checker's command; tests swap it for a misbehaving one.
CHECKER: tuple[str, ...] = (sys.executable, "-m", "sidegate.config.check")
# Version of the checker's JSON answer: a checker from another install of Sidegate (upgraded in
# place under a running gateway) is refused rather than misread.
FORMAT = 1


@dataclass(frozen=True)
class Normalised:
    """A valid config as plain JSON data (see :mod:`sidegate.config.compile` for its shape).

    ``lines`` maps the dotted path of each route's filter entry to its line in the file, so that
    a filter that fails to start in the serving process is reported where it is written.
    Plain dicts, so that it pickles (the supervisor sends it to its workers).
    """

    config: dict[str, Any]
    source: str
    lines: dict[str, int] = field(default_factory=dict)
    warnings: tuple[ConfigIssue, ...] = ()  # what works, but not as one may think (to be logged)


def validate_file(
    path: str | os.PathLike[str], *, timeout: float = 15.0, environ: Mapping[str, str] | None = None
) -> Normalised:
    """Check the config file at ``path`` in a checker process (blocking); raise ConfigError if invalid.

    ``environ`` (default: this process's environment) supplies the ``${NAME}`` substitutions.
    """
    source = os.fspath(path)
    return _check({"path": source}, source, timeout, environ)


def validate_text(
    text: str,
    source: str = "<string>",
    *,
    timeout: float = 15.0,
    environ: Mapping[str, str] | None = None,
) -> Normalised:
    """Like :func:`validate_file` for config text in memory."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = f"the config text cannot be encoded as UTF-8: {exc.reason}"
        raise ConfigError([ConfigIssue("", msg)], source) from None
    return _check({"text": text, "source": source}, source, timeout, environ)


def _check(
    request: dict[str, Any], source: str, timeout: float, environ: Mapping[str, str] | None
) -> Normalised:
    request["environ"] = dict(os.environ if environ is None else environ)
    request["cwd"] = os.getcwd()
    data = json.dumps(request).encode("utf-8") + b"\n"  # json.dumps escapes every newline
    try:
        code, stdout, stderr = _SERVER.check(data, source, timeout)
    except OSError as exc:
        msg = f"cannot start the config checker ({CHECKER[0]!r}): {exc.strerror or exc}"
        raise _failure(source, msg) from None
    if code != 0:
        _log_stderr(stderr)
        raise _failure(source, f"the config checker {_ending(code)}{_last_line(stderr)}")
    checked = _parse(stdout, stderr, source)
    _SERVER.prepare(_filter_names(checked.config))
    return checked


def _filter_names(config: Mapping[str, Any]) -> frozenset[str]:
    """The filters a config uses (the checker server imports them ahead of the next check)."""
    routes = config.get("routes")
    if not isinstance(routes, list):
        return frozenset()
    return frozenset(
        str(name) for route in routes if isinstance(route, dict) for name in route.get("filters") or ()
    )


class _Server:
    """The checker server process (:mod:`sidegate.config.forking`), one check at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._command: tuple[str, ...] = ()
        self._warm: frozenset[str] = frozenset()  # the filters it imported
        self._exit_hook = False

    def check(self, request: bytes, source: str, timeout: float) -> tuple[int, bytes, bytes]:
        """``(exit status, answer, stderr)`` of one check; raises ConfigError on a timeout."""
        with self._lock:
            process, fresh = self._running()
            reply = self._exchange(process, request, source, timeout)
            if reply is None and not fresh:  # it died while it waited: not this config's doing
                _stop(process)
                self._process = None
                process, fresh = self._running()
                reply = self._exchange(process, request, source, timeout)
            if reply is None:  # it ended without a reply: how it ended is the answer
                self._process = None
                try:
                    _, stderr = process.communicate(timeout=5)
                except subprocess.TimeoutExpired:  # it closed its stdout but lives on
                    _stop(process)
                    stderr = b""
                return process.returncode, b"", stderr or b""
            return reply

    def prepare(self, warm: frozenset[str]) -> None:
        """Have a server running that has imported the filters in ``warm``, now, while nobody
        waits, rather than at the next check."""
        with self._lock:
            if not self._exit_hook:
                atexit.register(self.close)
                self._exit_hook = True
            process, new = self._process, warm - self._warm
            self._warm |= warm
            if process is not None and process.poll() is None:
                if new and process.stdin is not None:
                    with contextlib.suppress(OSError):  # gone: the next check starts another
                        process.stdin.write(f"warm {','.join(sorted(new))}\n".encode())
                        process.stdin.flush()
                return
            with contextlib.suppress(OSError):  # else the next check starts its own, and says why not
                self._process, self._command = _start(self._warm), CHECKER

    def close(self) -> None:
        """Stop the server (at exit)."""
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            _stop(process)

    def _running(self) -> tuple[subprocess.Popen[bytes], bool]:
        """The server, started now if there is none that is alive and runs :data:`CHECKER`;
        and whether it was started now."""
        process = self._process
        if process is not None and process.poll() is None and self._command == CHECKER:
            return process, False
        if process is not None:
            _stop(process)
        self._process, self._command = _start(self._warm), CHECKER
        return self._process, True

    def _exchange(
        self, process: subprocess.Popen[bytes], request: bytes, source: str, timeout: float
    ) -> tuple[int, bytes, bytes] | None:
        """Send one request and read its reply line; None if the server ended first."""
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(request)
            process.stdin.flush()
        except OSError:  # it has gone: its exit status tells why
            pass
        line = _read_line(process.stdout.fileno(), time.monotonic() + timeout)
        if line is None:
            _stop(process)
            self._process = None
            raise _failure(source, f"the config checker did not answer within {timeout:g}s")
        if not line:
            return None
        try:
            reply = json.loads(line)
            code, answer, stderr = reply["exit"], reply["answer"], reply["stderr"]
            if not isinstance(code, int):
                raise TypeError("exit")
            return code, str(answer).encode("utf-8"), str(stderr).encode("utf-8")
        except (ValueError, KeyError, TypeError):  # not a server's reply: show what it printed
            _stop(process)
            self._process = None
            return 0, line, b""


def _read_line(fd: int, deadline: float) -> bytes | None:
    """One line from ``fd`` (b"" at the end of the stream); None when ``deadline`` passes first."""
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return data
        data += chunk
    return data


def _start(warm: frozenset[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CHECKER, "--serve", *([f"--warm={','.join(sorted(warm))}"] if warm else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: a timeout kills it with its child
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the server and a check it runs (its process group), unless it is gone already: once
    reaped, its pid may belong to another process."""
    if process.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        process.communicate(timeout=5)


_SERVER = _Server()


def _parse(stdout: bytes, stderr: bytes, source: str) -> Normalised:
    try:
        answer = json.loads(stdout)
    except ValueError:  # not JSON, or not UTF-8
        _log_stderr(stderr)
        shown = stdout.decode("utf-8", "replace").strip()
        shown = repr(shown[:120] + "..." if len(shown) > 120 else shown) if shown else "nothing"
        raise _failure(source, f"the config checker printed {shown} instead of its JSON answer") from None
    if not isinstance(answer, dict) or answer.get("format") != FORMAT:
        found = answer.get("format") if isinstance(answer, dict) else None
        msg = (
            f"the config checker answered in format {found!r}, not {FORMAT}: "
            "was Sidegate upgraded under this process? Restart it"
        )
        raise _failure(source, msg)
    if answer.get("ok") is True:
        config, lines = answer.get("config"), answer.get("lines", {})
        if not isinstance(config, dict) or not isinstance(lines, dict):
            raise _failure(source, "the config checker's answer has no config")
        lines = {str(k): v for k, v in lines.items() if isinstance(v, int)}
        return Normalised(config, source, lines, tuple(_issues(answer.get("warnings"))))
    issues = _issues(answer.get("issues"))
    issues = issues or [ConfigIssue("", "the config checker rejected the config")]
    raise ConfigError(issues, source, _issues(answer.get("warnings")))


def _issues(raw: object) -> list[ConfigIssue]:
    return [_issue(item) for item in raw if isinstance(item, dict)] if isinstance(raw, list) else []


def _issue(item: Mapping[str, Any]) -> ConfigIssue:
    line = item.get("line")
    return ConfigIssue(
        str(item.get("path", "")), str(item.get("message", "")), line if isinstance(line, int) else None
    )


def _failure(source: str, message: str) -> ConfigError:
    return ConfigError([ConfigIssue("", message)], source)


def _ending(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"failed (exit status {returncode})"


def _last_line(stderr: bytes | None) -> str:
    """``": <the last line the child wrote on stderr>"`` (the exception, after a traceback)."""
    lines = (stderr or b"").decode("utf-8", "replace").strip().splitlines()
    if not lines:
        return ""
    last = lines[-1].strip()
    return ": " + (last if len(last) <= 300 else last[:297] + "...")


def _log_stderr(stderr: bytes | None) -> None:
    if stderr:
        log.warning("config checker stderr:\n%s", stderr.decode("utf-8", "replace").rstrip())
