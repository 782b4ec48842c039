"""Operational log records (start, reload, errors) on standard error, as text or as JSON lines.

``sidegate run --log-format json`` is for the log collectors of a Kubernetes cluster: every
record is one JSON object on one line::

    {"time": "2026-12-07T15:40:00.123Z", "level": "info", "logger": "sidegate",
     "message": "config reloaded: version 2", "event": "reload", "result": "ok", "version": 2}

``time`` is RFC 3339 in UTC, ``level`` one of debug, info, warning, error, critical; the fields a
call site passes with ``extra=`` (the reload's result, the list of config issues...) are added as
they are, and a traceback is one string, ``exception``. The text format, the default, is
``TIME LEVEL LOGGER: MESSAGE``. Both go through the root logger, so every ``logging`` call of the
runtime, the supervisor and its workers (and asyncio's own reports) comes out in the one format.

The access log is separate (:mod:`sidegate.observe.access_log`, standard output, always JSON).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

FORMATS = ("text", "json")

# Attributes every LogRecord has: whatever else a record carries came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_settings: tuple[int, str] = (logging.INFO, "text")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``fields`` are added to every one (e.g. ``{"worker": 1}``)."""

    def __init__(self, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "time": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self.fields,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: int | str, log_format: str, *, worker: int | None = None) -> None:
    """Send every log record to standard error in ``log_format`` ("text" or "json").

    ``level`` is a :mod:`logging` level or its name (any case); ``worker``: the index of a
    worker process, shown in each record.
    """
    global _settings
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        level = level if isinstance(level, int) else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter({} if worker is None else {"worker": worker}))
    else:
        who = "" if worker is None else f"worker-{worker} "
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # Python's warnings are records too
    if log_format == "json":  # and so is a crash: a collector cannot read a bare traceback
        sys.excepthook = _log_crash
    _settings = (level, log_format)


def _log_crash(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("sidegate").critical("crashed: %s", error, exc_info=(kind, error, trace))


def settings() -> tuple[int, str]:
    """The level and format last configured (a supervisor gives them to its workers)."""
    return _settings
