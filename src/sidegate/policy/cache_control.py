"""HTTP field syntax for the shared cache: dates, cache directives and Vary.

Theory of operation: every function takes field values as ``bytes`` and returns plain values;
nothing here decides whether to store or serve (that is :mod:`sidegate.policy.cache_rules`).
Parsers are lenient where RFC 9110 asks recipients to be robust (case of names, list whitespace,
empty list elements). Each parser scans its input once; none uses a regex.

Directive sources (RFC 9213): a targeted field such as ``CDN-Cache-Control`` is a Structured
Field Dictionary (RFC 8941). The first targeted field that is present, non-empty and parses wins
alone; otherwise ``Cache-Control`` (every field line, combined) decides.
"""

from __future__ import annotations

import calendar
import math
import time
from dataclasses import dataclass
from typing import Final

from sidegate.http.messages import Headers

# --- dates (RFC 9110 section 5.6.7) -------------------------------------------------------------

_DAYS: Final = tuple(b"Mon Tue Wed Thu Fri Sat Sun".split())  # in time.tm_wday order
_LONG_DAYS: Final = frozenset(b"Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split())
_MONTHS: Final = tuple(b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())
_MONTH_NUMBER: Final = {name: number for number, name in enumerate(_MONTHS, 1)}
_MONTH_DAYS: Final = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_http_date(value: bytes, *, strict: bool = False) -> float | None:
    """Unix time of an HTTP-date (IMF-fixdate, RFC 850 or asctime form); None if invalid.

    Names are matched case-insensitively and the day name is not checked against the date
    (recipients should be robust). A two-digit RFC 850 year 70-99 is 19xx, 00-69 is 20xx.

    ``strict`` (for Expires, where RFC 9111 5.3 makes an invalid date mean "already expired"):
    the parts must be separated exactly as RFC 9110 5.6.7 writes them, one space each (asctime's
    one-digit day is padded with a second space: ``Sun Nov  6``); doubled spaces or tabs make
    the date invalid. The three forms and the case-insensitive names are still accepted: the
    obsolete forms because RFC 9110 requires recipients to read them, the case because that
    changes no reading of the date.
    """
    parts = value.split()
    if strict and _spelled(parts) != value.strip(b" \t"):
        return None
    if len(parts) == 6:  # Sun, 06 Nov 1994 08:49:37 GMT
        day_name, day, month, year, clock, zone = parts
        if day_name[:3].title() not in _DAYS or day_name[3:] != b"," or len(day) != 2 or len(year) != 4:
            return None
    elif len(parts) == 4:  # Sunday, 06-Nov-94 08:49:37 GMT
        day_name, date, clock, zone = parts
        day, _, rest = date.partition(b"-")
        month, _, short_year = rest.partition(b"-")
        if day_name[-1:] != b"," or day_name[:-1].title() not in _LONG_DAYS or len(day) != 2:
            return None
        if len(short_year) != 2 or not short_year.isdigit():
            return None
        year = (b"19" if short_year >= b"70" else b"20") + short_year
    elif len(parts) == 5:  # Sun Nov  6 08:49:37 1994
        day_name, month, day, clock, year = parts
        zone = b"GMT"
        if day_name.title() not in _DAYS or len(day) > 2 or len(year) != 4:
            return None
    else:
        return None
    if zone.upper() != b"GMT":
        return None
    return _timestamp(year, month, day, clock)


def _spelled(parts: list[bytes]) -> bytes:
    """The date of ``parts`` spelled with the separators of RFC 9110 5.6.7."""
    if len(parts) == 5:  # asctime: the day is 2DIGIT or SP DIGIT
        return b" ".join((parts[0], parts[1], parts[2].rjust(2), parts[3], parts[4]))
    return b" ".join(parts)


def _timestamp(year: bytes, month: bytes, day: bytes, clock: bytes) -> float | None:
    number = _MONTH_NUMBER.get(month.title())
    hms = clock.split(b":")
    if number is None or len(hms) != 3 or not (year.isdigit() and day.isdigit()):
        return None
    if any(len(part) != 2 or not part.isdigit() for part in hms):
        return None
    y, d, h, m, s = int(year), int(day), int(hms[0]), int(hms[1]), int(hms[2])
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    last_day = 28 if number == 2 and not leap else _MONTH_DAYS[number]
    if y < 1 or not 1 <= d <= last_day or h > 23 or m > 59 or s > 60:  # 60: a leap second
        return None
    return float(calendar.timegm((y, number, d, h, m, s)))


def format_http_date(ts: float) -> bytes:
    """``ts`` (Unix time) as an IMF-fixdate, the only form a sender may generate."""
    t = time.gmtime(ts)
    day, month = _DAYS[t.tm_wday], _MONTHS[t.tm_mon - 1]
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (day, t.tm_mday, month, t.tm_year, *t[3:6])


# --- cache directives (RFC 9111 section 5.2, RFC 9213) ------------------------------------------

MAX_DELTA: Final = 2147483648  # RFC 9111 1.2.2: a larger delta-seconds is sent as 2^31
TARGETED: Final = (b"sidegate-cache-control", b"cdn-cache-control")


@dataclass(frozen=True, slots=True)
class ResponseDirectives:
    """The response cache directives that Sidegate acts on, and the field they came from.

    Qualified ``no-cache="field"`` and ``private="field"`` count as their unqualified forms: the
    safe reading for a cache that does not strip single fields.
    """

    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    public: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    immutable: bool = False
    must_understand: bool = False  # RFC 9111 5.2.2.3: store only a status the cache understands
    source: bytes = b""  # b"sidegate-cache-control", b"cdn-cache-control", b"cache-control" or b""


@dataclass(frozen=True, slots=True)
class RequestDirectives:
    """The request cache directives (RFC 9111 section 5.2.1)."""

    no_cache: bool = False
    no_store: bool = False
    max_age: int | None = None
    max_stale: float | None = None  # math.inf when given without a value
    min_fresh: int | None = None
    only_if_cached: bool = False


_Raw = dict[bytes, bytes | None]  # directive name (lower-case) -> argument, None when it has none


def _delta(arg: bytes | None) -> int | None:
    """delta-seconds, or None when ``arg`` is not one."""
    if arg is None or not arg.isdigit():
        return None
    return MAX_DELTA if len(arg) > 10 else min(int(arg), MAX_DELTA)


def _age_limit(raw: _Raw, name: bytes) -> int | None:
    # RFC 9111 4.2.1: invalid freshness information (max-age=abc) is best read as already stale.
    if name not in raw:
        return None
    value = _delta(raw[name])
    return 0 if value is None else value


def response_directives(headers: Headers, targeted: tuple[bytes, ...] = TARGETED) -> ResponseDirectives:
    """The directives that govern a shared cache for a response with ``headers``.

    The first field of ``targeted`` (in that order) that is present and valid wins alone (RFC
    9213); an empty or unparsable one counts as absent. Otherwise every ``Cache-Control`` line
    is combined; there a repeated directive keeps its first value.
    """
    wanted = targeted if targeted is TARGETED else tuple(name.lower() for name in targeted)
    control: list[bytes] = []
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        lname = name.lower()
        if lname == b"cache-control":
            control.append(value)
        elif lname in wanted:
            found.setdefault(lname, []).append(value)
    for lname in wanted:
        lines = [line for line in found.get(lname, ()) if line.strip()]
        raw = _sf_dictionary(b", ".join(lines)) if lines else None
        if raw is not None:
            return _response(raw, lname)
    if control:
        return _response(_directives(b", ".join(control)), b"cache-control")
    return ResponseDirectives()


def _response(raw: _Raw, source: bytes) -> ResponseDirectives:
    return ResponseDirectives(
        no_store=b"no-store" in raw,
        no_cache=b"no-cache" in raw,
        private=b"private" in raw,
        public=b"public" in raw,
        max_age=_age_limit(raw, b"max-age"),
        s_maxage=_age_limit(raw, b"s-maxage"),
        must_revalidate=b"must-revalidate" in raw,
        proxy_revalidate=b"proxy-revalidate" in raw,
        stale_while_revalidate=_delta(raw.get(b"stale-while-revalidate")),
        stale_if_error=_delta(raw.get(b"stale-if-error")),
        immutable=b"immutable" in raw,
        must_understand=b"must-understand" in raw,
        source=source,
    )


def request_directives(headers: Headers) -> RequestDirectives:
    """The request's directives; ``Pragma: no-cache`` counts only when Cache-Control is absent."""
    control: list[bytes] = []
    pragma: list[bytes] = []
    for name, value in headers:
        lname = name.lower()
        if lname == b"cache-control":
            control.append(value)
        elif lname == b"pragma":
            pragma.append(value)
    if not control:
        return RequestDirectives(no_cache=bool(pragma) and b"no-cache" in _directives(b", ".join(pragma)))
    raw = _directives(b", ".join(control))
    max_stale: float | None = None
    if b"max-stale" in raw:
        # Without a value any staleness is accepted; a bad value grants none (the safe reading).
        arg = raw[b"max-stale"]
        seconds = _delta(arg)
        max_stale = math.inf if arg is None else None if seconds is None else float(seconds)
    return RequestDirectives(
        no_cache=b"no-cache" in raw,
        no_store=b"no-store" in raw,
        max_age=_age_limit(raw, b"max-age"),
        max_stale=max_stale,
        min_fresh=_delta(raw.get(b"min-fresh")),
        only_if_cached=b"only-if-cached" in raw,
    )


def _directives(value: bytes) -> _Raw:
    """``#( token [ "=" ( token / quoted-string ) ] )`` with first-wins duplicates; junk skipped."""
    elements = _split_outside_quotes(value) if b'"' in value else value.split(b",")
    raw: _Raw = {}
    for element in elements:
        name, eq, arg = element.partition(b"=")
        name = name.strip().lower()
        if name and name not in raw:
            raw[name] = _unquote(arg.strip()) if eq else None
    return raw


def _split_outside_quotes(value: bytes) -> list[bytes]:
    elements: list[bytes] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            escaped = char == 0x5C  # backslash
            quoted = char != 0x22
        elif char == 0x22:
            quoted = True
        elif char == 0x2C:
            elements.append(value[start:index])
            start = index + 1
    elements.append(value[start:])
    return elements


def _unquote(arg: bytes) -> bytes:
    # RFC 9111 5.2: max-age="5" counts as max-age=5. Quoted-pairs stay escaped: no directive
    # read here has a value that needs one.
    return arg[1:-1] if len(arg) > 1 and arg.startswith(b'"') and arg.endswith(b'"') else arg


# Structured Field Dictionary (RFC 8941 section 4.2.2), reduced to what a directive needs: an
# Integer keeps its digits, true is None, false drops the member, any other value becomes b"".
_DIGITS: Final = frozenset(b"0123456789")
_KEY_FIRST: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz*")
_KEY_CHARS: Final = _KEY_FIRST | _DIGITS | frozenset(b"_-.")
_ALPHA: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_TOKEN_CHARS: Final = _ALPHA | _DIGITS | frozenset(b"!#$%&'*+-.^_`|~:/")
_BASE64: Final = _ALPHA | _DIGITS | frozenset(b"+/=")
_OWS: Final = frozenset(b" \t")
_SP: Final = frozenset(b" ")


def _skip(data: bytes, i: int, chars: frozenset[int]) -> int:
    while i < len(data) and data[i] in chars:
        i += 1
    return i


def _sf_dictionary(data: bytes) -> _Raw | None:
    """The members of a Dictionary Structured Field, or None when the field does not parse."""
    raw: _Raw = {}
    i = _skip(data, 0, _SP)
    try:
        while True:
            key, i = _sf_key(data, i)
            member: bytes | bool = True
            if i < len(data) and data[i] == 0x3D:  # "="
                member, i = _sf_member(data, i + 1)
            else:
                i = _sf_params(data, i)
            raw.pop(key, None)  # a repeated key: the last one wins
            if member is not False:
                raw[key] = None if member is True else member
            i = _skip(data, i, _OWS)
            if i == len(data):
                return raw
            if data[i] != 0x2C:  # ","
                return None
            i = _skip(data, i + 1, _OWS)  # then a key: a trailing comma fails there
    except (ValueError, IndexError):
        return None


def _sf_key(data: bytes, i: int) -> tuple[bytes, int]:
    end = _skip(data, i, _KEY_CHARS)
    if end == i or data[i] not in _KEY_FIRST:
        raise ValueError
    return data[i:end], end


def _sf_member(data: bytes, i: int) -> tuple[bytes | bool, int]:
    if data[i] != 0x28:  # "(" starts an inner list
        item, i = _sf_bare(data, i)
        return item, _sf_params(data, i)
    i = _skip(data, i + 1, _SP)
    while data[i] != 0x29:  # ")"
        i = _sf_params(data, _sf_bare(data, i)[1])
        if data[i] not in b" )":
            raise ValueError
        i = _skip(data, i, _SP)
    return b"", _sf_params(data, i + 1)


def _sf_params(data: bytes, i: int) -> int:
    while i < len(data) and data[i] == 0x3B:  # ";"
        _, i = _sf_key(data, _skip(data, i + 1, _SP))
        if i < len(data) and data[i] == 0x3D:
            i = _sf_bare(data, i + 1)[1]
    return i


def _sf_bare(data: bytes, i: int) -> tuple[bytes | bool, int]:
    first = data[i]
    if first == 0x2D or first in _DIGITS:  # Integer or Decimal
        digits = i + 1 if first == 0x2D else i
        end = _skip(data, digits, _DIGITS)
        if end < len(data) and data[end] == 0x2E:  # a Decimal is never a delta-seconds
            fraction = _skip(data, end + 1, _DIGITS)
            if not (0 < end - digits <= 12 and 0 < fraction - end - 1 <= 3):
                raise ValueError
            return b"", fraction
        if not 0 < end - digits <= 15:
            raise ValueError
        return data[i:end], end
    if first == 0x22:  # String
        i += 1
        while (char := data[i]) != 0x22:
            if char == 0x5C and data[i + 1] in b'"\\':
                i += 2
            elif 0x20 <= char <= 0x7E and char != 0x5C:
                i += 1
            else:
                raise ValueError
        return b"", i + 1
    if first in _ALPHA or first == 0x2A:  # Token
        return b"", _skip(data, i + 1, _TOKEN_CHARS)
    if first == 0x3A:  # Byte Sequence
        end = _skip(data, i + 1, _BASE64)
        if data[end] != 0x3A:
            raise ValueError
        return b"", end + 1
    if first == 0x3F and data[i + 1] in b"01":  # Boolean
        return data[i + 1] == 0x31, i + 2
    raise ValueError


# --- Vary (RFC 9110 section 12.5.5) -------------------------------------------------------------


def vary_names(headers: Headers) -> tuple[bytes, ...] | None:
    """Lower-case names listed by every Vary line, deduplicated in order; None when one is "*"."""
    names: dict[bytes, None] = {}  # ordered, and a repeated name costs no scan
    for name, value in headers:
        if name.lower() == b"vary":
            for part in value.split(b","):
                field = part.strip().lower()
                if field == b"*":
                    return None
                if field:
                    names[field] = None
    return tuple(names)
