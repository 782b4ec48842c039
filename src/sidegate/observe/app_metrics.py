"""The app's own ``/metrics``, scraped on loopback and turned into families for Sidegate's scrape.

Theory of operation
-------------------
With ``observability.app_metrics.url`` set, each scrape of admin ``/metrics`` also fetches the
app's metrics (:func:`scrape_app`), so one scrape sees app and gateway. The fetch is one plain
HTTP/1.1 GET on a new loopback connection (``Connection: close``), bounded by the configured
timeout and :data:`MAX_BYTES`; it never raises: a failure is an :class:`AppScrape` with
``success`` False and Sidegate's own metrics are served as usual.

The app may answer in either exposition format, whatever was asked; :func:`translate` parses the
text into families (metadata lines and samples, grouped the way Prometheus groups them) and writes
each family in the format of the scrape being answered:

* Prometheus text to OpenMetrics: a counter family loses its ``_total`` suffix and its samples
  gain it; ``untyped`` becomes ``unknown``; help texts escape double quotes; timestamps turn from
  milliseconds to seconds.
* OpenMetrics to Prometheus text: a counter family is named with ``_total``; ``info`` and
  ``stateset`` become gauges, ``unknown`` becomes ``untyped``, a ``gaugehistogram`` goes out
  without a type; ``_created`` samples, exemplars and ``# UNIT`` lines are dropped.

Either way the app's ``# EOF`` is dropped (the renderer writes the only one) and a family the app
writes twice is written once. Which families clash with Sidegate's is decided by the renderer
(:mod:`sidegate.observe.prometheus`) from each family's :attr:`AppFamily.names`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sidegate.observe.exposition import escape_help

log = logging.getLogger("sidegate.app_metrics")

#: The largest app response read; a bigger one fails the app scrape.
MAX_BYTES = 4 * 1024 * 1024
_ACCEPT = {
    True: "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    False: "text/plain;version=0.0.4,application/openmetrics-text;version=1.0.0;q=0.5",
}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "info": ("_info",),
}
# Type names of the other format: OpenMetrics -> Prometheus text, and back.
_TO_TEXT = {"unknown": "untyped", "info": "gauge", "stateset": "gauge", "gaugehistogram": ""}
_TO_OPENMETRICS = {"untyped": "unknown"}
_FAILING: dict[str, bool] = {}  # url -> the last scrape failed (to log a failure once)


class AppMetricsError(Exception):
    """The app's metrics could not be fetched (bad status, too big, cut short)."""


@dataclass(frozen=True, slots=True)
class AppFamily:
    """One metric family of the app, written in the format being served."""

    name: str
    names: frozenset[str]  # the family's name(s) and every sample name: what must not clash
    lines: tuple[str, ...]  # metadata and sample lines, without line ends


@dataclass(frozen=True, slots=True)
class AppScrape:
    """What one scrape of the app gave: success, its duration in seconds and the families."""

    success: bool
    seconds: float
    families: tuple[AppFamily, ...] = ()
    error: str = ""


async def scrape_app(url: str, timeout: float, *, openmetrics: bool) -> AppScrape:
    """Fetch and translate the app's metrics; never raises (a failure has ``success`` False)."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            content_type, body = await fetch(url, openmetrics)
        source_om = content_type.split(";")[0].strip().lower() == "application/openmetrics-text"
        text = body.decode("utf-8")
        if len(text) > 64 * 1024:  # parsing megabytes takes a while: off the event loop
            families = await asyncio.to_thread(translate, text, source_om, openmetrics)
        else:
            families = translate(text, source_om, openmetrics)
    except Exception as exc:  # a broken app must never break the gateway's scrape
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        # Said once when scrapes start failing, not at every scrape (every 15 s or so).
        level = logging.DEBUG if _FAILING.get(url) else logging.WARNING
        log.log(level, "app metrics from %s not merged: %s", url, error)
        _FAILING[url] = True
        return AppScrape(False, time.monotonic() - started, error=error)
    if _FAILING.pop(url, False):
        log.info("app metrics from %s merged again", url)
    return AppScrape(True, time.monotonic() - started, tuple(families))


async def fetch(url: str, openmetrics: bool) -> tuple[str, bytes]:
    """GET ``url`` (``http://host:port/path``): the response's Content-Type and body.

    Raises :class:`AppMetricsError` unless the answer is a complete 200 of at most
    :data:`MAX_BYTES`, and ``OSError`` when the app cannot be reached.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    reader, writer = await asyncio.open_connection(host, parts.port or 80, limit=64 * 1024)
    try:
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: {_ACCEPT[openmetrics]}\r\n"
            "Accept-Encoding: identity\r\nUser-Agent: sidegate\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("latin-1"))
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *field_lines = head.decode("latin-1").split("\r\n")
        status = status_line.split(" ", 2)
        if len(status) < 2 or status[1] != "200":
            raise AppMetricsError(f"the app answered {status_line!r}")
        fields: dict[str, str] = {}
        for line in field_lines:
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        if "chunked" in fields.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in fields:
            length = int(fields["content-length"])
            if length > MAX_BYTES:
                raise AppMetricsError(f"the app's metrics are {length} bytes, more than {MAX_BYTES}")
            body = await reader.readexactly(length)
        else:  # delimited by the close
            body = await reader.read(MAX_BYTES + 1)
            while len(body) <= MAX_BYTES and (more := await reader.read(MAX_BYTES + 1 - len(body))):
                body += more
            if len(body) > MAX_BYTES:
                raise AppMetricsError(f"the app's metrics are more than {MAX_BYTES} bytes")
        return fields.get("content-type", "text/plain"), body
    finally:
        writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            return b"".join(chunks)  # trailers (if any) are not read: the connection closes
        total += size
        if total > MAX_BYTES:
            raise AppMetricsError(f"the app's metrics are more than {MAX_BYTES} bytes")
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise AppMetricsError("malformed chunked body")


# -- the text formats ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Family:
    name: str
    kind: str = ""  # "" until a TYPE line says (samples with no metadata are untyped)
    help: str | None = None
    unit: str = ""
    samples: list[tuple[str, str, str]] = field(default_factory=list)  # (name, labels, rest)

    def owns(self, sample: str) -> bool:
        if sample == self.name:
            return True
        base = self.name.removesuffix("_total") if self.kind == "counter" else self.name
        return sample.startswith(base) and sample[len(base) :] in _SUFFIXES.get(self.kind, ())


def translate(text: str, source_openmetrics: bool, openmetrics: bool) -> list[AppFamily]:
    """The families of an exposition in one format (``source_openmetrics``), written in the other
    or the same (``openmetrics``)."""
    families = _parse(text)
    return [_write(f, source_openmetrics, openmetrics) for f in families]


def _parse(text: str) -> list[_Family]:
    by_name: dict[str, _Family] = {}
    current: _Family | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            words = line.split(None, 3)
            if len(words) >= 2 and words[1] == "EOF":
                break
            if len(words) < 3 or words[1] not in ("HELP", "TYPE", "UNIT"):
                continue  # a plain comment
            current = by_name.setdefault(words[2], _Family(words[2]))
            value = words[3] if len(words) > 3 else ""
            if words[1] == "TYPE":
                current.kind = value.strip()
            elif words[1] == "HELP":
                current.help = value
            else:
                current.unit = value.strip()
            continue
        name, labels, rest = _split_sample(line)
        if current is None or not current.owns(name):
            current = by_name.setdefault(name, _Family(name))
        current.samples.append((name, labels, rest))
    return list(by_name.values())


def _split_sample(line: str) -> tuple[str, str, str]:
    """``name{labels} value [timestamp]`` -> (name, "{labels}" or "", "value [timestamp]...")."""
    line = line.strip()
    end = len(line)
    for i, ch in enumerate(line):
        if ch in "{ \t":
            end = i
            break
    name = line[:end]
    if end < len(line) and line[end] == "{":
        quoted = escaped = False
        for i in range(end + 1, len(line)):
            ch = line[i]
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = not quoted
            elif ch == "}" and not quoted:
                return name, line[end : i + 1], line[i + 1 :].strip()
        raise ValueError(f"unterminated label set in {line[:200]!r}")
    return name, "", line[end:].strip()


def _write(family: _Family, source_om: bool, openmetrics: bool) -> AppFamily:
    kind, name = family.kind or ("unknown" if source_om else "untyped"), family.name
    samples = family.samples
    if source_om != openmetrics:
        if openmetrics:
            kind = _TO_OPENMETRICS.get(kind, kind)
            if kind == "counter":
                name = name.removesuffix("_total")
                samples = [(n if n.endswith(("_total", "_created")) else n + "_total", la, r)
                           for n, la, r in samples]  # fmt: skip
        else:
            if kind in ("counter", "histogram", "summary"):  # no _created series in the text format
                created = name.removesuffix("_total") + "_created"
                samples = [s for s in samples if s[0] != created]
            if kind in ("counter", "info"):
                name = name.removesuffix("_total").removesuffix("_info") + (
                    "_total" if kind == "counter" else "_info"
                )
            kind = _TO_TEXT.get(kind, kind)
        samples = [(n, _labels_for(la, openmetrics), _rest_for(r, source_om)) for n, la, r in samples]
    lines: list[str] = []
    if kind:
        if family.help is not None:
            help_text = escape_help(_unescape_help(family.help), openmetrics=openmetrics)
            lines.append(f"# HELP {name} {help_text}".rstrip())
        lines.append(f"# TYPE {name} {kind}")
        if openmetrics and family.unit and name.endswith("_" + family.unit):
            lines.append(f"# UNIT {name} {family.unit}")
    lines.extend(f"{n}{la} {r}" for n, la, r in samples)
    names = frozenset({name, family.name, *(n for n, _, _ in samples)})
    return AppFamily(name, names, tuple(lines))


def _labels_for(labels: str, openmetrics: bool) -> str:
    if openmetrics and labels.endswith(",}"):  # a trailing comma: fine in Prometheus text only
        return labels[:-2] + "}"
    return labels


def _rest_for(rest: str, source_om: bool) -> str:
    """Value and timestamp of a sample in the other format (an exemplar is dropped)."""
    words = rest.split(" # ", maxsplit=1)[0].split()
    if not words:
        raise ValueError("a sample without a value")
    value = {"nan": "NaN", "inf": "+Inf", "+inf": "+Inf", "-inf": "-Inf"}.get(words[0].lower(), words[0])
    if len(words) < 2:
        return value
    stamp = float(words[1])
    return f"{value} {round(stamp * 1000) if source_om else stamp / 1000!r}"


def _unescape_help(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)
