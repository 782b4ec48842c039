"""Small syntax helpers for HTTP fields: authorities, paths, request ids. Pure functions."""

from __future__ import annotations

import re
from typing import Final

# reg-name / IPv4 (RFC 3986 unreserved + sub-delims + pct-encoded), optional port.
_REG_NAME_PORT = re.compile(rb"([A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::([0-9]*))?")
_IPV6_PORT = re.compile(rb"\[([0-9A-Fa-f:.]+)\](?::([0-9]*))?")
_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,200}")
# Whitespace that ends a field line (after a byte that is not whitespace: a line of whitespace
# alone is obs-fold, refused as it is).
_TRAILING_OWS = re.compile(rb"(?<=[^ \t\r\n])[ \t]+\r\n")

PLAIN_FIELD: Final = -1  # FieldKinds: a field forwarded as it is
_SPELLINGS_MAX = 1024


class FieldKinds:
    """Header field names -> the kind a parser gives them (its own small ints, PLAIN_FIELD for the
    fields it forwards as they are). Names are case-insensitive; the names as sent are remembered
    too (bounded: past the bound, new spellings are lower-cased each time), so the fields a pod sees
    again and again cost one dict look-up each and no lower-casing. One table is shared by every
    connection that parses with it."""

    def __init__(
        self,
        special: dict[bytes, int],
        underscored: int | None = None,
        folded: frozenset[bytes] | None = None,
    ) -> None:
        self.special = special  # lower-case name -> kind
        self.spellings: dict[bytes, int] = {}  # name as sent -> kind
        # The kind of a name with "_" that is not special: every such name (``folded`` None), or
        # only those that, "_" read as "-", are one of ``folded``; None: such names are plain.
        self.underscored = underscored
        self.folded = folded

    def learn(self, name: bytes) -> int:
        """The kind of a ``name`` not in ``spellings`` (parsers look there first), remembered."""
        lower = name.lower()
        kind = self.special.get(lower, PLAIN_FIELD)
        underscored = self.underscored
        if kind == PLAIN_FIELD and underscored is not None and lower.find(b"_") >= 0:
            folded = self.folded
            if folded is None or lower.replace(b"_", b"-") in folded:
                kind = underscored
        if len(self.spellings) < _SPELLINGS_MAX:
            self.spellings[name] = kind
        return kind


def parse_authority(value: bytes) -> bytes | None:
    """Host name (lower-case, without port) from a Host value or authority; None if invalid."""
    if value.startswith(b"["):
        match = _IPV6_PORT.fullmatch(value)
        return b"[" + match.group(1).lower() + b"]" if match else None
    match = _REG_NAME_PORT.fullmatch(value)
    if match is None or not match.group(1):
        return None
    port = match.group(2)
    if port is not None and (not port or len(port) > 5 or int(port) > 65535):
        return None
    return match.group(1).lower()


def normalize_path(path: bytes) -> bytes:
    """Remove dot-segments (RFC 3986 section 5.2.4) so routing sees the path the app will see.

    The common path has no ``/.`` in it and is returned untouched.
    """
    if path.find(b"/.") < 0 and not path.endswith(b"/.."):
        return path
    output: list[bytes] = []
    segments = path.split(b"/")
    for segment in segments[1:]:
        if segment == b"..":
            if output:
                output.pop()
        elif segment != b".":
            output.append(segment)
    trailing = segments[-1] in (b".", b"..")
    result = b"/" + b"/".join(output)
    if trailing and not result.endswith(b"/"):
        result += b"/"
    return result


def valid_request_id(value: bytes) -> bool:
    """A client-sent X-Request-Id is kept if it is 1-200 visible ASCII characters."""
    return _REQUEST_ID.fullmatch(value) is not None


_PLAIN_CONNECTION = frozenset((b"close", b"keep-alive", b"upgrade"))
_COMMON_CONNECTION: dict[bytes, tuple[bytes, ...]] = {
    spelled: (spelled.lower(),)
    for word in (b"close", b"keep-alive", b"upgrade")
    for spelled in (word, word.capitalize(), word.title(), word.upper())
}


def connection_tokens(value: bytes) -> tuple[bytes, ...]:
    """The lower-case options of a ``Connection`` header value (the common ones without splitting)."""
    common = _COMMON_CONNECTION.get(value)
    if common is not None:
        return common
    return tuple(token for token in (part.strip().lower() for part in value.split(b",")) if token)


def upgrade_without_h2c(value: bytes) -> bytes:
    """An ``Upgrade`` value without its ``h2c`` protocol (a proxy never passes that upgrade on);
    empty when nothing else was asked for."""
    if value.lower().find(b"h2c") < 0:
        return value
    kept = [p.strip() for p in value.split(b",") if p.strip() and p.strip().lower() != b"h2c"]
    return b", ".join(kept)


def nominated_headers(tokens: tuple[bytes, ...]) -> frozenset[bytes]:
    """Header names that ``Connection`` marks as hop-by-hop, besides its own options."""
    for token in tokens:
        if token not in _PLAIN_CONNECTION:
            return frozenset(tokens) - _PLAIN_CONNECTION
    return _NONE_NOMINATED  # "keep-alive" and the like: nothing to remove (and nothing to make)


_NONE_NOMINATED: frozenset[bytes] = frozenset()


def head_end(tail: bytes, data: bytes, pos: int) -> int:
    """The offset in ``data`` just past the CRLF CRLF that ends a head starting at ``pos`` (or
    before it: ``tail`` is the last bytes, at most three, of the head's earlier reads); -1 when
    the head does not end in ``data``."""
    if tail:
        probe = tail + data[pos : pos + 3]
        found = probe.find(b"\r\n\r\n")
        if found >= 0:
            return pos + found + 4 - len(tail)
    found = data.find(b"\r\n\r\n", pos)
    return found + 4 if found >= 0 else -1


def trim_field_lines(head: bytes) -> bytes:
    """``head`` (a complete head) with the optional whitespace after each field value removed
    (RFC 9110 section 5.5: it is not part of the value), so that every check, and the value
    forwarded, sees the value alone. The start line is left as it is."""
    if head.find(b" \r\n") < 0 and head.find(b"\t\r\n") < 0:
        return head
    start = 0
    while head.startswith(b"\r\n", start):  # empty lines before a message (llhttp skips them)
        start += 2
    first = head.find(b"\r\n", start) + 2
    return head[:first] + _TRAILING_OWS.sub(b"\r\n", head[first:])
