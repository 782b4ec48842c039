"""The pieces the access line is made of: timestamps, JSON-quoted text, and each route's memo of
its last line.

Below the plan and the record on purpose: :class:`LineMemo` lives on a
:class:`~sidegate.request.plan.RoutePlan`, so it takes the finished request's facts as plain
values rather than the record (which refers to the plan) and no import runs in a circle.
"""

from __future__ import annotations

import time
from json.encoder import encode_basestring_ascii as quote_ascii
from typing import Any, Final

_MILLIS: Final = tuple(f".{n:03d}Z" for n in range(1000))
# Values that repeat (names, flags, addresses) -> their JSON; bounded, then not grown.
_SEEN_TEXT: Final[dict[str, str]] = {}
_SEEN_MAX: Final = 512


class Stamps:
    """ISO 8601 UTC timestamps with milliseconds: one made per millisecond (requests under load
    share it), its seconds part once per second. (Instance attributes: a compiled module's
    globals are dict entries, an object's slots are not.)"""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""
        self.milli = -1
        self.stamp = ""

    def at(self, wall: float) -> str:
        milli = int(wall * 1000)
        if milli == self.milli:
            return self.stamp
        second = milli // 1000
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self.milli = milli
        self.stamp = stamp = self.prefix + _MILLIS[milli - second * 1000]
        return stamp


STAMPS: Final = Stamps()


def wire_text(raw: bytes) -> str:
    """Bytes from the wire as a JSON string, escaped to ASCII by the json module's C encoder (one
    call); undecodable bytes replaced."""
    return quote_ascii(raw.decode("utf-8", "replace"))


def name_text(text: str) -> str:
    """A name (route, consumer, tenant, flag, address) as a JSON string, remembered."""
    quoted = _SEEN_TEXT.get(text)
    return quoted if quoted is not None else _remember(_SEEN_TEXT, text, quote_ascii(text))


def _remember(table: dict[Any, str], key: object, quoted: str) -> str:
    if len(table) < _SEEN_MAX:  # bounded: past it, values are quoted each time
        table[key] = quoted
    return quoted


class LineMemo:
    """A route's last access line after its time, ids and durations, and what that text was made
    of. A route called the same way again (same client, method, host, path, status, sizes,
    endpoint, consumer...: a polling client, a health check, a busy endpoint) reuses the text.
    Comparing the fields costs less than hashing the request's fresh bytes to look a text up."""

    def __init__(self, route: str) -> None:
        self.route = quote_ascii(route) if route else "null"
        self.client = ""
        self.peer = ""
        self.method = b""
        self.host = b""
        self.path = b""
        self.version = b""
        self.status = -1
        self.flag = ""
        self.bytes_in = -1
        self.bytes_out = -1
        self.endpoint = ""
        self.consumer = ""
        self.tenant = ""
        self.cache = ""
        self.text = ""

    def text_for(
        self,
        *,
        client: str,
        peer: str,
        method: bytes,
        host: bytes,
        path: bytes,
        version: bytes,
        status: int,
        bytes_in: int,
        bytes_out: int,
        flag: str,
        endpoint: str,
        consumer: str,
        tenant: str,
        cache: str,
    ) -> str:
        """The line's text after its time, ids and durations: the memo's when every fact is the
        same as last time, else made anew and remembered."""
        if (
            self.status == status
            and self.bytes_out == bytes_out
            and self.bytes_in == bytes_in
            and self.path == path
            and self.host == host
            and self.method == method
            and self.client == client
            and self.peer == peer
            and self.version == version
            and self.flag == flag
            and self.endpoint == endpoint
            and self.consumer == consumer
            and self.tenant == tenant
            and self.cache == cache
        ):
            return self.text
        self.client, self.peer, self.method, self.host = client, peer, method, host
        self.path, self.version, self.status = path, version, status
        self.bytes_in, self.bytes_out, self.flag = bytes_in, bytes_out, flag
        self.endpoint, self.consumer, self.tenant, self.cache = endpoint, consumer, tenant, cache
        self.text = text = (
            f'"client":{name_text(client)},"peer":{name_text(peer)},'
            f'"method":{wire_text(method)},"host":{wire_text(host)},'
            f'"path":{wire_text(path)},"protocol":{wire_text(b"HTTP/" + version)},"route":{self.route},'
            f'"status":{status},"flags":{name_text(flag)},"bytes_received":{bytes_in},'
            f'"bytes_sent":{bytes_out},"upstream":{name_text(endpoint)},"consumer":{name_text(consumer)},'
            f'"tenant":{name_text(tenant)},"cache":{name_text(cache)}}}\n'
        )
        return text
