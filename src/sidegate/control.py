"""L5: the control plane, what one pod has once whatever the number of workers.

The admin API (with the cache, stats, dashboard and explain routes), the config file watcher and
the signal handlers: SIGHUP reloads, SIGTERM and SIGINT ask the process to drain and stop. The
single process (:mod:`sidegate.runtime`) and the supervisor (:mod:`sidegate.supervisor`) each
start one, with themselves as its backend.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from sidegate.admin.cache import cache_routes
from sidegate.admin.dashboard import dashboard_routes
from sidegate.admin.explain import ExplainLookup, TraceLookup, explain_routes
from sidegate.admin.server import start_admin_server
from sidegate.admin.stats import StatsBackend, stats_routes
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
    """What one pod has once, whatever the number of workers: the admin API, the config
    watcher and the signal handlers (SIGHUP reloads; SIGTERM and SIGINT set ``stopped``)."""

    def __init__(
        self,
        backend: StatsBackend,
        path: str,
        stopped: asyncio.Event,
        cache: Callable[[], CacheSettings],
        history: tuple[ExplainLookup, TraceLookup],
        *,
        watched: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self._backend = backend
        self._history = history
        self._cache = cache
        self._path = path
        self._watched = watched  # the files whose change reloads (default: the config file)
        self._stopped = stopped
        self._stop_watch = asyncio.Event()
        self._admin: asyncio.Server | None = None
        self._watcher: asyncio.Task[Any] | None = None

    async def start(self, admin: ListenerSpec) -> None:
        loop = asyncio.get_running_loop()
        backend = self._backend
        self._admin = await start_admin_server(
            admin.host,
            admin.port,
            backend,
            # Bound here: given a host string, the loop would encode it with the "idna" codec,
            # which imports stringprep and unicodedata (~0.3 MiB of RSS for the process's life).
            sock=bind_tcp(admin.host, admin.port, reuse_port=False),
            routes={
                **cache_routes(self._cache),
                **stats_routes(backend),
                **dashboard_routes(),
                **explain_routes(*self._history),
            },
        )
        self._watcher = background(
            watch_config(self._path, backend.reload, self._stop_watch, watched=self._watched)
        )
        loop.add_signal_handler(signal.SIGHUP, lambda: background(backend.reload()))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)

    def stop(self) -> None:
        self._stop_watch.set()
        if self._admin is not None:
            self._admin.close()
        if self._watcher is not None:
            self._watcher.cancel()
