"""Build hook: compile the hot path with mypyc (the package metadata is in pyproject.toml).

The modules listed in ``COMPILED`` run every request. mypyc turns their (strictly typed) Python into
C extension modules: same source, same behaviour, about twice the speed, with native classes whose
attributes are struct fields. Everything else (config, admin, CLI) stays interpreted.

``SIDEGATE_COMPILE=0`` builds a pure-Python package (the reference implementation); the Makefile
installs that way, then compiles in place with ``python setup.py build_ext --inplace``.
"""

from __future__ import annotations

import os

from setuptools import setup

# Relative to src/sidegate. Kept out: modules built on dataclasses that mypyc does not compile
# faithfully (config.snapshot, filters.base, server.context, upstream.cluster, errors).
COMPILED = (
    "exchange.py",
    "forwarding.py",
    "proxy.py",
    "http/errors.py",
    "http/messages.py",
    "http/request_parser.py",
    "http/response_parser.py",
    "http/syntax.py",
    "http/writer.py",
    "observe/metrics.py",
    "routing/router.py",
    "server/inbound.py",
    "server/timers.py",
    "upstream/connection.py",
    "upstream/pool.py",
)


def _ext_modules() -> list[object]:
    if os.environ.get("SIDEGATE_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify

    return list(mypycify([f"src/sidegate/{name}" for name in COMPILED], opt_level="3", group_name="sidegate"))


setup(ext_modules=_ext_modules())
