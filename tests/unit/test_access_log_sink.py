"""The access log sink never makes the event loop wait, and never cuts or mixes lines."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from sidegate.observe.access_log import AccessLogWriter
from sidegate.observe.otlp import settings_from_env


def test_lines_are_appended_to_a_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text('{"earlier": true}\n')
    writer = AccessLogWriter(str(path), max_lines=100_000, interval=0.01)
    for n in range(5000):
        writer.write(json.dumps({"n": n, "pad": "x" * (n % 300)}).encode() + b"\n")
    writer.close()
    lines = path.read_text().splitlines()
    assert lines[0] == '{"earlier": true}'
    assert [json.loads(line)["n"] for line in lines[1:]] == list(range(5000))
    assert (writer.written, writer.dropped) == (5000, 0)


def test_a_stalled_sink_drops_lines_instead_of_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "stalled"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opened, never read: the pipe fills up
    writer = AccessLogWriter(str(fifo), max_lines=1000, interval=0.01)
    started = time.monotonic()
    for n in range(200_000):
        writer.write(f'{{"n": {n}, "pad": "{"x" * 200}"}}\n'.encode())
    assert time.monotonic() - started < 5.0  # the writing side never waited for the pipe
    assert writer.dropped > 100_000
    assert len(writer.lines) <= 1000  # memory stays bounded
    received = b""
    while len(received) < 32 * 1024:  # drain what the thread wrote: whole lines only
        try:
            chunk = os.read(reader, 65536)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        received += chunk
    complete = received[: received.rfind(b"\n")]
    assert all(json.loads(line)["pad"] == "x" * 200 for line in complete.split(b"\n"))
    os.close(reader)  # the thread's next write fails with EPIPE: counted as dropped, no crash
    writer.close()


def test_export_is_off_without_an_endpoint_and_configured_by_the_otel_variables() -> None:
    assert settings_from_env({})[0] is None
    assert (
        settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"})[0]
        is None
    )
    assert (
        settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"})[0]
        is None
    )
    settings, problems = settings_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc%20def,x-team=core",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
            "OTEL_BSP_SCHEDULE_DELAY": "soon",
        }
    )
    assert settings is not None
    assert settings.endpoint == "http://collector:4318/v1/traces"
    assert dict(settings.headers) == {"api-key": "abc def", "x-team": "core"}
    assert settings.timeout == 2.5 and settings.schedule_delay == 5.0
    assert dict(settings.resource) == {"deployment.environment": "prod", "service.name": "sidegate"}
    assert problems == ["OTEL_BSP_SCHEDULE_DELAY='soon' is not a positive whole number; using 5000"]
    traces_only, _ = settings_from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b/t"}
    )
    assert traces_only is not None and traces_only.endpoint == "https://b/t"
    bad, problems = settings_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})
    assert bad is None and "not an http:// or https:// URL" in problems[0]
