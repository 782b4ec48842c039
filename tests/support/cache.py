"""Helpers for the cache tests: a gateway with caching routes, one-shot requests, query strings."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from support.gateway import GatewayFactory, GatewayProcess, OriginProcess, RawClient, Response, request


def cache_routes(**options: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": "keyed",
            "match": {"path_prefix": "/cachek"},
            "upstream": "app",
            "filters": {
                "cache": {
                    "key_headers": ["x-variant"],
                    "ignore_query": ["utm_source"],
                    "sort_query": True,
                    "bypass_headers": ["x-no-cache"],
                }
            },
        },
        {
            "name": "cached",
            "match": {"path_prefix": "/cache"},
            "upstream": "app",
            "filters": {"cache": options},
        },
        {"name": "plain", "match": {"path_prefix": "/"}, "upstream": "app"},
    ]


def start(gateway: GatewayFactory, tmp_path: Path, **options: Any) -> GatewayProcess:
    cache = {"dir": str(tmp_path / "cache"), "max_size": "8MiB", "max_entry_size": "64KiB"}
    cache.update(options.pop("cache", {}))
    top = options.pop("top", {})
    return gateway(routes=cache_routes(**options), cache=cache, **top)


def fetch(
    gw: GatewayProcess,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> Response:
    with RawClient(gw.port) as client:
        return client.request(request(method, path, body, headers=headers), method)


def q(**args: str) -> str:
    return "&".join(f"{k}={quote(v)}" for k, v in args.items())


def app_saw(origin: OriginProcess, path: str) -> int:
    return sum(1 for r in origin.received() if r.path == path)
