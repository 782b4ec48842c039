"""OTLP/HTTP span export, configured by the standard ``OTEL_*`` environment variables.

Export is on when tracing is enabled in the config and ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
(used as given) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` appended) names a collector;
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn it off. Also read:
``OTEL_EXPORTER_OTLP[_TRACES]_HEADERS`` (``k=v,k2=v2``), ``..._TIMEOUT`` (ms),
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES`` and the batch processor's
``OTEL_BSP_SCHEDULE_DELAY`` (ms), ``OTEL_BSP_MAX_QUEUE_SIZE`` and
``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``. Spans are sent with the OTLP JSON encoding (``http/json``),
which every OpenTelemetry Collector's OTLP/HTTP receiver accepts.

The event loop only appends a span to a bounded queue (dropped and counted when full); a daemon
thread batches and posts them, so a slow or absent collector never slows a request.
"""

from __future__ import annotations

import collections
import http.client
import json
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sidegate.observe.tracing import Span

log = logging.getLogger("sidegate.tracing")

_SPAN_KIND_SERVER = 2
_SPAN_KINDS = {"server": _SPAN_KIND_SERVER, "client": 3}  # OTLP SpanKind values
_STATUS_ERROR = 2


@dataclass(frozen=True)
class ExportSettings:
    """Where and how spans are exported, as the ``OTEL_*`` variables say (their defaults, the
    OpenTelemetry specification's, are written once: in :func:`settings_from_env`)."""

    endpoint: str
    headers: Mapping[str, str]
    timeout: float  # seconds
    resource: Mapping[str, str]
    schedule_delay: float  # seconds
    max_queue: int
    max_batch: int


def settings_from_env(environ: Mapping[str, str] | None = None) -> tuple[ExportSettings | None, list[str]]:
    """The export settings, or None when nothing asks for export; and problems to log."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None, problems
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if "otlp" not in exporters:
        if exporters - {"none", ""}:
            problems.append(f"OTEL_TRACES_EXPORTER={env['OTEL_TRACES_EXPORTER']!r}: only otlp is supported")
        return None, problems
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if not base:
            return None, problems
        endpoint = base.rstrip("/") + "/v1/traces"
    if urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
        problems.append(
            f"OTLP endpoint {endpoint!r} is not an http:// or https:// URL; spans are not exported"
        )
        return None, problems
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    if protocol.strip() == "grpc":
        problems.append("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported; spans are sent as http/json")
    headers = _pairs(
        env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS", "")
    )
    resource = _pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    resource["service.name"] = env.get("OTEL_SERVICE_NAME") or resource.get("service.name") or "sidegate"
    timeout = env.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or env.get("OTEL_EXPORTER_OTLP_TIMEOUT", "")
    return (
        ExportSettings(
            endpoint=endpoint,
            headers=headers,
            timeout=_millis(timeout, 10_000, "OTEL_EXPORTER_OTLP_TIMEOUT", problems),
            resource=resource,
            schedule_delay=_millis(
                env.get("OTEL_BSP_SCHEDULE_DELAY", ""), 5000, "OTEL_BSP_SCHEDULE_DELAY", problems
            ),
            max_queue=_count(
                env.get("OTEL_BSP_MAX_QUEUE_SIZE", ""), 2048, "OTEL_BSP_MAX_QUEUE_SIZE", problems
            ),
            max_batch=_count(
                env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", ""), 512, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", problems
            ),
        ),
        problems,
    )


def _pairs(text: str) -> dict[str, str]:
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return out


def _millis(text: str, default: int, name: str, problems: list[str]) -> float:
    return _count(text, default, name, problems) / 1000.0


def _count(text: str, default: int, name: str, problems: list[str]) -> int:
    if not text.strip():
        return default
    try:
        value = int(text)
        if value <= 0:
            raise ValueError
    except ValueError:
        problems.append(f"{name}={text!r} is not a positive whole number; using {default}")
        return default
    return value


class OtlpExporter:
    """Batches spans on a daemon thread and posts them to the collector."""

    def __init__(self, settings: ExportSettings) -> None:
        self.settings = settings
        self.queue: collections.deque[Span] = collections.deque()
        self.exported = 0
        self.dropped = 0  # the queue was full
        self.failed = 0  # spans in batches the collector did not take
        self._url = urllib.parse.urlsplit(settings.endpoint)
        self._conn: http.client.HTTPConnection | None = None
        self._last_error_log = 0.0
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="sidegate-otlp", daemon=True)
        self._thread.start()

    def submit(self, span: Span) -> None:
        queue = self.queue
        if len(queue) >= self.settings.max_queue:
            self.dropped += 1
            return
        queue.append(span)
        if len(queue) == self.settings.max_batch:
            self._wake.set()

    def stats(self) -> dict[str, Any]:
        return {
            "endpoint": self.settings.endpoint,
            "exported": self.exported,
            "dropped": self.dropped,
            "failed": self.failed,
        }

    def close(self) -> None:
        """Send what is queued (within the export timeout) and stop."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=self.settings.timeout + 1.0)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.settings.schedule_delay)
            self._wake.clear()
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(len(self.queue), self.settings.max_batch))]
                self._post(batch)
            if self._stop:
                return

    def _post(self, spans: list[Span]) -> None:
        body = json.dumps(encode(spans, self.settings.resource), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **self.settings.headers}
        url = self._url
        path = url.path or "/v1/traces"
        try:
            conn = self._conn or self._connect()
            conn.request("POST", path + ("?" + url.query if url.query else ""), body, headers)
            response = conn.getresponse()
            response.read()
            if not 200 <= response.status < 300:
                raise OSError(f"the collector answered {response.status} {response.reason}")
        except (OSError, http.client.HTTPException) as exc:
            self._conn = None
            self.failed += len(spans)
            now = time.monotonic()
            if now - self._last_error_log > 60.0:  # at most once a minute
                self._last_error_log = now
                log.warning(
                    "OTLP export to %s failed: %s (%d spans lost)", self.settings.endpoint, exc, len(spans)
                )
            return
        self.exported += len(spans)

    def _connect(self) -> http.client.HTTPConnection:
        url, timeout = self._url, self.settings.timeout
        host, port = url.hostname or "localhost", url.port
        if url.scheme == "https":
            self._conn = http.client.HTTPSConnection(host, port, timeout=timeout)
        else:
            self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
        return self._conn


def encode(spans: list[Span], resource: Mapping[str, str]) -> dict[str, Any]:
    """The OTLP JSON ``ExportTraceServiceRequest`` of ``spans``."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attribute(k, v) for k, v in resource.items()]},
                "scopeSpans": [
                    {
                        "scope": {"name": "sidegate"},
                        "spans": [_span(span) for span in spans],
                    }
                ],
            }
        ]
    }


def _span(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": span.name,
        "kind": _SPAN_KINDS.get(span.kind, _SPAN_KIND_SERVER),
        "startTimeUnixNano": str(int(span.start * 1e9)),
        "endTimeUnixNano": str(int(span.end * 1e9)),
        "attributes": [_attribute(k, v) for k, v in span.attributes.items()],
    }
    if span.parent_span_id:
        out["parentSpanId"] = span.parent_span_id
    if span.error:
        out["status"] = {"code": _STATUS_ERROR}
    return out


def _attribute(key: str, value: str | int | float) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}
