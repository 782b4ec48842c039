"""Key formats of the shared store: URLs, primary and secondary keys, index keys.

Every key is plain bytes so that an app in another language can build the same key (see
docs/cache-layout.md, which is the contract; change both together):

- primary key   ``partition + 0x1F + url`` with url ``scheme://host/path?query`` (see normalize_url)
- entry key     ``primary + 0x00 + secondary``; secondary encodes the request's values of the
                variant's Vary names (empty when the response has no Vary), list-valued
                Accept fields normalised
- LRU key       ``partition + 0x1F + u64be(access time in ms)`` (dupsort, values are entry keys)
- tag key       ``partition + 0x1F + tag`` (dupsort, values are entry keys)

Partition names are printable (no control characters): a key's partition is then everything
before its first 0x1F, and all keys of one partition sort together.
"""

from __future__ import annotations

import re
import struct
from typing import Final
from urllib.parse import urlsplit

from sidegate.http.messages import Headers
from sidegate.http.syntax import normalize_path, parse_authority

MAX_KEY: Final = 511  # LMDB's compiled-in limit (MDB_MAXKEYSIZE), for keys and dupsort values
SEP: Final = b"\x1f"  # partition | rest
VARIANT_SEP: Final = b"\x00"  # primary | secondary (a URL never holds a NUL)
FIELD_SEP: Final = b"\x1e"  # between the Vary fields of a secondary key
_U64BE: Final = struct.Struct(">Q")
_UNSAFE: Final = re.compile(rb"[\x00-\x20\x7f]")
# Request fields whose value is a comma list of case-insensitive elements (RFC 9110 12.5): their
# secondary key is normalised (list_value). Other fields (Cookie, Authorization, X-...) are
# compared as sent, since their order or case may matter.
LIST_FIELDS: Final = frozenset((b"accept", b"accept-charset", b"accept-encoding", b"accept-language"))
_LISTS: Final[dict[bytes, bytes]] = {}  # value as sent -> list_value (the hit path asks again and again)
_LISTS_KEPT: Final = 1024
_LIST_KEPT_SIZE: Final = 256  # bytes: longer values are normalised anew each time


def partition_prefix(partition: str) -> bytes:
    """``partition`` UTF-8 encoded plus the 0x1F separator; ValueError for a control character."""
    if not partition.isprintable():
        raise ValueError(f"cache partition {partition!r}: control characters are not allowed")
    return partition.encode() + SEP


def primary_key(partition: str, url: bytes) -> bytes:
    """The key of a URL in the ``variants`` DB (all its variants share it)."""
    return partition_prefix(partition) + url


def secondary_key(vary: tuple[bytes, ...], request_headers: Headers) -> bytes:
    """The request's values of the Vary names, in the variant's order.

    One field per name, joined by 0x1E: ``name=value`` where value is every field line of that
    name (case-insensitive) with surrounding whitespace stripped, joined with ``", "``, then
    normalised by :func:`list_value` for the fields of ``LIST_FIELDS``; a name the request lacks
    is the bare ``name`` (RFC 9111 4.1: absent only matches absent, so it must differ from an
    empty value). Empty when ``vary`` is empty.
    """
    if not vary:
        return b""
    fields: list[bytes] = []
    for name in vary:
        values = [value.strip() for field, value in request_headers if field.lower() == name]
        if not values:
            fields.append(name)
            continue
        value = values[0] if len(values) == 1 else b", ".join(values)
        if name in LIST_FIELDS:
            value = _LISTS.get(value) or list_value(value)
        fields.append(name + b"=" + value)
    return FIELD_SEP.join(fields)


def list_value(value: bytes) -> bytes:
    """A list-valued request field as one spelling for every order, case and spacing (RFC 9111
    4.1 lets a cache normalise what it compares; ``en, fr`` and ``fr,EN`` select one variant).

    Lower-cased (ASCII); elements split on commas, spaces and tabs stripped around each and
    around each ``;`` (a parameter such as ``q=0.5`` stays with its element), empty and repeated
    elements dropped, sorted bytewise, joined by ``", "``. A value holding a quote is kept as
    sent: a quoted string may hold a comma. Values up to 256 bytes are remembered for the next
    request (at most 1024 of them).
    """
    if value.find(b'"') >= 0:
        return value
    low = value.lower()
    elements = {_element(part) for part in low.split(b",")} if low.find(b",") >= 0 else {_element(low)}
    elements.discard(b"")
    normal = b", ".join(sorted(elements))
    if len(value) <= _LIST_KEPT_SIZE:  # bounded in count and size: a client picks these values
        if len(_LISTS) >= _LISTS_KEPT:
            _LISTS.clear()
        _LISTS[value] = normal
    return normal


def _element(part: bytes) -> bytes:
    part = part.strip(b" \t")
    if part.find(b";") < 0:
        return part
    return b";".join([param.strip(b" \t") for param in part.split(b";")])


def entry_key(partition: str, url: bytes, vary: tuple[bytes, ...], request_headers: Headers) -> bytes:
    """The key of one variant in the ``entries`` DB."""
    return primary_key(partition, url) + VARIANT_SEP + secondary_key(vary, request_headers)


def encode_vary(vary: tuple[bytes, ...]) -> bytes:
    """The ``variants`` DB value: lower-case Vary names joined by commas (empty: no Vary)."""
    return b",".join(name.lower() for name in vary)


def decode_vary(value: bytes) -> tuple[bytes, ...]:
    return tuple(value.split(b",")) if value else ()


def key_partition(key: bytes) -> bytes:
    """The ``partition + 0x1F`` prefix of an entry (or primary, LRU, tag) key."""
    return key[: key.index(SEP) + 1]


def lru_key(prefix: bytes, ms: int) -> bytes:
    """The LRU index key for an entry of partition ``prefix`` last read at ``ms``."""
    return prefix + _U64BE.pack(ms)


def lru_time(key: bytes) -> int:
    """The access time (ms) in an LRU index key."""
    return int(_U64BE.unpack_from(key, len(key) - 8)[0])


def tag_key(prefix: bytes, tag: str) -> bytes:
    return prefix + tag.encode()


def normalize_url(url: str | bytes) -> bytes:
    """The cache's form of an absolute URL: ``scheme://host[:port]/path?query`` as bytes.

    Scheme and host lower-cased, the port kept as written (Sidegate keys on the Host header the
    client sent, port included); user info and fragment dropped; an empty path becomes ``/`` and
    dot-segments are removed, as the proxy does before routing. The query is kept byte for byte
    (an empty one, a lone ``?``, is dropped). ValueError when the URL is not an absolute http(s)
    URL or holds a space or control character.
    """
    raw = url.encode("latin-1") if isinstance(url, str) else url
    if _UNSAFE.search(raw) is not None:
        raise ValueError(f"URL with a space or control character: {url!r}")
    parts = urlsplit(raw)
    authority = parts.netloc.rpartition(b"@")[2]
    if parts.scheme not in (b"http", b"https") or parse_authority(authority) is None:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    path = normalize_path(parts.path or b"/")
    query = b"?" + parts.query if parts.query else b""
    return parts.scheme + b"://" + authority.lower() + path + query
