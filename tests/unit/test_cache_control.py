"""Cache field syntax as an origin writes it: HTTP dates, Cache-Control and its targeted forms, Vary."""

from __future__ import annotations

import math

import pytest

from sidegate.http.messages import Headers
from sidegate.policy.cache_control import (
    MAX_DELTA,
    RequestDirectives,
    ResponseDirectives,
    format_http_date,
    parse_http_date,
    request_directives,
    response_directives,
    vary_names,
)

NOV_6_1994 = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, the RFC 9110 example


def fields(*lines: str) -> Headers:
    """Headers from ``"Name: value"`` lines, in order."""
    out: Headers = []
    for line in lines:
        name, _, value = line.partition(":")
        out.append((name.encode(), value.strip().encode()))
    return out


# --- dates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        b"Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850 format
        b"Sun Nov  6 08:49:37 1994",  # ANSI C asctime() format
        b"Sun Nov 06 08:49:37 1994",
        b"sun, 06 nov 1994 08:49:37 gmt",  # recipients are robust about case
        b"Mon, 06 Nov 1994 08:49:37 GMT",  # a wrong day name does not change the date
        b"  Sun, 06 Nov 1994 08:49:37 GMT ",
    ],
)
def test_the_three_date_formats_of_rfc_9110_give_the_same_time(value: bytes) -> None:
    assert parse_http_date(value) == NOV_6_1994


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"0",
        b"-1",
        b"yesterday",
        b"784111777",
        b"Sun, 06 Nov 1994 08:49:37",  # no zone
        b"Sun, 06 Nov 1994 08:49:37 PST",
        b"Sun, 06 Nov 1994 08:49:37 +0000",
        b"Sun, 06 Nov 94 08:49:37 GMT",  # two-digit year in IMF-fixdate
        b"Sun, 6 Nov 1994 08:49:37 GMT",
        b"Sun, 06 Nov 1994 8:49:37 GMT",
        b"Sun, 06 Nov 1994 24:00:00 GMT",
        b"Sun, 06 Nov 1994 08:60:00 GMT",
        b"Thu, 31 Feb 1994 08:49:37 GMT",
        b"Fri, 29 Feb 2019 00:00:00 GMT",  # not a leap year
        b"Sun, 00 Nov 1994 08:49:37 GMT",
        b"Sun, 06 Foo 1994 08:49:37 GMT",
        b"Xyz, 06 Nov 1994 08:49:37 GMT",
        b"Sun 06 Nov 1994 08:49:37 GMT",  # comma missing
        b"Sunday, 06-Nov-1994 08:49:37 GMT",
        b"Sun, 06-Nov-94 08:49:37 GMT",  # RFC 850 spells the day out
        b"Sunday, 06-Nov-9x 08:49:37 GMT",
        b"Sun Nov 6 08:49:37 94",
        b"Sun, +6 Nov 1994 08:49:37 GMT",
        b"Sun, 06 Nov 1994 08:49:3\xb2 GMT",
    ],
)
def test_an_invalid_date_is_none(value: bytes) -> None:
    assert parse_http_date(value) is None


@pytest.mark.parametrize(
    "value",
    [
        b"Sun, 06 Nov 1994 08:49:37 GMT",
        b"Sunday, 06-Nov-94 08:49:37 GMT",  # the obsolete forms stay readable
        b"Sun Nov  6 08:49:37 1994",  # asctime pads a one-digit day with a space
        b"Sun Nov 06 08:49:37 1994",
        b"SUN, 06 NOV 1994 08:49:37 gmt",  # case changes no reading of the date
        b" Sun, 06 Nov 1994 08:49:37 GMT ",  # the field's own surrounding whitespace
    ],
)
def test_a_strict_date_keeps_every_form_rfc_9110_spells(value: bytes) -> None:
    assert parse_http_date(value, strict=True) == NOV_6_1994


@pytest.mark.parametrize(
    "value",
    [
        b"Sun, 06  Nov 1994 08:49:37 GMT",
        b"Sun,  06 Nov  1994 08:49:37 GMT",
        b"Sun, 06 Nov 1994  08:49:37 GMT",
        b"Sun,\t06 Nov 1994 08:49:37 GMT",
        b"Sunday,  06-Nov-94 08:49:37 GMT",
        b"Sun Nov 6 08:49:37 1994",  # asctime's padding space missing
        b"Sun  Nov  6 08:49:37 1994",
    ],
)
def test_a_strict_date_refuses_other_spacing_that_the_lenient_one_reads(value: bytes) -> None:
    assert parse_http_date(value) == NOV_6_1994
    assert parse_http_date(value, strict=True) is None


def test_rfc_850_two_digit_years_pivot_at_70() -> None:
    assert parse_http_date(b"Thursday, 01-Jan-70 00:00:00 GMT") == 0.0
    assert parse_http_date(b"Saturday, 01-Jan-00 00:00:00 GMT") == 946684800.0


def test_leap_day_and_leap_second_are_accepted() -> None:
    assert parse_http_date(b"Thu, 29 Feb 2024 12:00:00 GMT") == 1709208000.0
    assert parse_http_date(b"Sat, 31 Dec 2016 23:59:60 GMT") == 1483228800.0


def test_format_writes_imf_fixdate() -> None:
    assert format_http_date(NOV_6_1994) == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(0) == b"Thu, 01 Jan 1970 00:00:00 GMT"
    assert format_http_date(NOV_6_1994 + 0.9) == b"Sun, 06 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize("ts", [0.0, 951782400.0, 1709208000.0, 4102444799.0])
def test_format_and_parse_round_trip(ts: float) -> None:
    assert parse_http_date(format_http_date(ts)) == ts


# --- response directives ---------------------------------------------------------------------


def test_no_cache_control_means_no_directives() -> None:
    assert response_directives(fields("Content-Type: text/plain")) == ResponseDirectives()


def test_every_directive_sidegate_acts_on() -> None:
    got = response_directives(
        fields(
            "Cache-Control: public, max-age=60, s-maxage=120, must-revalidate, proxy-revalidate,"
            " stale-while-revalidate=30, stale-if-error=300, immutable, no-cache, no-store, private,"
            " must-understand"
        )
    )
    assert got == ResponseDirectives(
        no_store=True,
        no_cache=True,
        private=True,
        public=True,
        max_age=60,
        s_maxage=120,
        must_revalidate=True,
        proxy_revalidate=True,
        stale_while_revalidate=30,
        stale_if_error=300,
        immutable=True,
        must_understand=True,
        source=b"cache-control",
    )


def test_directive_names_are_case_insensitive_and_values_may_be_quoted() -> None:
    got = response_directives(fields('cache-control: MAX-AGE="30", No-Store'))
    assert (got.max_age, got.no_store) == (30, True)


def test_all_cache_control_lines_count_and_the_first_duplicate_wins() -> None:
    got = response_directives(
        fields("Cache-Control: max-age=10", "X-Other: 1", "Cache-Control: max-age=99, public")
    )
    assert (got.max_age, got.public) == (10, True)


@pytest.mark.parametrize("value", [b"max-age=abc", b"max-age=-1", b"max-age=1.5", b"max-age", b"max-age="])
def test_an_invalid_max_age_makes_the_response_stale(value: bytes) -> None:
    assert response_directives([(b"Cache-Control", value)]).max_age == 0


def test_a_huge_delta_is_capped_at_2_31() -> None:
    got = response_directives(fields("Cache-Control: max-age=99999999999999999999, s-maxage=4294967296"))
    assert got.max_age == got.s_maxage == MAX_DELTA == 2**31


def test_invalid_stale_extensions_grant_nothing() -> None:
    got = response_directives(fields("Cache-Control: max-age=5, stale-while-revalidate=soon, stale-if-error"))
    assert (got.stale_while_revalidate, got.stale_if_error) == (None, None)


def test_qualified_private_and_no_cache_count_in_full_and_their_commas_do_not_split() -> None:
    got = response_directives(fields('Cache-Control: no-cache="Set-Cookie, max-age=999", private="X-A,X-B"'))
    assert (got.no_cache, got.private, got.max_age) == (True, True, None)


def test_an_escaped_quote_does_not_end_the_quoted_string() -> None:
    got = response_directives(fields(r'Cache-Control: x-ext="a\", max-age=1", max-age=7'))
    assert got.max_age == 7


def test_unknown_directives_and_empty_elements_are_skipped() -> None:
    got = response_directives(fields("Cache-Control: , x-foo=bar,, max-age=5 ,community=UCI,"))
    assert got == ResponseDirectives(max_age=5, source=b"cache-control")


# --- targeted fields (RFC 9213) ----------------------------------------------------------------


def test_cdn_cache_control_beats_cache_control() -> None:
    got = response_directives(fields("Cache-Control: max-age=60", "CDN-Cache-Control: max-age=600"))
    assert (got.max_age, got.source) == (600, b"cdn-cache-control")


def test_sidegate_cache_control_beats_cdn_cache_control() -> None:
    headers = fields(
        "Cache-Control: max-age=60", "CDN-Cache-Control: max-age=600", "Sidegate-Cache-Control: max-age=5"
    )
    got = response_directives(headers)
    assert (got.max_age, got.source) == (5, b"sidegate-cache-control")


def test_the_winning_targeted_field_is_used_alone() -> None:
    # RFC 9213 3.1: every other cache is told no-store, the targeted one stores heuristically.
    got = response_directives(fields("Cache-Control: no-store", "CDN-Cache-Control: none"))
    assert got == ResponseDirectives(source=b"cdn-cache-control")


@pytest.mark.parametrize(
    "value",
    [
        b"Max-Age=30",  # keys are lower-case in a Structured Field
        b"max-age=30,",  # trailing comma
        b"max-age=30 private",
        b"max-age=30x",
        b'max-age="30',  # unterminated String
        b"max-age=1234567890123456",  # Integer of 16 digits
        b"max-age=1.2345",
        b"=30",
        b"max-age=30;",
        b"max-age=(1 2",
        b'max-age=(1"a")',
        b"max-age=:YW!:",
        b"max-age=:YWJj",
        b"max-age=?2",
        b'max-age="\x01"',
    ],
)
def test_an_invalid_targeted_field_is_ignored(value: bytes) -> None:
    headers = [(b"Cache-Control", b"max-age=60"), (b"CDN-Cache-Control", value)]
    assert response_directives(headers) == ResponseDirectives(max_age=60, source=b"cache-control")


def test_an_invalid_sidegate_field_falls_back_to_cdn_cache_control() -> None:
    headers = fields("Sidegate-Cache-Control: MAX-AGE=1", "CDN-Cache-Control: max-age=600")
    assert response_directives(headers).source == b"cdn-cache-control"


def test_an_empty_targeted_field_is_ignored() -> None:
    headers = fields("Cache-Control: max-age=60", "CDN-Cache-Control: ", "Sidegate-Cache-Control:   ")
    assert response_directives(headers).source == b"cache-control"


def test_targeted_field_values_of_every_structured_type() -> None:
    value = b'private, max-age=30;ext=1, x=(1 "a" tok);p, y=:YWJj:, z="s\\"q", w=?1, v=-1.5, s-maxage=?0'
    got = response_directives([(b"CDN-Cache-Control", value)])
    assert (got.private, got.max_age, got.s_maxage, got.source) == (True, 30, None, b"cdn-cache-control")


def test_targeted_max_age_of_a_wrong_type_is_stale() -> None:
    for value in (b"max-age=1.5", b'max-age="60"', b"max-age=sixty", b"max-age=-5"):
        assert response_directives([(b"CDN-Cache-Control", value)]).max_age == 0


def test_in_a_targeted_field_a_repeated_key_keeps_its_last_value() -> None:
    headers = fields("CDN-Cache-Control: max-age=5", "CDN-Cache-Control: max-age=10, no-store=?0")
    assert response_directives(headers).max_age == 10
    assert not response_directives(fields("CDN-Cache-Control: no-store, no-store=?0")).no_store


def test_the_targeted_fields_are_configurable() -> None:
    headers = fields(
        "Cache-Control: max-age=1", "CDN-Cache-Control: max-age=2", "Fly-Cache-Control: max-age=3"
    )
    assert response_directives(headers, (b"Fly-Cache-Control",)).max_age == 3
    assert response_directives(headers, ()).max_age == 1


# --- request directives ----------------------------------------------------------------------


def test_request_directives() -> None:
    got = request_directives(
        fields("Cache-Control: no-cache, no-store, max-age=5, min-fresh=10, only-if-cached")
    )
    assert got == RequestDirectives(
        no_cache=True, no_store=True, max_age=5, min_fresh=10, only_if_cached=True
    )


def test_max_stale_without_a_value_accepts_any_staleness() -> None:
    assert request_directives(fields("Cache-Control: max-stale")).max_stale == math.inf
    assert request_directives(fields("Cache-Control: max-stale=30")).max_stale == 30.0
    assert request_directives(fields("Cache-Control: max-stale=soon")).max_stale is None
    assert request_directives(fields("Cache-Control: max-age=0")).max_stale is None


def test_invalid_request_values() -> None:
    got = request_directives(fields("Cache-Control: max-age=abc, min-fresh=-1"))
    assert (got.max_age, got.min_fresh) == (0, None)


def test_pragma_no_cache_counts_only_without_cache_control() -> None:
    assert request_directives(fields("Pragma: no-cache")).no_cache
    assert request_directives(fields("Pragma: x-foo, NO-CACHE")).no_cache
    assert not request_directives(fields("Pragma: x-foo")).no_cache
    assert not request_directives(fields("Pragma: no-cache", "Cache-Control: max-age=60")).no_cache
    assert request_directives([]) == RequestDirectives()


# --- Vary ------------------------------------------------------------------------------------


def test_vary_names_from_every_line_lower_case_without_duplicates() -> None:
    headers = fields("Vary: Accept-Encoding, Accept", "Content-Type: text/html", "vary: accept,  ,Origin")
    assert vary_names(headers) == (b"accept-encoding", b"accept", b"origin")
    assert vary_names(fields("Content-Type: text/html")) == ()


def test_vary_star_is_none() -> None:
    assert vary_names(fields("Vary: Accept", "Vary: Origin, *")) is None
