"""Secondary keys: list-valued request fields that differ only in order, case or spacing select one
variant; every other field is compared as the client sent it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sidegate.cache.entry import Entry
from sidegate.cache.keys import LIST_FIELDS, list_value, secondary_key
from sidegate.cache.store import Store

URL = b"http://api.local/page"


def key(name: bytes, *values: bytes) -> bytes:
    return secondary_key((name,), [(name.title(), value) for value in values])


@pytest.mark.parametrize(
    ("name", "one", "other"),
    [
        (b"accept-language", b"en, fr", b"fr,EN"),
        (b"accept-language", b"en-US,  fr;q=0.5", b"fr ; q=0.5,EN-us"),
        (b"accept-encoding", b"gzip, deflate, br", b"br,gzip,deflate"),
        (b"accept-encoding", b"gzip, , br,", b"BR, gzip"),  # empty elements are no elements
        (b"accept-encoding", b"gzip, gzip", b"gzip"),
        (b"accept", b"text/html, application/json;q=0.9", b"Application/JSON; q=0.9,  text/html"),
        (b"accept-charset", b"utf-8, iso-8859-1;q=0.5", b"ISO-8859-1;q=0.5, UTF-8"),
    ],
)
def test_list_fields_differing_in_order_case_or_spacing_share_a_key(
    name: bytes, one: bytes, other: bytes
) -> None:
    assert key(name, one) == key(name, other)


def test_lines_of_a_list_field_count_as_one_list() -> None:
    assert key(b"accept-language", b"fr", b"EN") == key(b"accept-language", b"en, fr")


@pytest.mark.parametrize(
    ("name", "one", "other"),
    [
        (b"accept-language", b"en", b"fr"),
        (b"accept-language", b"en, fr", b"en"),
        (b"accept-language", b"en;q=0.5, fr", b"en, fr;q=0.5"),  # a weight stays with its element
        (b"accept", b'text/html;x="a,b"', b'text/html;x="b,a"'),  # quoted: kept as sent
        (b"cookie", b"a=1; b=2", b"b=2; a=1"),  # not a list field: order kept
        (b"x-tenant", b"ACME", b"acme"),  # nor its case
        (b"x-tenant", b"a, b", b"b, a"),
    ],
)
def test_values_that_mean_something_else_keep_separate_keys(name: bytes, one: bytes, other: bytes) -> None:
    assert key(name, one) != key(name, other)


def test_the_normal_spelling_is_sorted_lower_case_joined_by_comma_space() -> None:
    assert list_value(b"fr-CH, fr;q=0.9,EN;q=0.8 , *;q=0.5") == b"*;q=0.5, en;q=0.8, fr-ch, fr;q=0.9"
    assert key(b"accept-encoding", b"GZIP") == b"accept-encoding=gzip"
    assert key(b"accept-encoding", b"") == b"accept-encoding="  # present but empty
    assert secondary_key((b"accept-encoding",), []) == b"accept-encoding"  # absent
    assert sorted(LIST_FIELDS) == [b"accept", b"accept-charset", b"accept-encoding", b"accept-language"]


def test_a_value_asked_again_gets_the_same_key() -> None:
    first = key(b"accept-language", b"de, en;q=0.5")
    assert [key(b"accept-language", b"de, en;q=0.5") for _ in range(3)] == [first] * 3


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "cache", max_size=1 << 20)
    yield s
    s.close()


def test_the_store_keeps_one_variant_for_both_spellings(store: Store) -> None:
    vary = (b"Accept-Language",)
    page = Entry.build(
        200, [(b"Vary", b"Accept-Language")], b"bonjour", response_time=1000.0, initial_age=0, freshness=60
    )
    assert store.store("", URL, vary, [(b"Accept-Language", b"en, fr")], page)
    found = store.lookup("", URL, [(b"accept-language", b"fr,EN")], 1000.0)
    assert found is not None and found.body == b"bonjour"
    assert store.store("", URL, vary, [(b"Accept-Language", b"FR, en")], page)  # the same variant again
    assert store.stats().entries == 1
    assert store.lookup("", URL, [(b"accept-language", b"fr")], 1000.0) is None


def test_a_long_list_is_normalised_as_well() -> None:
    tags = [f"x-lang-{i:03d}".encode() for i in range(40)]  # over 300 bytes: never remembered
    assert key(b"accept-language", b", ".join(tags)) == key(b"accept-language", b",".join(reversed(tags)))
    assert key(b"accept-language", b", ".join(tags)) != key(b"accept-language", b", ".join(tags[1:]))
