"""How the request reader classifies header fields: the kinds, and the tables that map names to them.

A field's kind is found once per spelling of its name (``FieldKinds`` remembers the names as
sent): plain fields are forwarded as they are; the special ones are framing, hop-by-hop or
rewritten by the proxy (see ``RequestParser._special``). Names with an underscore get a kind of
their own when they fold onto a name Sidegate manages (``special_fields``).
"""

from __future__ import annotations

from typing import Final

from sidegate.http.syntax import FieldKinds

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
