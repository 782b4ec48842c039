"""The framing keys of the inbound listener: ``limits.chunk_line`` and ``underscore_headers``."""

from __future__ import annotations

import textwrap

import pytest

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.snapshot import Snapshot
from sidegate.errors import ConfigError
from support.configs import MINIMAL


def compile_text(text: str) -> Snapshot:
    return compile_checked(check_text(textwrap.dedent(text), "test.yaml", environ={}))


def with_inbound(lines: str) -> str:
    return MINIMAL.replace(
        '  inbound: {address: "127.0.0.1:8080"}', '  inbound:\n    address: "127.0.0.1:8080"\n' + lines
    )


def test_defaults() -> None:
    limits = compile_text(MINIMAL).limits
    assert limits.chunk_line == 4096
    assert limits.underscore_headers == "drop_managed"
    assert limits.managed_fields == frozenset()


def test_chunk_line_and_underscore_headers_set() -> None:
    snapshot = compile_text(with_inbound("    limits: {chunk_line: 1KiB}\n    underscore_headers: reject\n"))
    assert snapshot.limits.chunk_line == 1024
    assert snapshot.limits.underscore_headers == "reject"


def test_routes_header_edits_are_managed_names() -> None:
    text = MINIMAL.replace(
        "    upstream: app",
        "    upstream: app\n    headers:\n"
        "      request: {set: {X-Role: gw}, add: {X-Extra: '1'}, remove: [X-Debug]}",
    )
    assert compile_text(text).limits.managed_fields == frozenset((b"x-role", b"x-extra", b"x-debug"))


@pytest.mark.parametrize(
    ("lines", "path"),
    [
        ("    underscore_headers: sometimes\n", "listeners.inbound.underscore_headers"),
        ("    limits: {chunk_line: 0}\n", "listeners.inbound.limits.chunk_line"),
    ],
)
def test_bad_values_name_their_path(lines: str, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_text(with_inbound(lines))
    assert path in str(caught.value)
