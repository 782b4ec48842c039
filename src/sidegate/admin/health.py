"""The health listener: ``/live``, ``/ready`` and ``/metrics``, and nothing else.

The kubelet's probes and Prometheus reach a pod from outside it, so this listener binds the pod
IP (``listeners.health.address``, default ``0.0.0.0:9902``) while the admin API, which can reload
the config, purge the cache and show it, stays on loopback. It is read-only by construction: the
route table holds only the three handlers of :func:`~sidegate.admin.app.default_routes` (the same
answers as the admin API's, from the same backend), so every other path is a 404 and no token
is ever asked for. Connection handling is the admin server's (:mod:`sidegate.admin.server`).
"""

from __future__ import annotations

import asyncio

from sidegate.admin.app import AdminApp, AdminBackend, default_routes
from sidegate.admin.server import serve_app

#: The only endpoints of the health listener (HEAD is answered by the GET handlers).
HEALTH_ENDPOINTS = frozenset({("GET", "/live"), ("GET", "/ready"), ("GET", "/metrics")})


def health_app(backend: AdminBackend) -> AdminApp:
    """The read-only route table: the probes and metrics of the admin API, nothing more."""
    return AdminApp(
        {key: handler for key, handler in default_routes(backend).items() if key in HEALTH_ENDPOINTS}
    )


async def start_health_server(host: str, port: int, backend: AdminBackend) -> asyncio.Server:
    """Listen on ``host:port`` and serve the health endpoints; the caller closes the server."""
    return await serve_app(health_app(backend), host, port)
