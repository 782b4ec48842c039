"""L5: the control plane, what one pod has once whatever the number of workers.

The admin API (with the cache, stats, dashboard and explain routes, behind the bearer token of
``listeners.admin.token_file`` when one is set), the read-only health listener
(:mod:`sidegate.admin.health`), the config file watcher and the signal handlers: SIGHUP reloads,
SIGTERM and SIGINT ask the process to drain and stop. The single process
(:mod:`sidegate.runtime`) and the supervisor (:mod:`sidegate.supervisor`) each start one, with
themselves as its backend; until :attr:`ControlPlane.listening`, their ``/ready`` says 503.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from sidegate.admin.cache import cache_routes
from sidegate.admin.dashboard import dashboard_routes
from sidegate.admin.explain import ExplainLookup, TraceLookup, explain_routes
from sidegate.admin.health import health_app
from sidegate.admin.server import serve_app, start_admin_server
from sidegate.admin.stats import StatsBackend, stats_routes
from sidegate.admin.token import TokenFile, login_routes, token_guard
from sidegate.config.snapshot import CacheSettings, ListenerSpec
from sidegate.server.listener import bind_tcp
from sidegate.watch import watch_config

_BACKGROUND: set[asyncio.Task[Any]] = set()


def background(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run ``coro`` as a task that is kept referenced until it ends."""
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


class ControlPlane:
    """What one pod has once, whatever the number of workers: the admin API, the health
    listener, the config watcher and the signal handlers (SIGHUP reloads; SIGTERM and SIGINT
    set ``stopped``).

    ``token_file`` answers the current ``listeners.admin.token_file`` (read on each admin
    request, so a reload that changes it applies at once).
    """

    def __init__(
        self,
        backend: StatsBackend,
        path: str,
        stopped: asyncio.Event,
        cache: Callable[[], CacheSettings],
        history: tuple[ExplainLookup, TraceLookup],
        *,
        token_file: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._backend = backend
        self._tokens = TokenFile(token_file)
        self._history = history
        self._cache = cache
        self._path = path
        self._stopped = stopped
        self._stop_watch = asyncio.Event()
        self._admin: asyncio.Server | None = None
        self._health: asyncio.Server | None = None
        self.listening = False  # the admin and health listeners are bound
        self._watcher: asyncio.Task[Any] | None = None

    async def start(self, admin: ListenerSpec, health: ListenerSpec | None = None) -> None:
        """Bind the admin listener and the health listener (None: ``off``), then watch and
        handle signals; a listener that cannot bind raises :class:`OSError` naming its field."""
        loop = asyncio.get_running_loop()
        backend = self._backend
        self._admin = await start_admin_server(
            admin.host,
            admin.port,
            backend,
            routes={
                **cache_routes(self._cache),
                **stats_routes(backend),
                **dashboard_routes(),
                **explain_routes(*self._history),
                **login_routes(self._tokens),
            },
            guard=token_guard(self._tokens),
        )
        if health is not None:
            try:
                sock = bind_tcp(health.host, health.port, reuse_port=False)
            except OSError as error:
                raise OSError(error.errno, f"listeners.health.address: {error.strerror}") from None
            self._health = await serve_app(health_app(backend), health.host, health.port, sock=sock)
        self.listening = True
        self._watcher = background(watch_config(self._path, backend.reload, self._stop_watch))
        loop.add_signal_handler(signal.SIGHUP, lambda: background(backend.reload()))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)

    def stop(self) -> None:
        self._stop_watch.set()
        for server in (self._admin, self._health):
            if server is not None:
                server.close()
        if self._watcher is not None:
            self._watcher.cancel()
