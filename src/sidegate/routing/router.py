"""The route table: picks the first declared route whose match accepts a request head.

Theory of operation
-------------------
:mod:`sidegate.config.compile` describes each route's match as a :class:`RouteMatch` of plain
values (bytes, compiled ``bytes`` regexes, lower-case names). :class:`Router` turns every one into
a row of the table that :meth:`Router.match` walks in declaration order:

``(path kind, path bytes, path regex's fullmatch, other checks, query checks, route)``

The path test is inlined in the loop (a route with only ``path_prefix: "/"`` costs one
``startswith``); everything else a route asks for (hosts, methods, headers) is folded into one
closure, built only when needed. The query string is parsed at most once per request, and only
when a route that reaches its query test needs it. Nothing is compiled or lower-cased per
request except header names of requests that meet a route with header conditions.

Semantics (see also docs for the config):

- path: ``path`` is equality; ``path_prefix`` is a plain byte prefix like Envoy (``/api`` also
  matches ``/apix``; write ``/api/`` to stop at a segment); ``path_regex`` must match the whole
  path (``fullmatch``). The path is the normalised path, without the query.
- hosts: exact names, or ``*.example.com`` which matches any name ending in ``.example.com``
  (``a.example.com`` and ``a.b.example.com``, not ``example.com``); ``*`` matches any host.
- methods: any of the listed (upper-case) methods.
- headers: names are case-insensitive. ``exact``/``regex`` (full match) succeed when *any* value
  sent under that name matches; ``present: true`` needs the header, ``present: false`` its absence.
  The HTTP parser keeps some headers out of ``RequestHead.headers``: those in
  :data:`FIELD_HEADERS` are read from the head's fields instead (an empty field is "not sent";
  repeated ones arrive joined with ", "); those in :data:`UNMATCHABLE_HEADERS` cannot be matched.
- query: names are case-sensitive; names and values are percent-decoded and ``+`` is a space;
  a parameter without ``=`` has the empty value. Repeated parameters match like headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar
from urllib.parse import unquote_to_bytes

from sidegate.http.messages import RequestHead

_EXACT: Final = 0
_PREFIX: Final = 1
_REGEX: Final = 2

# Headers the HTTP parser takes out of ``RequestHead.headers`` and keeps in a field of the head
# (the forwarding ones on :class:`sidegate.http.request_head.ParsedRequest`).
FIELD_HEADERS: dict[bytes, str] = {
    b"upgrade": "upgrade",
    b"x-request-id": "request_id",
    b"x-forwarded-for": "xff",
    b"x-forwarded-proto": "xfp",
    b"x-forwarded-host": "xfh",
    b"forwarded": "forwarded",
    b"via": "via",
    b"traceparent": "traceparent",
}
# Headers a route cannot match on: framing and hop-by-hop ones the parser consumes, and Host
# (use ``hosts``, which compares the name without its port).
UNMATCHABLE_HEADERS = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"proxy-authorization",
        b"http2-settings",  # only with an h2c upgrade, which Sidegate never forwards
    }
)

QueryParams = dict[bytes, list[bytes]]
_Check = Callable[[RequestHead], bool]
_QueryCheck = Callable[[QueryParams], bool]
_FullMatch = Callable[[bytes], "re.Match[bytes] | None"]


class Named(Protocol):
    """What the table needs of the value a route match leads to: its name (for :meth:`Router.explain`)."""

    @property
    def name(self) -> str: ...


#: What a match leads to: the compiled route (:class:`sidegate.config.snapshot.Route`). The table
#: is generic in it so that routing needs nothing of the snapshot that holds the table.
R = TypeVar("R", bound=Named)
_Row = tuple[int, bytes, "_FullMatch | None", "_Check | None", "_QueryCheck | None", R]


@dataclass(frozen=True, slots=True)
class ValueTest:
    """One header or query condition; exactly one of the three is set."""

    exact: bytes | None = None
    regex: re.Pattern[bytes] | None = None  # must match the whole value
    present: bool | None = None

    def test(self, values: list[bytes] | None) -> bool:
        """Does this condition hold for the values sent under the name (None: not sent)?"""
        if self.present is not None:
            return (values is not None) == self.present
        if values is None:
            return False
        if self.exact is not None:
            return self.exact in values
        regex = self.regex
        return regex is not None and any(regex.fullmatch(v) is not None for v in values)

    def __str__(self) -> str:
        if self.present is not None:
            return "present" if self.present else "absent"
        if self.exact is not None:
            return f"equal to {_text(self.exact)!r}"
        return f"matching regex {_text(self.regex.pattern) if self.regex else ''!r}"


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """What a route matches, as plain values; exactly one of the three path fields is set."""

    path: bytes | None = None
    path_prefix: bytes | None = None
    path_regex: re.Pattern[bytes] | None = None
    hosts: tuple[bytes, ...] = ()  # lower-case; "*.example.com" wildcards; empty: any host
    methods: frozenset[bytes] = frozenset()  # upper-case; empty: any method
    headers: tuple[tuple[bytes, ValueTest], ...] = ()  # lower-case names
    query: tuple[tuple[bytes, ValueTest], ...] = ()


class Router(Generic[R]):
    """Routes in declaration order; :meth:`match` returns the first that accepts a request."""

    __slots__ = ("_entries", "_table", "routes")

    def __init__(self, entries: Iterable[tuple[RouteMatch, R]]) -> None:
        self._entries = tuple(entries)
        self.routes: tuple[R, ...] = tuple(route for _, route in self._entries)
        self._table: tuple[_Row[R], ...] = tuple(_row(spec, route) for spec, route in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, req: RequestHead) -> R | None:
        """The first route whose match accepts ``req``, or None (the proxy answers 404)."""
        path = req.path
        params: QueryParams | None = None
        for kind, value, fullmatch, check, query_check, route in self._table:
            if kind == _PREFIX:
                if not path.startswith(value):
                    continue
            elif kind == _EXACT:
                if path != value:
                    continue
            elif fullmatch is None or fullmatch(path) is None:
                continue
            if check is not None and not check(req):
                continue
            if query_check is not None:
                if params is None:
                    params = parse_query(req.query)
                if not query_check(params):
                    continue
            return route
        return None

    def explain(self, req: RequestHead) -> list[tuple[str, str]]:
        """For each route in order, ``(name, reason)``: why it does not match, or that it does.

        For debugging (admin "explain"); slow on purpose, never on the request path.
        """
        params = parse_query(req.query)
        out: list[tuple[str, str]] = []
        winner: str | None = None
        for spec, route in self._entries:
            reason = _mismatch(spec, req, params)
            if reason is None:
                reason = "matches" if winner is None else f"matches, but route {winner!r} comes first"
                winner = winner or route.name
            out.append((route.name, reason))
        return out


def parse_query(query: bytes) -> QueryParams:
    """``a=1&b=x%20y&a=2&flag`` -> ``{b"a": [b"1", b"2"], b"b": [b"x y"], b"flag": [b""]}``."""
    params: QueryParams = {}
    if not query:
        return params
    for part in query.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        params.setdefault(_unquote(name), []).append(_unquote(value))
    return params


def _unquote(raw: bytes) -> bytes:
    if raw.find(b"%") < 0 and raw.find(b"+") < 0:
        return raw
    return unquote_to_bytes(raw.replace(b"+", b" "))


# --- compiling one route into a table row ------------------------------------------------------


def _row(spec: RouteMatch, route: R) -> _Row[R]:
    fullmatch: _FullMatch | None = None
    if spec.path_prefix is not None:
        kind, value = _PREFIX, spec.path_prefix
    elif spec.path is not None:
        kind, value = _EXACT, spec.path
    elif spec.path_regex is not None:
        kind, value, fullmatch = _REGEX, b"", spec.path_regex.fullmatch
    else:
        raise ValueError(f"route {route.name!r} has no path match")
    checks: list[_Check] = []
    if spec.hosts and b"*" not in spec.hosts:
        checks.append(_host_check(spec.hosts))
    if spec.methods:
        checks.append(_method_check(spec.methods))
    checks.extend(_header_check(name, test) for name, test in spec.headers)
    return kind, value, fullmatch, _all_of(checks), _query_check(spec.query), route


def _all_of(checks: list[_Check]) -> _Check | None:
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    frozen = tuple(checks)

    def check(req: RequestHead) -> bool:
        for one in frozen:  # noqa: SIM110 (hot path: a plain loop beats all() over a generator)
            if not one(req):
                return False
        return True

    return check


def _host_check(hosts: tuple[bytes, ...]) -> _Check:
    exact = frozenset(h for h in hosts if not h.startswith(b"*."))
    suffixes = tuple(h[1:] for h in hosts if h.startswith(b"*."))  # "*.example.com" -> ".example.com"
    if not suffixes:
        return lambda req: req.host in exact
    if not exact:
        return lambda req: req.host.endswith(suffixes)
    return lambda req: req.host in exact or req.host.endswith(suffixes)


def _method_check(methods: frozenset[bytes]) -> _Check:
    if len(methods) == 1:
        (only,) = methods
        return lambda req: req.method == only
    return lambda req: req.method in methods


def _header_check(lname: bytes, test: ValueTest) -> _Check:
    if lname in UNMATCHABLE_HEADERS:
        raise ValueError(f"routes cannot match on the {lname.decode()} header")
    attr = FIELD_HEADERS.get(lname)
    if attr is not None:
        return lambda req: test.test(_field_values(req, attr))
    if test.present is not None:
        want = test.present

        def present(req: RequestHead) -> bool:
            for name, _ in req.headers:
                if name.lower() == lname:
                    return want
            return not want

        return present
    if test.exact is not None:
        exact = test.exact

        def equals(req: RequestHead) -> bool:
            for name, value in req.headers:  # noqa: SIM110 (hot path, as above)
                if value == exact and name.lower() == lname:
                    return True
            return False

        return equals
    regex = test.regex
    if regex is None:
        raise ValueError(f"header condition on {lname!r} sets none of exact, regex, present")

    def matches(req: RequestHead) -> bool:
        for name, value in req.headers:
            if name.lower() == lname and regex.fullmatch(value) is not None:
                return True
        return False

    return matches


def _field_values(req: RequestHead, attr: str) -> list[bytes] | None:
    value: bytes = getattr(req, attr, b"")
    return [value] if value else None


def _query_check(query: tuple[tuple[bytes, ValueTest], ...]) -> _QueryCheck | None:
    if not query:
        return None

    def check(params: QueryParams) -> bool:
        for name, test in query:  # noqa: SIM110 (hot path, as above)
            if not test.test(params.get(name)):
                return False
        return True

    return check


# --- explain -----------------------------------------------------------------------------------


def _mismatch(spec: RouteMatch, req: RequestHead, params: QueryParams) -> str | None:
    path = _text(req.path)
    if spec.path is not None and req.path != spec.path:
        return f"path {path!r} is not {_text(spec.path)!r}"
    if spec.path_prefix is not None and not req.path.startswith(spec.path_prefix):
        return f"path {path!r} does not start with {_text(spec.path_prefix)!r}"
    if spec.path_regex is not None and spec.path_regex.fullmatch(req.path) is None:
        return f"path {path!r} does not match regex {_text(spec.path_regex.pattern)!r}"
    if spec.hosts and b"*" not in spec.hosts and not _host_check(spec.hosts)(req):
        return f"host {_text(req.host)!r} is not one of {', '.join(_text(h) for h in spec.hosts)}"
    if spec.methods and req.method not in spec.methods:
        return f"method {_text(req.method)} is not one of {', '.join(sorted(_text(m) for m in spec.methods))}"
    for lname, test in spec.headers:
        attr = FIELD_HEADERS.get(lname)
        if attr is not None:
            values = _field_values(req, attr)
        else:
            values = [v for n, v in req.headers if n.lower() == lname] or None
        if not test.test(values):
            return f"header {_text(lname)} {_seen(values)}: wanted {test}"
    for name, test in spec.query:
        values = params.get(name)
        if not test.test(values):
            return f"query parameter {_text(name)} {_seen(values)}: wanted {test}"
    return None


def _seen(values: list[bytes] | None) -> str:
    return "(not sent)" if values is None else "(" + ", ".join(repr(_text(v)) for v in values) + ")"


def _text(raw: bytes) -> str:
    return raw.decode("latin-1")
