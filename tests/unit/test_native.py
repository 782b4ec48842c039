"""The compiled hot path: the suite runs it, and a build older than its source is caught."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sidegate import native
from sidegate.http import wire

ROOT = Path(__file__).resolve().parents[2]


def test_the_suite_runs_the_compiled_hot_path() -> None:
    # `make test` builds it; a pure-Python run (`make pure`) says so instead of passing silently.
    assert native.compiled_modules() == list(native.HOT_MODULES), native.describe()
    assert native.describe() == "hot path compiled (mypyc)"
    assert native.fast_lane_built() and wire.AVAILABLE  # the C fast lane of the HTTP readers


@pytest.mark.parametrize(
    ("source_name", "module"),
    [("writer.py", "sidegate.http.writer"), ("_wire.c", "sidegate.http._wire")],
    ids=["mypyc", "c"],
)
def test_an_extension_older_than_its_source_is_reported(
    tmp_path: Path, source_name: str, module: str
) -> None:
    package = tmp_path / "sidegate"
    (package / "http").mkdir(parents=True)
    source = package / "http" / source_name
    source.write_text("x = 1\n")
    extension = package / "http" / (source_name.rsplit(".", 1)[0] + ".cpython-311-x86_64-linux-gnu.so")
    extension.write_bytes(b"")
    past = time.time() - 60
    os.utime(extension, (past, past))
    assert native.stale_extensions(package) == [module]
    os.utime(source, (past - 60, past - 60))
    assert native.stale_extensions(package) == []
