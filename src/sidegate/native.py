"""Which modules of the hot path run compiled (mypyc), and whether any is older than its source.

``setup.py`` compiles the per-request modules into C extensions that sit beside their ``.py``
files; Python imports the extension when both exist. An extension built from an older source
would silently run old code, so the test suite and ``sidegate version`` check for that.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

# The modules setup.py compiles (it reads this tuple from this file, so it is the one list).
HOT_MODULES = (
    "sidegate.request.exchange",
    "sidegate.request.forward",
    "sidegate.forwarding",
    "sidegate.request.proxy",
    "sidegate.request.outcome",
    "sidegate.request.plan",
    "sidegate.request.upstream_head",
    "sidegate.request.access_text",
    "sidegate.request.record",
    "sidegate.request.recorder",
    "sidegate.request.services",
    "sidegate.request.view",
    "sidegate.observe.trace_context",
    "sidegate.http.counted",
    "sidegate.http.chunked",
    "sidegate.http.errors",
    "sidegate.http.held",
    "sidegate.http.messages",
    "sidegate.http.request_fields",
    "sidegate.http.request_head",
    "sidegate.http.request_parser",
    "sidegate.http.response_parser",
    "sidegate.http.syntax",
    "sidegate.http.writer",
    "sidegate.observe.metrics",
    "sidegate.routing.router",
    "sidegate.server.shared",
    "sidegate.server.inbound",
    "sidegate.server.framing",
    "sidegate.server.response_writer",
    "sidegate.server.stream",
    "sidegate.server.timers",
    "sidegate.upstream.connection",
    "sidegate.upstream.pool",
    "sidegate.upstream.fetch",  # not per request: compiled as its base class UpstreamUser is
    "sidegate.egress.http_leg",  # the egress listener's per-request path (bench row `egress`)
    "sidegate.egress.http_call",
    "sidegate.egress.proxy",
    "sidegate.egress.listener",
    "sidegate.egress.policy",  # decided once per call (the fast table, else the walk)
    "sidegate.egress.record",  # the audit record, made once per call
    "sidegate.egress.audit",  # Audit.finish: counters, stats, explain ring, line
    "sidegate.egress.observe",
    "sidegate.egress.connect_head",  # each request line peeked at
    "sidegate.egress.state",  # read by every call (pools, policy, audit, limits)
    "sidegate.egress.server",  # compiled as its base class EgressState is
    "sidegate.cache.hitpath",
    "sidegate.cache.keys",
    "sidegate.cache.store",
    "sidegate.cache.urlkey",
    "sidegate.filters.context",
    "sidegate.filters.fastpath",
    "sidegate.policy.gcra",
    "sidegate.policy.tally",
    "sidegate.ratelimit.local",
    "sidegate.ratelimit.shared",
)


# Extensions written in C (not mypyc), each with its source: the HTTP readers' fast lane.
C_EXTENSIONS = {"sidegate.http._wire": "http/_wire.c"}


def compiled_modules() -> list[str]:
    """The hot-path modules that import from a compiled extension. Found without importing them:
    a process must not load LMDB or the rate-limit stores just to say how it was built."""
    compiled = []
    for name in HOT_MODULES:
        loaded = sys.modules.get(name)
        origin = loaded.__file__ if loaded is not None else _origin(name)
        if _is_extension(origin or ""):
            compiled.append(name)
    return compiled


def _origin(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    return spec.origin if spec is not None else None


def stale_extensions(package_dir: Path | None = None) -> list[str]:
    """Extensions whose ``.py`` source changed after they were built (rebuild: ``make install``)."""
    root = package_dir or Path(__file__).resolve().parent
    stale = []
    for name in HOT_MODULES:
        source = root.joinpath(*name.split(".")[1:]).with_suffix(".py")
        for ext in source.parent.glob(source.stem + ".*.so"):
            if source.stat().st_mtime > ext.stat().st_mtime:
                stale.append(name)
    for name, c_source in C_EXTENSIONS.items():
        source = root / c_source
        for ext in source.parent.glob(name.rsplit(".", 1)[1] + ".*.so"):
            if source.stat().st_mtime > ext.stat().st_mtime:
                stale.append(name)
    return stale


def describe() -> str:
    """One line for ``sidegate version`` and the start-up log."""
    compiled = compiled_modules()
    if len(compiled) == len(HOT_MODULES):
        lane = "" if fast_lane_built() else ", no HTTP fast lane"
        return f"hot path compiled (mypyc){lane}"
    if not compiled:
        return "hot path interpreted (pure Python; build with mypyc for full speed)"
    return f"hot path partly compiled ({len(compiled)} of {len(HOT_MODULES)} modules)"


def fast_lane_built() -> bool:
    """Whether the HTTP readers' fast lane (``sidegate.http._wire``, C) is there to import."""
    origin = _origin("sidegate.http._wire")
    return origin is not None and _is_extension(origin)


def _is_extension(path: str) -> bool:
    return path.endswith((".so", ".pyd"))
