"""Validating a config in a short-lived child process, so that the serving process stays small.

Validation needs YAML, pydantic and the config models: about 14 MiB that a gateway process would
keep for its whole life after using them for a fraction of a second at each (re)load. So the
serving process never imports them. :func:`validate_file` and :func:`validate_text` run the
config checker, ``python -m sidegate.config.check`` (:mod:`sidegate.config.check`), with this
interpreter and the parent's environment (``${ENV}`` references are substituted by the child),
and return the :class:`Normalised` config it printed; :func:`sidegate.config.compile.compile_checked`
turns that into a snapshot. An invalid file is a :class:`~sidegate.errors.ConfigError` with the
checker's issues (dotted paths, lines), exactly as in-process validation reports them; a checker
that crashes, hangs past ``timeout`` or prints something else than its JSON answer is a
``ConfigError`` that says so.

Both functions block until the child exits (about half a second): from the event loop, call them
with ``await loop.run_in_executor(None, validate_file, path)``.

This module imports neither pydantic nor YAML (a test checks it in a fresh interpreter).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
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


def validate_file(
    path: str | os.PathLike[str], *, timeout: float = 15.0, environ: Mapping[str, str] | None = None
) -> Normalised:
    """Check the config file at ``path`` in a child process (blocking); raise ConfigError if invalid.

    ``environ`` (default: this process's environment) is the child's environment, which supplies
    the ``${NAME}`` substitutions.
    """
    source = os.fspath(path)
    return _run([*CHECKER, f"--source={source}"], source, None, timeout, environ)


def validate_text(
    text: str,
    source: str = "<string>",
    *,
    timeout: float = 15.0,
    environ: Mapping[str, str] | None = None,
) -> Normalised:
    """Like :func:`validate_file` for config text in memory (sent on the child's stdin)."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = f"the config text cannot be encoded as UTF-8: {exc.reason}"
        raise ConfigError([ConfigIssue("", msg)], source) from None
    return _run([*CHECKER, "--text-stdin", f"--source={source}"], source, data, timeout, environ)


def _run(
    command: Sequence[str],
    source: str,
    stdin: bytes | None,
    timeout: float,
    environ: Mapping[str, str] | None,
) -> Normalised:
    try:
        done = subprocess.run(
            command,
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=timeout,
            env=None if environ is None else dict(environ),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        _log_stderr(exc.stderr)
        raise _failure(source, f"the config checker did not answer within {timeout:g}s") from None
    except OSError as exc:
        msg = f"cannot start the config checker ({command[0]!r}): {exc.strerror or exc}"
        raise _failure(source, msg) from None
    if done.returncode != 0:
        _log_stderr(done.stderr)
        raise _failure(source, f"the config checker {_ending(done.returncode)}{_last_line(done.stderr)}")
    return _parse(done.stdout, done.stderr, source)


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
        return Normalised(config, source, {str(k): v for k, v in lines.items() if isinstance(v, int)})
    raw = answer.get("issues")
    issues = [_issue(item) for item in raw if isinstance(item, dict)] if isinstance(raw, list) else []
    raise ConfigError(issues or [ConfigIssue("", "the config checker rejected the config")], source)


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
