"""How the request reader classifies header fields: the kinds, the tables that map names to them,
and what a special field does to the head (``apply_special``).

A field's kind is found once per spelling of its name (``FieldKinds`` remembers the names as
sent): plain fields are forwarded as they are; the special ones are framing, hop-by-hop or
rewritten by the proxy. Names with an underscore get a kind of their own when they fold onto a
name Sidegate manages (``special_fields``).
"""

from __future__ import annotations

from typing import Final

from sidegate.http.errors import ProtocolError
from sidegate.http.request_head import ParsedRequest
from sidegate.http.syntax import FieldKinds, connection_tokens, valid_request_id

# Header kinds (small ints so the dispatch in on_header is one dict lookup).
HOST: Final = 0
CL: Final = 1
TE: Final = 2
CONN: Final = 3
UPGRADE: Final = 4
HOP: Final = 5
XFF: Final = 6
XFP: Final = 7
XFH: Final = 8
FWD: Final = 9
VIA: Final = 10
RID: Final = 11
EXPECT: Final = 12
TRACE: Final = 13
UNDERSCORE_DROP: Final = 14  # a name with "_" that folds onto a managed one (or any, by choice)
UNDERSCORE_REJECT: Final = 15
_SPECIAL: Final[dict[bytes, int]] = {
    b"host": HOST,
    b"content-length": CL,
    b"transfer-encoding": TE,
    b"connection": CONN,
    b"upgrade": UPGRADE,
    b"keep-alive": HOP,
    b"proxy-connection": HOP,
    b"te": HOP,
    b"trailer": HOP,
    b"proxy-authorization": HOP,
    b"x-forwarded-for": XFF,
    b"x-forwarded-proto": XFP,
    b"x-forwarded-host": XFH,
    b"forwarded": FWD,
    b"via": VIA,
    b"x-request-id": RID,
    b"expect": EXPECT,
    # Kept apart so that, with tracing on, Sidegate sends its own (naming its span) instead.
    b"traceparent": TRACE,
    # Only ever sent with an h2c upgrade, which Sidegate never forwards (a smuggling vector).
    b"http2-settings": HOP,
}

# What listeners.inbound.underscore_headers names: field names with "_", which CGI, WSGI and the
# like fold into the same variable as the name with "-" (X_Forwarded_For and X-Forwarded-For
# both become HTTP_X_FORWARDED_FOR).
UNDERSCORE_MODES: Final = ("drop_managed", "drop", "reject", "allow")

DEFAULT_FIELDS: Final = FieldKinds(_SPECIAL, UNDERSCORE_DROP, frozenset(_SPECIAL))
_TABLES: dict[tuple[frozenset[bytes], str, frozenset[bytes]], FieldKinds] = {}


def special_fields(
    drop: frozenset[bytes], underscores: str = "drop_managed", managed: frozenset[bytes] = frozenset()
) -> FieldKinds:
    """The field table with ``drop`` (lower-case names) also removed from every request: the
    identity headers Sidegate sets itself. ``underscores`` says what becomes of a name with an
    underscore (see ``UNDERSCORE_MODES``): with ``drop_managed`` it is dropped when it folds onto
    a name Sidegate sets or strips (the special fields, ``drop`` and ``managed``, lower-case).
    One table per choice, shared by every connection."""
    key = (drop, underscores, managed)
    table = _TABLES.get(key)
    if table is None:
        special = dict(_SPECIAL)
        for name in drop:
            special.setdefault(name, HOP)
        folded: frozenset[bytes] | None = None
        kind: int | None = UNDERSCORE_DROP
        if underscores == "drop_managed":
            folded = frozenset(special) | managed
        elif underscores == "reject":
            kind = UNDERSCORE_REJECT
        elif underscores == "allow":
            kind = None
        _TABLES[key] = table = FieldKinds(special, kind, folded)
    return table


def apply_special(head: ParsedRequest, kind: int, name: bytes, value: bytes) -> bool:
    """Set what a special field of a request's head says (the reader does ``TE`` and
    ``UNDERSCORE_DROP`` itself). True when the field is kept in ``head.headers`` (``Expect``)."""
    if kind == HOST:
        if head.host_header or value.find(b",") >= 0:
            raise ProtocolError(400, "more than one Host header")
        if not value:
            raise ProtocolError(400, "empty Host header")
        head.host_header = value
    elif kind == CL:
        head.content_length = int(value)  # llhttp has checked it is digits and unique
    elif kind == CONN:
        head.connection_tokens += connection_tokens(value)
    elif kind == UPGRADE:
        head.upgrade = value
    elif kind == XFF:
        head.plain_forwarding = False
        head.xff = head.xff + b", " + value if head.xff else value
    elif kind == XFP:
        head.plain_forwarding = False
        head.xfp = value
    elif kind == XFH:
        head.plain_forwarding = False
        head.xfh = value
    elif kind == FWD:
        head.plain_forwarding = False
        head.forwarded = head.forwarded + b", " + value if head.forwarded else value
    elif kind == VIA:
        head.plain_forwarding = False
        head.via = head.via + b", " + value if head.via else value
    elif kind == EXPECT:
        head.headers.append((name, value))  # end-to-end: the app answers 100 Continue itself
        head.expect_continue = value.lower() == b"100-continue"
        return True
    elif kind == RID:
        head.request_id = value if valid_request_id(value) else b""
    elif kind == TRACE:
        # Two are invalid (a new trace starts); joined, they are forwarded as received.
        head.traceparent = head.traceparent + b", " + value if head.traceparent else value
    elif kind == UNDERSCORE_REJECT:
        shown = name[:64].decode("latin-1")
        raise ProtocolError(400, f"header field name with an underscore refused: {shown}")
    return False  # HOP: dropped
