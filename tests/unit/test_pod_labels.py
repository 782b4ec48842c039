"""Reading the pod's labels: the downward API file as the kubelet writes it, and the env form."""

from __future__ import annotations

import pytest

from sidegate.config.labels import LabelsError, format_labels, parse_downward_labels, parse_env_labels

# What the kubelet writes for `kubectl label`-ed pods: sorted key="value" lines, values quoted by
# Go's %q, no newline after the last one.
KUBELET_FILE = 'app="shop"\napp.kubernetes.io/name="shop-api"\npod-template-hash="7c9d8f6b5"\nversion="v2"'


def test_the_kubelets_file_reads_as_its_labels() -> None:
    assert parse_downward_labels(KUBELET_FILE) == {
        "app": "shop",
        "app.kubernetes.io/name": "shop-api",
        "pod-template-hash": "7c9d8f6b5",
        "version": "v2",
    }


def test_an_empty_file_is_a_pod_without_labels() -> None:
    assert parse_downward_labels("") == {}
    assert parse_downward_labels("\n") == {}


@pytest.mark.parametrize(
    ("quoted", "value"),
    [
        (r"a\"b", 'a"b'),  # Go %q escapes quotes and backslashes
        (r"back\\slash", "back\\slash"),
        (r"tab\there\nnewline", "tab\there\nnewline"),
        (r"caf\u00e9", "café"),
        ("café", "café"),  # printable runes stay as they are
        (r"\U0001F600", "\U0001f600"),
        (r"\xc3\xa9", "é"),  # bytes that together are UTF-8
        (r"\101", "A"),  # octal, legal in a Go string literal
        ("", ""),
    ],
)
def test_go_quoted_values_are_unquoted(quoted: str, value: str) -> None:
    assert parse_downward_labels(f'key="{quoted}"') == {"key": value}


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("version=v2", "line 1 is 'version=v2', not key=\"value\""),  # unquoted: not what the kubelet writes
        ('version="v2', 'not key="value"'),
        ('="v2"', 'not key="value"'),
        (r'k="\q"', "unknown escape \\q"),
        (r'k="\uD800"', "U+D800, which is no Unicode character"),
    ],
)
def test_a_malformed_file_names_the_line_and_the_format(line: str, found: str) -> None:
    with pytest.raises(LabelsError) as info:
        parse_downward_labels(line)
    assert found in str(info.value)


def test_a_bad_line_says_which_line_it_is() -> None:
    with pytest.raises(LabelsError, match=r"^line 2 "):
        parse_downward_labels('app="shop"\nversion v2\n')


def test_env_labels_are_comma_separated_pairs() -> None:
    assert parse_env_labels("version=v2, track = canary ,zone=eu-1") == {
        "version": "v2",
        "track": "canary",
        "zone": "eu-1",
    }
    assert parse_env_labels("") == {}
    assert parse_env_labels("empty=") == {"empty": ""}


@pytest.mark.parametrize("text", ["version", "=v2", "version=v2,track"])
def test_env_labels_without_equals_are_refused(text: str) -> None:
    with pytest.raises(LabelsError, match="is not key=value"):
        parse_env_labels(text)


def test_labels_format_back_for_messages() -> None:
    assert format_labels({"version": "v2", "zone": "eu"}) == "version=v2,zone=eu"
    assert format_labels({}) == "(no labels)"
