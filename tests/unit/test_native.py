"""The compiled hot path: what setup.py compiles is what the package reports and checks."""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

from sidegate import native

ROOT = Path(__file__).resolve().parents[2]


def _setup_py_modules() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "COMPILED" for t in node.targets):
            files = ast.literal_eval(node.value)
            return ["sidegate." + f.removesuffix(".py").replace("/", ".") for f in files]
    raise AssertionError("setup.py has no COMPILED list")


def test_setup_py_compiles_the_modules_native_reports() -> None:
    assert sorted(_setup_py_modules()) == sorted(native.HOT_MODULES)


def test_the_suite_runs_the_compiled_hot_path() -> None:
    # `make test` builds it; a pure-Python run (`make pure`) says so instead of passing silently.
    assert native.compiled_modules() == list(native.HOT_MODULES), native.describe()
    assert native.describe() == "hot path compiled (mypyc)"


def test_an_extension_older_than_its_source_is_reported(tmp_path: Path) -> None:
    package = tmp_path / "sidegate"
    (package / "http").mkdir(parents=True)
    source = package / "http" / "writer.py"
    source.write_text("x = 1\n")
    extension = package / "http" / "writer.cpython-311-x86_64-linux-gnu.so"
    extension.write_bytes(b"")
    past = time.time() - 60
    os.utime(extension, (past, past))
    assert native.stale_extensions(package) == ["sidegate.http.writer"]
    os.utime(source, (past - 60, past - 60))
    assert native.stale_extensions(package) == []
