"""Build hook: compile the hot path with mypyc (the package metadata is in pyproject.toml).

The modules listed in ``sidegate.native.HOT_MODULES`` run every request. mypyc turns their
(strictly typed) Python into C extension modules: same source, same behaviour, about twice the
speed, with native classes whose attributes are struct fields. Everything else (config, admin,
CLI) stays interpreted.

One more extension is plain C: ``sidegate.http._wire``, the HTTP readers' fast lane and the
head writer (see ``sidegate.http.wire``).

``SIDEGATE_COMPILE=0`` builds a pure-Python package (the reference implementation); the Makefile
installs that way, then compiles in place with ``python setup.py build_ext --inplace``.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from setuptools import Extension, setup


# The list is HOT_MODULES in src/sidegate/native.py (read here without importing the package, which
# is not installed yet). Kept out: modules built on dataclasses that mypyc does not compile
# faithfully (config.snapshot, filters.base, upstream.cluster, errors).
def _compiled() -> list[str]:
    tree = ast.parse(Path("src/sidegate/native.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "HOT_MODULES" for t in node.targets):
            names: tuple[str, ...] = ast.literal_eval(node.value)
            return ["src/" + name.replace(".", "/") + ".py" for name in names]
    raise RuntimeError("src/sidegate/native.py defines no HOT_MODULES")


def _ext_modules() -> list[object]:
    if os.environ.get("SIDEGATE_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify

    # The fast lane of the HTTP readers: plain heads read whole in C (llhttp reads the rest).
    wire = Extension("sidegate.http._wire", ["src/sidegate/http/_wire.c"], extra_compile_args=["-O2"])
    return [*mypycify(_compiled(), opt_level="3", group_name="sidegate"), wire]


setup(ext_modules=_ext_modules())
