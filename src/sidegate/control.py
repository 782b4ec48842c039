"""L5: the control plane, what one pod has once whatever the number of workers.

The admin API (with the cache, stats, dashboard, explain and shutdown routes, behind the bearer
token of ``listeners.admin.token_file`` when one is set), the read-only health listener
(:mod:`sidegate.admin.health`), the config file watcher and the signal handlers: SIGHUP reloads;
SIGTERM asks the process to stop after ``drain_delay``; SIGINT, a second SIGTERM and ``POST
/shutdown`` ask it to drain now (:class:`StopRequest`). The single process
(:mod:`sidegate.runtime`) and the supervisor (:mod:`sidegate.supervisor`) each start one, with
themselves as its backend; until :attr:`ControlPlane.listening`, their ``/ready`` says 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sidegate.admin.cache import cache_routes
from sidegate.admin.dashboard import dashboard_routes
from sidegate.admin.egress import EgressLookup, egress_routes
from sidegate.admin.explain import ExplainLookup, TraceLookup, explain_routes
from sidegate.admin.health import health_app
from sidegate.admin.server import serve_app, start_admin_server
from sidegate.admin.shutdown import shutdown_routes
from sidegate.admin.stats import StatsBackend, stats_routes
from sidegate.admin.token import TokenFile, login_routes, token_guard
from sidegate.config.snapshot import CacheSettings, ListenerSpec, Snapshot
from sidegate.server.listener import bind_tcp
from sidegate.watch import watch_config

if TYPE_CHECKING:
    from sidegate.reload import ConfigState

_BACKGROUND: set[asyncio.Task[Any]] = set()


def background(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run ``coro`` as a task that is kept referenced until it ends."""
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


class PodBackend(StatsBackend, Protocol):
    """The admin backend of a pod (the one process, or the supervisor of workers)."""

    @property
    def egress_report(self) -> EgressLookup:
        """``GET /egress``: the egress listener's report, merged across workers (None: off)."""
        ...


class StopRequest:
    """Whether the process was asked to stop, and whether the drain may wait ``drain_delay``.

    Kubernetes sends SIGTERM and removes the pod from its Services at the same time, and the
    removal reaches every node's proxy and load balancer a few seconds later: serving on for
    ``drain_delay`` (not ready, ``Connection: close``) drops nothing that still arrives. SIGINT
    (Ctrl-C at a terminal), a second SIGTERM and ``POST /shutdown`` (a Job's app, done) skip
    what is left of the delay: nothing is on its way then, or someone wants it over.
    """

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.now = asyncio.Event()

    def graceful(self) -> None:
        """SIGTERM: stop after ``drain_delay``; a second one skips the rest of the delay."""
        if self.requested.is_set():
            self.now.set()
        self.requested.set()

    def immediate(self) -> None:
        """Drain now, without ``drain_delay``."""
        self.now.set()
        self.requested.set()

    async def delay(self, seconds: float) -> float:
        """Wait ``seconds``, or less if asked to stop now; returns the seconds waited."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        if seconds > 0 and not self.now.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.now.wait(), seconds)
        return loop.time() - start


class ControlPlane:
    """What one pod has once, whatever the number of workers: the admin API, the health
    listener, the config watcher and the signal handlers (SIGHUP reloads; SIGTERM, SIGINT and
    ``POST /shutdown`` ask ``stop`` to stop).

    ``token_file`` answers the current ``listeners.admin.token_file`` (read on each admin
    request, so a reload that changes it applies at once).
    """

    def __init__(
        self,
        backend: PodBackend,
        path: str,
        stop: StopRequest,
        cache: Callable[[], CacheSettings],
        history: tuple[ExplainLookup, TraceLookup],
        *,
        watched: Callable[[], Sequence[str]] | None = None,
        token_file: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._backend = backend
        self._tokens = TokenFile(token_file)
        self._history = history
        self._cache = cache
        self._path = path
        self._watched = watched  # the files whose change reloads (default: the config file)
        self._stop = stop
        self._stop_watch = asyncio.Event()
        self._admin: asyncio.Server | None = None
        self._health: asyncio.Server | None = None
        self.listening = False  # the admin and health listeners are bound
        self._watcher: asyncio.Task[Any] | None = None

    @classmethod
    def for_config(
        cls,
        backend: PodBackend,
        state: ConfigState,
        stop: StopRequest,
        snapshot: Callable[[], Snapshot],
        history: tuple[ExplainLookup, TraceLookup],
    ) -> ControlPlane:
        """The control plane of whoever serves ``snapshot()`` (the one process, or the supervisor
        of workers): the cache settings and the admin token follow each reload."""
        return cls(
            backend,
            state.path,
            stop,
            lambda: snapshot().cache,
            history,
            watched=state.watched,
            token_file=lambda: snapshot().admin_token_file,
        )

    async def start(self, admin: ListenerSpec, health: ListenerSpec | None = None) -> None:
        """Bind the admin listener and the health listener (None: ``off``), then watch and
        handle signals; a listener that cannot bind raises :class:`OSError` naming its field."""
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
                **egress_routes(backend.egress_report),
                **dashboard_routes(),
                **explain_routes(*self._history),
                **shutdown_routes(self._stop.immediate),
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
        self._watcher = background(
            watch_config(self._path, backend.reload, self._stop_watch, watched=self._watched)
        )
        loop.add_signal_handler(signal.SIGHUP, lambda: background(backend.reload()))
        loop.add_signal_handler(signal.SIGTERM, self._stop.graceful)
        loop.add_signal_handler(signal.SIGINT, self._stop.immediate)

    def stop(self) -> None:
        self._stop_watch.set()
        for server in (self._admin, self._health):
            if server is not None:
                server.close()
        if self._watcher is not None:
            self._watcher.cancel()
