"""RFC 9111 rules for Sidegate's shared cache: what is stored, for how long, and when it is served.

For one cacheable exchange: ``storable`` says whether a shared cache may keep the response (None)
or why not; ``freshness_lifetime`` and ``initial_age`` are computed once, when it arrives. On each
hit the caller ages the entry with its own clock and asks ``choose`` whether to serve it, serve it
stale on purpose (max-stale) or revalidate it (``conditional_headers``, then ``merge_not_modified``
on a 304). ``not_modified``, ``parse_range`` and ``if_range_allows`` shape the answer; a successful
unsafe request also invalidates ``invalidation_urls``. Everything is pure: times are passed in.
The field syntax lives in :mod:`sidegate.policy.cache_control`, re-exported here: one import.
"""

from __future__ import annotations

from enum import Enum
from typing import Final
from urllib.parse import urljoin

from sidegate.http.messages import Headers
from sidegate.policy.cache_control import (
    MAX_DELTA,
    TARGETED,
    RequestDirectives,
    ResponseDirectives,
    format_http_date,
    parse_http_date,
    request_directives,
    response_directives,
    vary_names,
)
from sidegate.policy.cache_ranges import ByteRange, if_range_allows, opaque_tag, parse_range

# fmt: off
__all__ = [
    "HEURISTIC_STATUSES", "MAX_DELTA", "SAFE_METHODS", "TARGETED", "UNDERSTOOD_STATUSES", "ByteRange",
    "RequestDirectives", "ResponseDirectives", "Verdict", "choose", "conditional_headers",
    "format_http_date", "freshness_lifetime", "if_range_allows", "initial_age", "invalidates",
    "invalidation_urls", "merge_not_modified", "not_modified", "parse_http_date", "parse_range",
    "request_directives", "response_directives", "storable", "vary_names",
]
# fmt: on

# RFC 9110 9.2.1: the safe methods. Every other method, extension methods included, is unsafe
# (RFC 9111 4.4: "including methods whose safety is unknown"): its success invalidates.
SAFE_METHODS: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE"))
# RFC 9110 15.1: responses with these statuses may get a heuristic freshness lifetime.
HEURISTIC_STATUSES: Final = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
# Statuses stored without explicit freshness (when something else allows it): any other final
# status is stored only with Expires, max-age or s-maxage, so an error page never lingers by default.
# These are also the statuses the cache "understands" for must-understand (RFC 9111 5.2.2.3). A 206
# is stored as a piece of its representation (sidegate.cache.pieces), never served as a whole.
UNDERSTOOD_STATUSES: Final = frozenset(
    {200, 203, 204, 206, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 451, 501}
)


def _first_values(headers: Headers, names: tuple[bytes, ...]) -> list[bytes | None]:
    """The first value of each of ``names`` (lower-case) in one pass over ``headers``."""
    found: list[bytes | None] = [None] * len(names)
    for name, value in headers:
        lname = name.lower()
        if lname in names:
            index = names.index(lname)
            if found[index] is None:
                found[index] = value
    return found


def storable(  # noqa: PLR0917 (the spec's signature)
    method: bytes,
    status: int,
    request: RequestDirectives,
    has_authorization: bool,
    response: ResponseDirectives,
    headers: Headers,
    *,
    default_ttl: float = 0.0,
) -> str | None:
    """None when a shared cache may store this response (RFC 9111 sections 3 and 3.5), else why not.

    Reasons: "method" (only GET), "status" (1xx, 304 or a status not understood without
    explicit freshness; with must-understand, any status not in ``UNDERSTOOD_STATUSES``),
    "no-store" (request, or response unless must-understand and the status is understood: RFC
    9111 5.2.2.3 has the cache ignore no-store then), "private", "authorization" (the
    request had credentials and the response lacks public, s-maxage and must-revalidate),
    "vary-star", "no-freshness" (nothing gives it a lifetime and it is not a revalidate-always
    response with a validator).
    """
    if method != b"GET":
        return "method"
    expires, etag, last_modified, vary = _first_values(
        headers, (b"expires", b"etag", b"last-modified", b"vary")
    )
    explicit = expires is not None or response.max_age is not None or response.s_maxage is not None
    final = 200 <= status <= 599 and status != 304  # a 304 completes a stored response
    understood = status in UNDERSTOOD_STATUSES
    if response.must_understand:
        if not understood:
            return "status"  # even with explicit freshness: the origin asked for understanding
    elif not understood and not (final and explicit):
        return "status"
    if request.no_store or (response.no_store and not response.must_understand):
        return "no-store"
    if response.private:
        return "private"
    shareable = response.public or response.s_maxage is not None or response.must_revalidate
    if has_authorization and not shareable:
        return "authorization"
    if vary is not None and vary_names(headers) is None:
        return "vary-star"
    if (
        not explicit
        and not response.public
        and status not in HEURISTIC_STATUSES
        and not (response.no_cache and (etag is not None or last_modified is not None))
        and default_ttl <= 0
    ):
        return "no-freshness"
    return None


def freshness_lifetime(
    status: int,
    headers: Headers,
    directives: ResponseDirectives,
    *,
    default_ttl: float = 0.0,
    heuristic_fraction: float = 0.1,
    heuristic_max: float = 86400.0,
) -> float:
    """Seconds a response stays fresh in a shared cache (RFC 9111 section 4.2.1).

    s-maxage, else max-age, else Expires - Date (an invalid Expires, or an Expires without a
    valid Date, is already stale: the caller adds Date to a response that lacks one, as RFC 9110
    6.6.1 asks; Expires is read strictly, see ``parse_http_date``), else ``default_ttl`` when
    positive, else the heuristic for a heuristically cacheable status or a public response:
    ``heuristic_fraction`` of the time since Last-Modified, at most ``heuristic_max``.
    """
    if directives.s_maxage is not None:
        return float(directives.s_maxage)
    if directives.max_age is not None:
        return float(directives.max_age)
    expires_text, date_text, modified_text = _first_values(headers, (b"expires", b"date", b"last-modified"))
    date = parse_http_date(date_text) if date_text is not None else None
    if expires_text is not None:
        expires = parse_http_date(expires_text, strict=True)
        return max(0.0, expires - date) if expires is not None and date is not None else 0.0
    if default_ttl > 0:
        return float(default_ttl)
    if modified_text is None or date is None or not (status in HEURISTIC_STATUSES or directives.public):
        return 0.0
    modified = parse_http_date(modified_text)
    if modified is None or modified > date:
        return 0.0
    return min(heuristic_fraction * (date - modified), heuristic_max)


def initial_age(headers: Headers, request_time: float, response_time: float) -> float:
    """corrected_initial_age of RFC 9111 section 4.2.3, in seconds.

    ``request_time`` is when the request was sent and ``response_time`` when the response
    arrived. Age counts by its first member (RFC 9111 5.1: ``Age: 7200, 0`` is 7200); one that
    is not a non-negative integer is ignored. Without a valid Date the apparent age is 0.
    """
    age_text, date_text = _first_values(headers, (b"age", b"date"))
    age_value = 0
    if age_text is not None:
        digits = next((member for member in map(bytes.strip, age_text.split(b",")) if member), b"")
        if digits.isdigit():
            age_value = MAX_DELTA if len(digits) > 10 else min(int(digits), MAX_DELTA)
    date = parse_http_date(date_text) if date_text is not None else None
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    response_delay = max(0.0, response_time - request_time)
    return max(apparent_age, age_value + response_delay)


def _entity_tags(value: bytes) -> list[bytes]:
    """Opaque tags (quotes kept, W/ dropped) of ``#entity-tag``; stops at the first malformed one."""
    tags: list[bytes] = []
    i, end = 0, len(value)
    while i < end:
        if value[i] in b" \t,":
            i += 1
            continue
        if value.startswith(b"W/", i):
            i += 2
        close = value.find(b'"', i + 1) if i < end and value[i] == 0x22 else -1
        if close < 0:
            break
        tags.append(value[i : close + 1])
        i = close + 1
    return tags


def not_modified(request_headers: Headers, etag: bytes | None, last_modified: bytes | None) -> bool:
    """Whether a GET/HEAD with ``request_headers`` may be answered 304 from a stored response.

    If-None-Match decides when present (weak comparison; "*" matches any stored response); only
    without it does If-Modified-Since count, true when Last-Modified is not after it. The caller
    checks the method: both fields are ignored on anything but GET and HEAD.
    """
    none_match: list[bytes] = []
    modified_since: list[bytes] = []
    for name, value in request_headers:
        lname = name.lower()
        if lname == b"if-none-match":
            none_match.append(value)
        elif lname == b"if-modified-since":
            modified_since.append(value)
    if none_match:
        value = b", ".join(none_match)
        if value.strip() == b"*":
            return True
        stored = opaque_tag(etag) if etag is not None else None
        return stored is not None and stored[1] in _entity_tags(value)
    if len(modified_since) != 1 or last_modified is None:
        return False  # RFC 9110 13.1.3: a field with more than one member is ignored
    since, modified = parse_http_date(modified_since[0]), parse_http_date(last_modified)
    return since is not None and modified is not None and modified <= since


def conditional_headers(stored: Headers) -> Headers:
    """Validator fields for revalidating ``stored``: If-None-Match and/or If-Modified-Since."""
    etag, last_modified = _first_values(stored, (b"etag", b"last-modified"))
    out: Headers = []
    if etag is not None and opaque_tag(etag) is not None:
        out.append((b"If-None-Match", etag.strip()))
    if last_modified is not None and parse_http_date(last_modified) is not None:
        out.append((b"If-Modified-Since", last_modified.strip()))
    return out


class Verdict(Enum):
    """What to do with a stored response for this request."""

    FRESH = "fresh"  # serve it
    STALE_OK = "stale_ok"  # stale, but the client accepts it (max-stale): serve it
    REVALIDATE = "revalidate"  # ask the origin first (or serve stale only under swr/sie rules)


def choose(
    age: float, freshness: float, request: RequestDirectives, *, must_revalidate: bool, no_cache: bool
) -> Verdict:
    """Whether a stored response of ``age`` and ``freshness`` seconds may answer ``request``.

    ``must_revalidate`` is the stored response's must-revalidate or proxy-revalidate, or s-maxage
    (which implies proxy-revalidate in a shared cache); ``no_cache`` its no-cache.
    """
    if no_cache or request.no_cache:
        return Verdict.REVALIDATE
    if request.max_age is not None and age > request.max_age:
        return Verdict.REVALIDATE
    if request.min_fresh is not None and freshness - age < request.min_fresh:
        return Verdict.REVALIDATE
    if age < freshness:
        return Verdict.FRESH
    if must_revalidate:
        return Verdict.REVALIDATE
    if request.max_stale is not None and age - freshness <= request.max_stale:
        return Verdict.STALE_OK
    return Verdict.REVALIDATE


# Fields a 304 never changes in the stored response (RFC 9111 sections 3.1 and 3.2): the stored
# body keeps its own framing, and hop-by-hop fields belong to the 304's own connection.
_NOT_UPDATED: Final = frozenset(
    b"content-length content-range transfer-encoding connection keep-alive proxy-connection te trailer"
    b" upgrade proxy-authenticate proxy-authentication-info".split()
)


def merge_not_modified(stored: Headers, update: Headers) -> Headers:
    """The stored response's fields updated by a 304's (RFC 9111 section 4.3.4).

    A name in the 304 replaces every stored line of that name, in the place of the first one;
    other stored fields keep their order and new names are appended. Framing, Content-Range,
    hop-by-hop fields and those the 304's Connection nominates are left as stored.
    """
    skip = set(_NOT_UPDATED)
    for name, value in update:
        if name.lower() == b"connection":
            skip.update(token.strip().lower() for token in value.split(b","))
    fresh: dict[bytes, Headers] = {}
    for name, value in update:
        lname = name.lower()
        if lname not in skip:
            fresh.setdefault(lname, []).append((name, value))
    merged: Headers = []
    for name, value in stored:
        lname = name.lower()
        lines = fresh.get(lname)
        if lines is None:
            merged.append((name, value))
        elif lines:
            merged.extend(lines)
            fresh[lname] = []  # placed: later stored lines of that name are dropped
    for lines in fresh.values():
        merged.extend(lines)
    return merged


_DEFAULT_PORTS: Final = {"http": ":80", "https": ":443"}


def _origin_split(url: str) -> tuple[str, str, str] | None:
    """(scheme, authority as written, path-and-query) of an absolute http(s) URL, else None."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _DEFAULT_PORTS:
        return None
    end = min((found for found in map(rest.find, "/?#") if found >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:].partition("#")[0]
    return scheme.lower(), authority, tail if tail.startswith("/") else "/" + tail


def _origin_key(scheme: str, authority: str) -> str:
    host = authority.rpartition("@")[2].lower()
    host = host.removesuffix(_DEFAULT_PORTS[scheme])
    return scheme + "://" + host.removesuffix(":")


def invalidates(method: bytes) -> bool:
    """Whether a non-error (2xx, 3xx) response to ``method`` invalidates what is stored for its
    target (RFC 9111 4.4): any method not known to be safe. Methods are case-sensitive, so
    ``get`` is an unknown method, and unsafe."""
    return method not in SAFE_METHODS


def invalidation_urls(request_url: bytes, response_headers: Headers) -> list[bytes]:
    """URLs named by Location and Content-Location that an unsafe request also invalidates.

    Each is resolved against ``request_url`` (``b"http://host/path?q"``) and kept only when it
    has the same origin (RFC 9111 section 4.4), so a response cannot purge another site's
    entries. Results are spelled like ``request_url`` (its scheme and host), without fragment.
    """
    base = request_url.decode("latin-1")
    parts = _origin_split(base)
    if parts is None:
        return []
    origin = _origin_key(parts[0], parts[1])
    prefix = base[: len(parts[0]) + 3 + len(parts[1])]
    urls: list[bytes] = []
    for name, value in response_headers:
        if name.lower() not in (b"location", b"content-location") or not value.strip():
            continue
        try:
            resolved = _origin_split(urljoin(base, value.strip().decode("latin-1")))
        except ValueError:  # e.g. a malformed IPv6 authority
            continue
        if resolved is None or _origin_key(resolved[0], resolved[1]) != origin:
            continue
        url = (prefix + resolved[2]).encode("latin-1")
        if url not in urls:
            urls.append(url)
    return urls
