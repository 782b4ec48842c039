"""The shared cache's RFC 9111 decisions, case by case, as a client and an origin would see them."""

from __future__ import annotations

import math

import pytest

from sidegate.http.messages import Headers
from sidegate.policy import cache_rules
from sidegate.policy.cache_rules import (
    HEURISTIC_STATUSES,
    RequestDirectives,
    Verdict,
    choose,
    conditional_headers,
    format_http_date,
    freshness_lifetime,
    if_range_allows,
    initial_age,
    invalidates,
    invalidation_urls,
    merge_not_modified,
    not_modified,
    parse_range,
    request_directives,
    response_directives,
    storable,
)

T = 1_700_000_000.0  # the response's Date
DATE = format_http_date(T)
DAY = 86400.0
NO_REQUEST = RequestDirectives()


def fields(*lines: str) -> Headers:
    """Headers from ``"Name: value"`` lines, in order."""
    out: Headers = []
    for line in lines:
        name, _, value = line.partition(":")
        out.append((name.encode(), value.strip().encode()))
    return out


def at(offset: float) -> str:
    """The HTTP-date ``offset`` seconds after the response's Date."""
    return format_http_date(T + offset).decode()


def test_every_name_of_the_contract_is_importable_from_cache_rules() -> None:
    names = [
        "parse_http_date",
        "format_http_date",
        "ResponseDirectives",
        "TARGETED",
        "response_directives",
        "RequestDirectives",
        "request_directives",
        "HEURISTIC_STATUSES",
        "storable",
        "freshness_lifetime",
        "initial_age",
        "Verdict",
        "choose",
        "vary_names",
        "not_modified",
        "conditional_headers",
        "merge_not_modified",
        "ByteRange",
        "parse_range",
        "if_range_allows",
        "invalidation_urls",
        "invalidates",
        "SAFE_METHODS",
    ]
    assert [name for name in names if not hasattr(cache_rules, name)] == []
    assert set(names) <= set(cache_rules.__all__)
    assert sorted(HEURISTIC_STATUSES) == [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501]


# --- storable ----------------------------------------------------------------------------------


def reason(
    *lines: str,
    method: bytes = b"GET",
    status: int = 200,
    request: tuple[str, ...] = (),
    authorization: bool = False,
    default_ttl: float = 0.0,
) -> str | None:
    headers = fields(*lines)
    return storable(
        method,
        status,
        request_directives(fields(*request)),
        authorization,
        response_directives(headers),
        headers,
        default_ttl=default_ttl,
    )


def test_a_plain_cacheable_response_is_storable() -> None:
    assert reason("Cache-Control: max-age=60", f"Date: {DATE.decode()}") is None
    assert reason() is None  # 200 is heuristically cacheable


@pytest.mark.parametrize("method", [b"POST", b"HEAD", b"PUT", b"get"])
def test_only_get_responses_are_stored(method: bytes) -> None:
    assert reason("Cache-Control: public, max-age=60", method=method) == "method"


@pytest.mark.parametrize("status", [100, 101, 103, 304, 600, 99])
def test_interim_and_not_modified_responses_are_never_stored(status: int) -> None:
    assert reason("Cache-Control: max-age=60", status=status) == "status"


def test_a_partial_response_is_storable_as_a_piece_by_the_same_rules() -> None:
    assert reason("Cache-Control: max-age=60", "Content-Range: bytes 0-9/20", status=206) is None
    assert reason("Cache-Control: no-store", "Content-Range: bytes 0-9/20", status=206) == "no-store"
    assert reason("Cache-Control: private, max-age=60", status=206) == "private"


@pytest.mark.parametrize("status", [201, 400, 403, 500, 502, 503])
def test_other_statuses_need_explicit_freshness(status: int) -> None:
    assert reason(status=status) == "status"
    assert reason("Cache-Control: public", f"Last-Modified: {at(-DAY)}", status=status) == "status"
    assert reason("Cache-Control: max-age=5", status=status) is None
    assert reason("Cache-Control: s-maxage=5", status=status) is None
    assert reason(f"Expires: {at(60)}", f"Date: {DATE.decode()}", status=status) is None


def test_default_ttl_does_not_store_an_error_page() -> None:
    assert reason(status=500, default_ttl=60) == "status"


@pytest.mark.parametrize("status", [302, 303, 307, 451])
def test_understood_statuses_without_a_lifetime_are_not_stored(status: int) -> None:
    assert reason(status=status) == "no-freshness"
    assert reason("Cache-Control: max-age=60", status=status) is None
    assert reason("Cache-Control: public", status=status) is None
    assert reason(status=status, default_ttl=30) is None


def test_a_validator_with_no_cache_is_stored_to_be_revalidated() -> None:
    assert reason("Cache-Control: no-cache", 'ETag: "v1"', status=302) is None
    assert reason("Cache-Control: no-cache", f"Last-Modified: {at(-60)}", status=302) is None
    assert reason("Cache-Control: no-cache", status=302) == "no-freshness"


def test_no_store_in_the_response_or_the_request() -> None:
    assert reason("Cache-Control: max-age=60, no-store") == "no-store"
    assert reason("Cache-Control: max-age=60", request=("Cache-Control: no-store",)) == "no-store"
    assert reason("CDN-Cache-Control: no-store", "Cache-Control: max-age=60") == "no-store"


@pytest.mark.parametrize("status", [200, 203, 204, 301, 404, 410])
def test_must_understand_stores_an_understood_status_despite_no_store(status: int) -> None:
    assert reason("Cache-Control: no-store, must-understand, max-age=60", status=status) is None
    assert reason("CDN-Cache-Control: must-understand, no-store, max-age=60", status=status) is None
    assert reason("Cache-Control: no-store, max-age=60", status=status) == "no-store"


@pytest.mark.parametrize("status", [201, 299, 418, 500, 503])
def test_must_understand_never_stores_a_status_the_cache_does_not_understand(status: int) -> None:
    assert reason("Cache-Control: must-understand, no-store, max-age=60", status=status) == "status"
    assert reason("Cache-Control: must-understand, max-age=60", status=status) == "status"
    assert reason("Cache-Control: max-age=60", status=status) is None  # without it: explicit freshness


def test_must_understand_leaves_the_other_rules_in_force() -> None:
    request = ("Cache-Control: no-store",)
    assert reason("Cache-Control: no-store, must-understand, max-age=60", request=request) == "no-store"
    assert reason("Cache-Control: no-store, must-understand, private, max-age=60") == "private"
    assert reason("Cache-Control: no-store, must-understand", status=302) == "no-freshness"


def test_private_responses_stay_out_of_a_shared_cache() -> None:
    assert reason("Cache-Control: private, max-age=60") == "private"
    assert reason('Cache-Control: private="Set-Cookie", max-age=60') == "private"
    # ...unless the targeted field for Sidegate says otherwise.
    assert reason("Cache-Control: private", "Sidegate-Cache-Control: max-age=60") is None


def test_a_request_with_authorization_needs_the_origin_s_consent() -> None:
    assert reason("Cache-Control: max-age=60", authorization=True) == "authorization"
    assert reason(authorization=True) == "authorization"
    assert reason("Cache-Control: public", authorization=True) is None
    assert reason("Cache-Control: s-maxage=60", authorization=True) is None
    assert reason("Cache-Control: max-age=60, must-revalidate", authorization=True) is None


def test_vary_star_is_not_stored() -> None:
    assert reason("Cache-Control: max-age=60", "Vary: *") == "vary-star"
    assert reason("Cache-Control: max-age=60", "Vary: Accept-Encoding", "Vary: Origin, *") == "vary-star"
    assert reason("Cache-Control: max-age=60", "Vary: Accept-Encoding") is None


def test_the_first_reason_is_the_one_reported() -> None:
    assert reason("Cache-Control: private, no-store", method=b"POST", status=500) == "method"
    assert reason("Cache-Control: private, no-store", status=500) == "status"
    assert reason("Cache-Control: private, no-store", "Vary: *") == "no-store"


# --- freshness_lifetime ----------------------------------------------------------------------


def lifetime(*lines: str, status: int = 200, **options: float) -> float:
    headers = fields(*lines)
    return freshness_lifetime(status, headers, response_directives(headers), **options)


def test_s_maxage_beats_max_age_and_max_age_beats_expires() -> None:
    assert lifetime("Cache-Control: max-age=60, s-maxage=600", f"Expires: {at(5)}", f"Date: {at(0)}") == 600
    assert lifetime("Cache-Control: max-age=60", f"Expires: {at(5)}", f"Date: {at(0)}") == 60


def test_the_targeted_field_sets_the_lifetime() -> None:
    assert lifetime("Cache-Control: max-age=60", "CDN-Cache-Control: max-age=600") == 600
    assert lifetime("CDN-Cache-Control: max-age=600", "Sidegate-Cache-Control: max-age=3") == 3
    assert lifetime("Cache-Control: max-age=60", "CDN-Cache-Control: max-age=600, ") == 60  # invalid


def test_expires_counts_from_date() -> None:
    assert lifetime(f"Date: {at(0)}", f"Expires: {at(3600)}") == 3600
    assert lifetime(f"Expires: {at(3600)}", f"Date: {at(3000)}") == 600


@pytest.mark.parametrize("expires", ["0", "-1", "yesterday", "", at(-60)])
def test_an_invalid_or_past_expires_is_already_stale(expires: str) -> None:
    headers = (f"Date: {at(0)}", f"Expires: {expires}", f"Last-Modified: {at(-100 * DAY)}")
    assert lifetime(*headers) == 0
    assert lifetime(*headers, default_ttl=300) == 0  # an explicit answer: no fallback


@pytest.mark.parametrize(
    "expires",
    [
        at(3600).replace(" ", "  ", 1),  # Thu,  01 ...
        at(3600).replace(" ", "  "),
        at(3600).replace(" ", "\t", 1),
        at(3600).replace(":", ".", 2),
        at(3600).replace(" GMT", " UTC"),
    ],
)
def test_an_expires_that_is_not_a_valid_http_date_is_already_stale(expires: str) -> None:
    headers = (f"Date: {at(0)}", f"Expires: {expires}")
    assert lifetime(*headers) == 0
    stored = fields(*headers)
    assert storable(b"GET", 200, NO_REQUEST, False, response_directives(stored), stored) is None


def test_expires_in_the_obsolete_forms_still_gives_a_lifetime() -> None:
    date = "Date: Sun, 06 Nov 1994 08:00:00 GMT"
    assert lifetime(date, "Expires: Sunday, 06-Nov-94 08:49:37 GMT") == 2977
    assert lifetime(date, "Expires: Sun Nov  6 08:49:37 1994") == 2977
    assert lifetime(date, "Expires: Sun Nov 6 08:49:37 1994") == 0


def test_expires_without_a_date_is_stale() -> None:
    assert lifetime(f"Expires: {at(3600)}") == 0


def test_the_first_expires_line_counts() -> None:
    assert lifetime(f"Date: {at(0)}", f"Expires: {at(60)}", f"Expires: {at(600)}") == 60


def test_an_invalid_max_age_is_stale_even_with_a_future_expires() -> None:
    assert lifetime("Cache-Control: max-age=ten", f"Date: {at(0)}", f"Expires: {at(600)}") == 0


def test_default_ttl_when_the_origin_gives_nothing() -> None:
    assert lifetime(f"Date: {at(0)}", f"Last-Modified: {at(-100 * DAY)}", default_ttl=30) == 30
    assert lifetime("Cache-Control: max-age=5", default_ttl=30) == 5


def test_heuristic_is_ten_percent_of_the_last_modified_age_capped_at_a_day() -> None:
    assert lifetime(f"Date: {at(0)}", f"Last-Modified: {at(-5 * DAY)}") == pytest.approx(0.5 * DAY)
    assert lifetime(f"Date: {at(0)}", f"Last-Modified: {at(-100 * DAY)}") == DAY
    assert lifetime(f"Date: {at(0)}", f"Last-Modified: {at(-1000)}", heuristic_fraction=0.5) == 500
    assert lifetime(f"Date: {at(0)}", f"Last-Modified: {at(-DAY)}", heuristic_max=60) == 60


def test_heuristic_only_for_heuristic_statuses_or_public() -> None:
    headers = (f"Date: {at(0)}", f"Last-Modified: {at(-1000)}")
    assert lifetime(*headers, status=404) == 100
    assert lifetime(*headers, status=302) == 0
    assert lifetime(*headers, "Cache-Control: public", status=302) == 100


def test_no_heuristic_without_last_modified_date_or_with_a_future_last_modified() -> None:
    assert lifetime(f"Date: {at(0)}") == 0
    assert lifetime(f"Last-Modified: {at(-1000)}") == 0
    assert lifetime(f"Date: {at(0)}", f"Last-Modified: {at(60)}") == 0
    assert lifetime(f"Date: {at(0)}", "Last-Modified: garbage") == 0


# --- initial_age -----------------------------------------------------------------------------


def test_apparent_age_from_date() -> None:
    # The response says it was made 5 s before it arrived, 1 s after the request left.
    assert initial_age(fields(f"Date: {at(0)}"), T + 4, T + 5) == 5


def test_age_header_plus_the_response_delay() -> None:
    assert initial_age(fields("Age: 100", f"Date: {at(0)}"), T - 2, T) == 102
    assert initial_age(fields("Age: 100"), T - 2, T) == 102


def test_the_larger_of_apparent_and_corrected_age() -> None:
    assert initial_age(fields("Age: 10", f"Date: {at(-300)}"), T - 1, T) == 300


def test_a_date_from_the_future_gives_no_apparent_age() -> None:
    assert initial_age(fields(f"Date: {at(3600)}"), T - 1, T) == 1


@pytest.mark.parametrize("age", ["abc", "-5", "1.5", "", "abc, 20", "-5, 20"])
def test_an_invalid_age_is_ignored(age: str) -> None:
    assert initial_age(fields(f"Age: {age}"), T - 2, T) == 2


@pytest.mark.parametrize(
    ("age", "first"), [("7200, 0", 7200), ("10,20", 10), (" , 30, 5", 30), ("0, 7200", 0)]
)
def test_a_list_valued_age_counts_by_its_first_member(age: str, first: int) -> None:
    assert initial_age(fields(f"Age: {age}"), T - 2, T) == first + 2


def test_a_huge_age_is_capped() -> None:
    assert initial_age(fields("Age: 99999999999999"), T, T) == 2**31


# --- choose ----------------------------------------------------------------------------------


def verdict(
    age: float,
    freshness: float,
    *request: str,
    must_revalidate: bool = False,
    no_cache: bool = False,
) -> Verdict:
    directives = request_directives(fields(*request))
    return choose(age, freshness, directives, must_revalidate=must_revalidate, no_cache=no_cache)


def test_fresh_until_the_age_reaches_the_lifetime() -> None:
    assert verdict(59.9, 60) is Verdict.FRESH
    assert verdict(60, 60) is Verdict.REVALIDATE
    assert verdict(0, 0) is Verdict.REVALIDATE


def test_no_cache_always_revalidates() -> None:
    assert verdict(0, 60, no_cache=True) is Verdict.REVALIDATE
    assert verdict(0, 60, "Cache-Control: no-cache") is Verdict.REVALIDATE
    assert verdict(0, 60, "Pragma: no-cache") is Verdict.REVALIDATE
    assert verdict(100, 60, "Cache-Control: no-cache, max-stale") is Verdict.REVALIDATE


def test_request_max_age_limits_the_age() -> None:
    assert verdict(10, 60, "Cache-Control: max-age=10") is Verdict.FRESH
    assert verdict(11, 60, "Cache-Control: max-age=10") is Verdict.REVALIDATE
    assert verdict(1, 60, "Cache-Control: max-age=0") is Verdict.REVALIDATE


def test_min_fresh_asks_for_time_left() -> None:
    assert verdict(20, 60, "Cache-Control: min-fresh=30") is Verdict.FRESH
    assert verdict(40, 60, "Cache-Control: min-fresh=30") is Verdict.REVALIDATE


def test_max_stale_serves_a_stale_response_on_purpose() -> None:
    assert verdict(1000, 60, "Cache-Control: max-stale") is Verdict.STALE_OK
    assert verdict(70, 60, "Cache-Control: max-stale=10") is Verdict.STALE_OK
    assert verdict(71, 60, "Cache-Control: max-stale=10") is Verdict.REVALIDATE
    assert verdict(70, 60, "Cache-Control: max-stale=abc") is Verdict.REVALIDATE
    assert verdict(70, 60) is Verdict.REVALIDATE


def test_must_revalidate_refuses_max_stale_but_not_a_fresh_response() -> None:
    assert verdict(70, 60, "Cache-Control: max-stale", must_revalidate=True) is Verdict.REVALIDATE
    assert verdict(10, 60, "Cache-Control: max-stale", must_revalidate=True) is Verdict.FRESH


def test_choose_takes_directive_values() -> None:
    stale_ok = RequestDirectives(max_stale=math.inf)
    assert choose(120, 60, stale_ok, must_revalidate=False, no_cache=False) is Verdict.STALE_OK
    assert choose(1, 60, NO_REQUEST, must_revalidate=False, no_cache=False) is Verdict.FRESH


# --- conditional requests --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "stored", "matches"),
    [
        # RFC 9110 8.8.3.2: the weak comparison table.
        ('W/"1"', 'W/"1"', True),
        ('W/"1"', 'W/"2"', False),
        ('W/"1"', '"1"', True),
        ('"1"', '"1"', True),
        ('"1"', 'W/"1"', True),
        ('"xyzzy", "r2d2xxxx", "c3piozzzz"', '"c3piozzzz"', True),
        ('"xyzzy", "r2d2xxxx"', '"c3piozzzz"', False),
        ('"a,b"', '"a,b"', True),
        ('"a,b"', '"b"', False),
        ("*", '"anything"', True),
        ("xyzzy", "xyzzy", False),  # unquoted: not an entity-tag
        ('"a", xyzzy, "b"', '"a"', True),
        ('"a", xyzzy, "b"', '"b"', False),  # a malformed list is read up to the error
        ('"1"', "garbage", False),
    ],
)
def test_if_none_match_uses_the_weak_comparison(sent: str, stored: str, matches: bool) -> None:
    assert not_modified(fields(f"If-None-Match: {sent}"), stored.encode(), None) is matches


def test_if_none_match_star_matches_even_without_an_etag() -> None:
    assert not_modified(fields("If-None-Match: *"), None, None)
    assert not not_modified(fields('If-None-Match: "1"'), None, None)


def test_if_none_match_lines_are_combined() -> None:
    headers = fields('If-None-Match: "a"', 'if-none-match: "b"')
    assert not_modified(headers, b'"b"', None)


def test_if_none_match_decides_over_if_modified_since() -> None:
    headers = fields('If-None-Match: "old"', f"If-Modified-Since: {at(0)}")
    assert not not_modified(headers, b'"new"', at(-60).encode())


def test_if_modified_since_against_last_modified() -> None:
    assert not_modified(fields(f"If-Modified-Since: {at(0)}"), None, at(-60).encode())
    assert not_modified(fields(f"If-Modified-Since: {at(0)}"), None, at(0).encode())
    assert not not_modified(fields(f"If-Modified-Since: {at(0)}"), None, at(60).encode())
    assert not_modified(
        fields("If-Modified-Since: Sunday, 06-Nov-94 08:49:37 GMT"), None, b"Sun Nov  6 08:49:37 1994"
    )


def test_an_unusable_if_modified_since_is_ignored() -> None:
    modified = at(-60).encode()
    assert not not_modified(fields("If-Modified-Since: yesterday"), None, modified)
    assert not not_modified(
        fields(f"If-Modified-Since: {at(0)}", f"If-Modified-Since: {at(0)}"), None, modified
    )
    assert not not_modified(fields(f"If-Modified-Since: {at(0)}"), None, None)
    assert not not_modified(fields(f"If-Modified-Since: {at(0)}"), None, b"garbage")
    assert not not_modified([], b'"1"', modified)


def test_conditional_headers_for_revalidation() -> None:
    stored = fields("Content-Type: text/plain", 'ETag: W/"v1"', f"Last-Modified: {at(-60)}", 'ETag: "v2"')
    assert conditional_headers(stored) == [
        (b"If-None-Match", b'W/"v1"'),
        (b"If-Modified-Since", at(-60).encode()),
    ]
    assert conditional_headers(fields('etag: "x"')) == [(b"If-None-Match", b'"x"')]
    assert conditional_headers(fields("ETag: unquoted", "Last-Modified: garbage")) == []
    assert conditional_headers([]) == []


# --- 304 merge -------------------------------------------------------------------------------


def test_a_304_updates_the_stored_fields_but_not_the_framing() -> None:
    stored = fields(
        "Content-Type: text/html",
        f"Date: {at(-100)}",
        'ETag: "v1"',
        "Cache-Control: max-age=60",
        "Content-Length: 1234",
        "Set-Cookie: a=1",
        "Set-Cookie: b=2",
        "X-Kept: yes",
    )
    update = fields(
        f"Date: {at(0)}",
        "cache-control: max-age=600",
        "Content-Length: 0",
        "Set-Cookie: c=3",
        "Transfer-Encoding: chunked",
        "Content-Range: bytes 0-1/2",
        "Connection: keep-alive, X-Hop",
        "Keep-Alive: timeout=5",
        "X-Hop: 1",
        "X-New: hello",
    )
    assert merge_not_modified(stored, update) == fields(
        "Content-Type: text/html",
        f"Date: {at(0)}",
        'ETag: "v1"',
        "cache-control: max-age=600",
        "Content-Length: 1234",
        "Set-Cookie: c=3",
        "X-Kept: yes",
        "X-New: hello",
    )


def test_a_304_without_fields_changes_nothing() -> None:
    stored = fields("Content-Type: text/html", 'ETag: "v1"')
    assert merge_not_modified(stored, []) == stored


def test_several_lines_of_a_new_name_are_all_added() -> None:
    merged = merge_not_modified(fields("A: 1"), fields("Link: <a>", "Link: <b>"))
    assert merged == fields("A: 1", "Link: <a>", "Link: <b>")


# --- ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # RFC 9110 14.1.2, for a 10000-byte representation.
        (b"bytes=0-499", (0, 499)),
        (b"bytes=500-999", (500, 999)),
        (b"bytes=-500", (9500, 9999)),
        (b"bytes=9500-", (9500, 9999)),
        (b"bytes=0-0", (0, 0)),
        (b"bytes=-1", (9999, 9999)),
        (b"bytes=0-", (0, 9999)),
        (b"bytes=5000-20000", (5000, 9999)),
        (b"bytes=-20000", (0, 9999)),
        (b"Bytes=1-2", (1, 2)),
        (b"bytes= 1-2 ", (1, 2)),
        (b"bytes=1-2,", (1, 2)),  # empty list elements are allowed
        (b"bytes=0-99999999999999999999999999", (0, 9999)),
        # None: serve the whole representation with a 200.
        (b"bytes=0-0,-1", None),
        (b"bytes=0-1, 5-6", None),
        (b"bytes=500-600,601-999", None),
        (b"bytes=5-1", None),
        (b"items=0-1", None),
        (b"bytes 0-1", None),
        (b"bytes=", None),
        (b"bytes=-", None),
        (b"bytes=abc", None),
        (b"bytes=a-b", None),
        (b"bytes=1-2-3", None),
        (b"bytes=--5", None),
        (b"bytes=+1-2", None),
        (b"", None),
        # a single range that starts past the end: 416.
        (b"bytes=10000-", "unsatisfiable"),
        (b"bytes=10000-10001", "unsatisfiable"),
        (b"bytes=-0", "unsatisfiable"),
        (b"bytes=99999999999999999999999999-", "unsatisfiable"),
    ],
)
def test_range_forms(value: bytes, expected: object) -> None:
    assert parse_range(value, 10000) == expected


def test_no_range_of_an_empty_body_is_satisfiable() -> None:
    assert parse_range(b"bytes=0-", 0) == "unsatisfiable"
    assert parse_range(b"bytes=-5", 0) == "unsatisfiable"


def test_if_range_needs_a_strong_etag_match_or_the_exact_date() -> None:
    modified = at(-60).encode()
    assert if_range_allows(b'"v1"', b'"v1"', modified)
    assert not if_range_allows(b'"v1"', b'"v2"', modified)
    assert not if_range_allows(b'W/"v1"', b'W/"v1"', modified)
    assert not if_range_allows(b'"v1"', b'W/"v1"', modified)
    assert not if_range_allows(b'"v1"', None, modified)
    assert if_range_allows(modified, b'"v1"', modified)
    assert not if_range_allows(at(0).encode(), b'"v1"', modified)  # newer is not "exactly"
    assert not if_range_allows(modified, b'"v1"', None)
    assert not if_range_allows(b"garbage", b'"v1"', modified)
    assert not if_range_allows(b'"v1', b'"v1"', modified)


# --- invalidation ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"OPTIONS", b"TRACE"])
def test_the_safe_methods_of_rfc_9110_invalidate_nothing(method: bytes) -> None:
    assert not invalidates(method)


@pytest.mark.parametrize(
    "method", [b"POST", b"PUT", b"DELETE", b"PATCH", b"PROPFIND", b"PURGE", b"QUERY", b"FOO", b"get"]
)
def test_every_other_method_invalidates_extension_methods_included(method: bytes) -> None:
    assert invalidates(method)  # RFC 9111 4.4: safety unknown counts as unsafe; names are case-sensitive


URL = b"http://example.com/a/b?q=1"


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("Location: /c", [b"http://example.com/c"]),
        ("Location: c?x=1", [b"http://example.com/a/c?x=1"]),
        ("Location: ../d/./e", [b"http://example.com/d/e"]),
        ("Location: ?other", [b"http://example.com/a/b?other"]),
        ("Location: /c#section", [b"http://example.com/c"]),
        ("Content-Location: http://example.com/f", [b"http://example.com/f"]),
        ("Content-Location: HTTP://Example.COM:80/f", [b"http://example.com/f"]),
        ("Content-Location: http://user@example.com/f", [b"http://example.com/f"]),
        ("Location: //example.com/g", [b"http://example.com/g"]),
        ("Location: http://example.com", [b"http://example.com/"]),
        ("Location: http://example.com?x", [b"http://example.com/?x"]),
        ("Location: https://example.com/c", []),
        ("Location: http://example.com:8080/c", []),
        ("Location: http://other.com/c", []),
        ("Location: //other.com/c", []),
        ("Location: http://example.com.evil/c", []),
        ("Location: javascript:alert(1)", []),
        ("Location: mailto:a@example.com", []),
        ("Location: http://[::1/c", []),
        ("Location: ", []),
    ],
)
def test_location_and_content_location_of_the_same_origin(field: str, expected: list[bytes]) -> None:
    assert invalidation_urls(URL, fields(field)) == expected


def test_both_fields_and_duplicates_once() -> None:
    headers = fields("Location: /x", "Content-Location: /y", "Content-Location: http://example.com/x")
    assert invalidation_urls(URL, headers) == [b"http://example.com/x", b"http://example.com/y"]


def test_urls_keep_the_request_url_spelling_and_port() -> None:
    headers = fields("Location: https://Example.com:443/x", "Location: https://example.com:8443/y")
    assert invalidation_urls(b"https://example.com/", headers) == [b"https://example.com/x"]
    assert invalidation_urls(b"http://example.com:8080/a", fields("Location: /z")) == [
        b"http://example.com:8080/z"
    ]


def test_non_ascii_bytes_pass_through() -> None:
    assert invalidation_urls(URL, [(b"Location", "/caf\u00e9".encode())]) == [
        "http://example.com/caf\u00e9".encode()
    ]


def test_no_urls_without_a_usable_request_url() -> None:
    assert invalidation_urls(b"/relative", fields("Location: /x")) == []
    assert invalidation_urls(URL, fields("Link: </x>")) == []
