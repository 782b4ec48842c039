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

A checker serves one check and exits, so nothing a config did to it (memory, a filter module's
state) outlives that check. Starting Python and importing pydantic is most of a check's time
(0.2 s on an idle machine, close to a second on a busy one), so it is taken off the reload's
path: a *spare* checker is started after each check, does its imports, and waits on its stdin
for the next request (``--request-stdin``: the path or the text, this process's environment for
``${ENV}`` and its working directory, as JSON). A spare that died while waiting, or that was
started with another :data:`CHECKER`, is replaced by a fresh one; the spare is killed when this
process exits, and exits by itself if this process dies (its stdin closes). Only the process
that validates keeps one: the supervisor with ``workers: N``, never its workers.

Both functions block until the checker answers: from the event loop, call them
with ``await loop.run_in_executor(None, validate_file, path)``.

This module imports neither pydantic nor YAML (a test checks it in a fresh interpreter).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
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
    data = json.dumps(request).encode("utf-8")
    try:
        process, spare = _SPARES.take()
        stdout, stderr = _ask(process, data, source, timeout)
        if spare and process.returncode != 0 and not stdout:
            # The spare died while it waited (killed, out of memory): not this config's doing.
            process = _start(_SPARES.warm)
            stdout, stderr = _ask(process, data, source, timeout)
    except OSError as exc:
        msg = f"cannot start the config checker ({CHECKER[0]!r}): {exc.strerror or exc}"
        raise _failure(source, msg) from None
    try:
        if process.returncode != 0:
            _log_stderr(stderr)
            ending = _ending(process.returncode)
            raise _failure(source, f"the config checker {ending}{_last_line(stderr)}")
        checked = _parse(stdout, stderr, source)
    except ConfigError:
        _SPARES.refill()
        raise
    _SPARES.refill(_filter_names(checked.config))
    return checked


def _ask(process: subprocess.Popen[bytes], data: bytes, source: str, timeout: float) -> tuple[bytes, bytes]:
    try:
        return process.communicate(data, timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        _SPARES.refill()
        _log_stderr(stderr)
        raise _failure(source, f"the config checker did not answer within {timeout:g}s") from None


def _filter_names(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The filters a config uses (a spare imports them ahead of the next check)."""
    routes = config.get("routes")
    names = (
        {name for route in routes if isinstance(route, dict) for name in route.get("filters") or ()}
        if isinstance(routes, list)
        else set()
    )
    return tuple(sorted(str(name) for name in names))


class _Spares:
    """The one checker process kept started and waiting for the next check (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: subprocess.Popen[bytes] | None = None
        self._command: tuple[str, ...] = ()
        self._warm: tuple[str, ...] = ()  # filters of the last valid config: the spare imports them
        self._exit_hook = False

    @property
    def warm(self) -> tuple[str, ...]:
        return self._warm

    def take(self) -> tuple[subprocess.Popen[bytes], bool]:
        """The spare if it is alive and runs the current :data:`CHECKER`, else a new checker;
        and whether it is the spare."""
        with self._lock:
            spare, command, self._spare = self._spare, self._command, None
        if spare is not None:
            if spare.poll() is None and command == CHECKER:
                return spare, True
            _stop(spare)
        return _start(self._warm), False

    def refill(self, warm: tuple[str, ...] | None = None) -> None:
        """Start the next spare, unless one is there (its imports then run while nobody waits);
        ``warm``: the filters of the config just checked, which the next one likely uses too."""
        with self._lock:
            if warm is not None:
                self._warm = warm
            if self._spare is not None:
                return
            try:
                self._spare, self._command = _start(self._warm), CHECKER
            except OSError:
                return  # the next check starts its own, and says why it cannot
            if not self._exit_hook:
                atexit.register(self.close)
                self._exit_hook = True

    def close(self) -> None:
        """Stop the spare (at exit)."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            _stop(spare)


def _start(warm: tuple[str, ...]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CHECKER, "--request-stdin", *([f"--warm={','.join(warm)}"] if warm else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        process.kill()
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        process.communicate(timeout=5)


_SPARES = _Spares()


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
