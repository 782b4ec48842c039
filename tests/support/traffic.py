"""A gateway with one route of each kind the admin stats count, and a known mix of traffic for it.

Used by the admin stats tests, the dashboard test and ``scripts/dashboard-screenshot.py``:

* ``cached``  ``/cache``    the cache filter (a MISS, then HITs)
* ``limited`` ``/limited`` a local rate limit of 3 requests a minute per client IP
* ``dead``    ``/dead``    upstream ``dead``: an endpoint nobody listens on (503 connect_refused)
* ``all``     ``/``        everything else, to the origin app
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.cache import fetch
from support.gateway import HOST, GatewayFactory, GatewayProcess, free_port

LIMIT = 3


def routes() -> list[dict[str, Any]]:
    return [
        {"name": "cached", "match": {"path_prefix": "/cache"}, "upstream": "app", "filters": {"cache": {}}},
        {
            "name": "limited",
            "match": {"path_prefix": "/limited"},
            "upstream": "app",
            "filters": {"rate_limit": {"requests": LIMIT, "per": "60s", "key": "ip"}},
        },
        {"name": "dead", "match": {"path_prefix": "/dead"}, "upstream": "dead"},
        {"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"},
    ]


def start(gateway: GatewayFactory, cache_dir: Path, **top: Any) -> tuple[GatewayProcess, str]:
    """The gateway (``top``: more top-level keys, e.g. ``workers``) and its dead endpoint's address."""
    dead = f"{HOST}:{free_port()}"
    gw = gateway(
        routes=routes(),
        upstreams={"dead": {"endpoints": [dead]}},
        cache={"dir": str(cache_dir), "max_size": "8MiB", "max_entry_size": "64KiB"},
        **top,
    )
    return gw, dead


@dataclass
class Sent:
    """What :func:`send` sent and what the gateway answered, per route."""

    status: dict[str, list[int]] = field(default_factory=dict)

    def add(self, route: str, code: int) -> None:
        self.status.setdefault(route, []).append(code)

    @property
    def total(self) -> int:
        return sum(len(codes) for codes in self.status.values())

    def count(self, route: str, cls: str = "") -> int:
        return sum(1 for c in self.status.get(route, ()) if not cls or f"{c // 100}xx" == cls)


def send(gw: GatewayProcess, ok: int = 5, missing: int = 2, hits: int = 2, dead: int = 2) -> Sent:
    """``ok`` 200s and ``missing`` 404s on ``all``; one cache MISS then ``hits`` HITs; ``LIMIT + 2``
    requests on ``limited`` (the last 2 refused with 429); ``dead`` 503s. Each on a new connection."""
    sent = Sent()

    def get(route: str, path: str) -> None:
        sent.add(route, fetch(gw, path).status)

    for _ in range(ok):
        get("all", "/status/200")
    for _ in range(missing):
        get("all", "/status/404")
    for _ in range(1 + hits):
        get("cached", "/cache/item?cc=max-age%3D600")
    for _ in range(LIMIT + 2):
        get("limited", "/limited/x")
    for _ in range(dead):
        get("dead", "/dead/x")
    return sent
