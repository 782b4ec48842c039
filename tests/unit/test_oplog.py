"""Operational log records as JSON lines (``--log-format json``) and as text."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Iterator

import pytest

from sidegate.observe import oplog


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, hook = list(root.handlers), root.level, sys.excepthook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook = hook
    logging.captureWarnings(False)


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_a_record_is_one_json_object_with_its_fields(capsys: pytest.CaptureFixture[str]) -> None:
    oplog.configure("info", "json", worker=3)
    log = logging.getLogger("sidegate.test")
    log.info("config reloaded: version %d", 2, extra={"event": "reload", "issues": [{"line": 4}]})
    log.debug("not at info")
    try:
        raise RuntimeError("line one\nline two")
    except RuntimeError:
        log.exception("failed")
    first, second = (json.loads(line) for line in lines(capsys))
    assert first["message"] == "config reloaded: version 2"
    assert (first["level"], first["logger"], first["worker"]) == ("info", "sidegate.test", 3)
    assert (first["event"], first["issues"]) == ("reload", [{"line": 4}])
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert second["level"] == "error"
    assert "RuntimeError: line one\nline two" in second["exception"]


def test_python_warnings_and_crashes_are_records_too(capsys: pytest.CaptureFixture[str]) -> None:
    oplog.configure(logging.WARNING, "json")
    warnings.warn("old setting", DeprecationWarning, stacklevel=1)
    try:
        raise ValueError("boom")
    except ValueError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    warned, crashed = (json.loads(line) for line in lines(capsys))
    assert warned["logger"] == "py.warnings" and "old setting" in warned["message"]
    assert (crashed["level"], crashed["message"]) == ("critical", "crashed: boom")
    assert "ValueError: boom" in crashed["exception"]


def test_text_is_time_level_logger_message(capsys: pytest.CaptureFixture[str]) -> None:
    oplog.configure("debug", "text", worker=1)
    logging.getLogger("sidegate").debug("hello %s", "there", extra={"event": "x"})
    (line,) = lines(capsys)
    assert line.endswith(" DEBUG worker-1 sidegate: hello there"), line
    assert oplog.settings() == (logging.DEBUG, "text")
