"""L5: the composition root. Builds one gateway process from a config file and runs it.

This is the only module that imports every layer. It loads and compiles the config, binds the
listeners, wires the proxy to the server and the metrics, starts the admin API and the config
watcher, and owns the process's life: SIGHUP reloads, SIGTERM/SIGINT drain then exit 0.

Reload is a value swap: a new :class:`~sidegate.request.proxy.View` replaces the proxy's reference;
requests already running keep the view they took, so nothing in flight changes underneath them.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

from sidegate.admin.dashboard import dashboard_routes
from sidegate.admin.server import start_admin_server
from sidegate.admin.stats import StatsBackend, StatsParts, stats_routes
from sidegate.cache.counters import COUNTERS
from sidegate.cache_api import cache_routes
from sidegate.config.compile import compile_checked
from sidegate.config.isolated import Normalised, validate_file, validate_text
from sidegate.config.snapshot import CacheSettings, ListenerSpec, Snapshot
from sidegate.errors import ConfigError
from sidegate.explain_api import Explain, Traces, explain_routes
from sidegate.filters.counters import POLICY
from sidegate.native import describe
from sidegate.observe.aggregate import merge
from sidegate.observe.app_metrics import scrape_app
from sidegate.observe.metrics import Metrics
from sidegate.observe.oplog import configure as configure_logging
from sidegate.observe.prometheus import render
from sidegate.ratelimit.pod import remove_table
from sidegate.request.outcome import explain
from sidegate.request.proxy import Proxy
from sidegate.request.view import View
from sidegate.server.inbound import InboundConnection
from sidegate.server.listener import bind_tcp
from sidegate.server.shared import ListenerShared
from sidegate.server.timers import Sweeper
from sidegate.upstream.cluster import ClusterSet
from sidegate.watch import watch_config

log = logging.getLogger("sidegate")


_BACKGROUND: set[asyncio.Task[Any]] = set()


def background(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run ``coro`` as a task that is kept referenced until it ends."""
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


def load_snapshot(path: str) -> Snapshot:
    """Load, validate and compile a config file (raises ConfigError).

    Validation runs in a child process (:mod:`sidegate.config.isolated`) so that this process
    never imports pydantic or YAML; this blocks until the child exits. From the event loop, run
    ``validate_file`` in an executor and compile on the loop, as :meth:`SingleProcess.reload` does.
    """
    return compile_checked(validate_file(path))


def snapshot_from_text(text: str, source: str) -> Snapshot:
    """Like :func:`load_snapshot`, for config text in memory (blocking too)."""
    return compile_checked(validate_text(text, source))


class Gateway:
    """The data plane of one process: listener, proxy, pools, metrics."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, snapshot: Snapshot, *, reuse_port: bool = False
    ) -> None:
        self.loop = loop
        self.reuse_port = reuse_port
        self.metrics = Metrics()
        self.sweeper = Sweeper(loop)
        limits = snapshot.limits
        self.clusters = ClusterSet(loop, self.sweeper, limits.buffer_high_water, limits.chunk_line)
        self.snapshot = snapshot
        self.started_with = snapshot
        self.proxy = Proxy(loop, self.metrics, self._view(snapshot))
        self.shared = ListenerShared(loop, self.proxy, self.sweeper, snapshot.limits)
        self.server: asyncio.Server | None = None
        self.metrics.config_version = 1

    def _view(self, snapshot: Snapshot) -> View:
        return View(snapshot, self.clusters.update(snapshot.upstreams), self.metrics)

    async def start(self) -> None:
        spec = self.snapshot.inbound
        # Workers share the port through SO_REUSEPORT; a single process binds it alone, so a
        # second gateway started on the same port fails instead of silently sharing traffic.
        sock = bind_tcp(spec.host, spec.port, reuse_port=self.reuse_port)
        self.server = await self.loop.create_server(
            # InboundConnection has every asyncio.Protocol method but derives from the parser's
            # sink base (native calls when compiled); the loop only ever calls the methods.
            lambda: cast(asyncio.Protocol, InboundConnection(self.shared)),
            sock=sock,
            backlog=1024,
        )

    def apply(self, snapshot: Snapshot) -> list[str]:
        """Swap in a new snapshot; returns warnings about settings that need a restart."""
        warnings = []
        old = self.started_with  # what is bound, not what the last reload asked for
        if snapshot.inbound != old.inbound:
            warnings.append(f"listeners.inbound.address stays {old.inbound} until restart")
        if snapshot.admin != old.admin:
            warnings.append(f"listeners.admin.address stays {old.admin} until restart")
        if snapshot.workers != old.workers:
            warnings.append(f"workers stays {old.workers} until restart")
        self.proxy.view = self._view(snapshot)
        self.proxy.recorder.configure(snapshot.observability)
        self.shared.set_limits(snapshot.limits)
        self.snapshot = snapshot
        self.metrics.config_version += 1
        return warnings

    def metrics_snapshot(self) -> dict[str, Any]:
        self.metrics.connections_active = self.shared.stats.connections_active
        self.metrics.fields_dropped = self.shared.stats.fields_dropped
        snapshot = self.metrics.snapshot()
        snapshot["client_send_timeouts"] = self.shared.stats.send_timeouts
        snapshot["policy"] = POLICY.snapshot()
        snapshot["telemetry"] = self.telemetry_counters()
        if any(flt.name == "cache" for route in self.snapshot.routes for flt in route.filters):
            snapshot["cache"] = COUNTERS.snapshot()
            from sidegate.cache.admin import store_stats  # LMDB: only when a route caches

            snapshot["cache_store"] = store_stats(self.snapshot.cache)
        return snapshot

    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), then close the rest."""
        self.shared.draining = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.shared.connections):
            conn.drain()
        deadline = self.loop.time() + timeout
        while self.shared.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.shared.connections):
            conn.close()
        self.clusters.close()
        self.sweeper.stop()
        self.proxy.recorder.close()  # what the access log and the span exporter still hold goes out

    def explain(self, request_id: str) -> dict[str, Any] | None:
        """The decision record of a recent request of this process, or None."""
        done = self.proxy.recorder.find(request_id.encode("latin-1", "replace"))
        return None if done is None else explain(done, self.proxy.recorder.wall_offset)

    def traces(self, trace_id: str, limit: int) -> list[dict[str, Any]]:
        """This process's recent sampled spans, newest first."""
        tracer = self.proxy.recorder.tracer
        return [] if tracer is None else tracer.recent(trace_id, limit)

    def telemetry_counters(self) -> dict[str, list[list[Any]]]:
        """Access log lines and spans as ``[result, count]`` tables (rendered as metrics)."""
        tables: dict[str, list[list[Any]]] = {}
        stats = self.observability_stats()
        if stats["access_log"] is not None:
            tables["access_log"] = [[k, stats["access_log"][k]] for k in ("written", "dropped")]
        tracing = stats["tracing"]
        if tracing is not None:
            export = tracing.get("export") or {}
            tables["spans"] = [
                ["recorded", tracing["finished"]],
                *([k, export[k]] for k in ("exported", "dropped", "failed") if k in export),
            ]
        return tables

    def observability_stats(self) -> dict[str, Any]:
        """Access log and tracing counters (lines written and dropped, spans exported...)."""
        recorder = self.proxy.recorder
        return {
            "access_log": (
                {**recorder.access_log.stats(), "dropped": recorder.access_log.dropped + recorder.log_dropped}
                if recorder.access_log is not None
                else None
            ),
            "tracing": recorder.tracer.stats() if recorder.tracer is not None else None,
        }


class ConfigState:
    """The config file and what became of its last load, for /config_dump and the metrics."""

    def __init__(self, path: str, running: Snapshot) -> None:
        self.path = path
        self.last_error: str | None = None
        self.last_attempt = time.time()
        self.loaded_at = time.time()
        self.restart_pending: list[str] = []
        # What the process is bound to: a reload cannot move these.
        self._running = {"inbound": str(running.inbound), "admin": str(running.admin)}
        self._workers = running.workers

    def dump(self, snapshot: Snapshot, version: int) -> dict[str, Any]:
        config = copy.deepcopy(dict(snapshot.dump))
        listeners = config.get("listeners", {})
        for name, address in self._running.items():  # show what serves, not what waits a restart
            if isinstance(listeners.get(name), dict):
                listeners[name]["address"] = address
        config["workers"] = self._workers
        return {
            "source": self.path,
            "version": version,
            "loaded_at": self.loaded_at,
            "last_reload": {
                "ok": self.last_error is None,
                "error": self.last_error,
                "at": self.last_attempt,
            },
            "restart_pending": self.restart_pending,
            "config": config,
        }


class ControlPlane:
    """What one pod has once, whatever the number of workers: the admin API, the config
    watcher and the signal handlers (SIGHUP reloads; SIGTERM and SIGINT set ``stopped``)."""

    def __init__(
        self,
        backend: StatsBackend,
        path: str,
        stopped: asyncio.Event,
        cache: Callable[[], CacheSettings],
        history: tuple[Explain, Traces],
    ) -> None:
        self._backend = backend
        self._history = history
        self._cache = cache
        self._path = path
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
            routes={
                **cache_routes(self._cache),
                **stats_routes(backend),
                **dashboard_routes(),
                **explain_routes(*self._history),
            },
        )
        self._watcher = background(watch_config(self._path, backend.reload, self._stop_watch))
        loop.add_signal_handler(signal.SIGHUP, lambda: background(backend.reload()))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)

    def stop(self) -> None:
        self._stop_watch.set()
        if self._admin is not None:
            self._admin.close()
        if self._watcher is not None:
            self._watcher.cancel()


class SingleProcess:
    """``workers: 1``: the gateway, the admin API and the watcher in one process."""

    def __init__(self, path: str, snapshot: Snapshot) -> None:
        self.path = path
        self.state = ConfigState(path, snapshot)
        self.snapshot = snapshot
        self.gateway: Gateway | None = None
        self.ready = False
        self.draining = False
        self.stopped = asyncio.Event()
        self._reload_lock = asyncio.Lock()

    # -- AdminBackend --------------------------------------------------------------------------

    def is_live(self) -> bool:
        return True

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        return (True, "ready") if self.ready else (False, "starting")

    async def metrics_text(self, openmetrics: bool = False) -> bytes:
        gateway = self.gateway
        assert gateway is not None
        snapshot = merge([gateway.metrics_snapshot()])
        spec = gateway.snapshot.observability
        app = None
        if spec.app_metrics_url:
            app = await scrape_app(spec.app_metrics_url, spec.app_metrics_timeout, openmetrics=openmetrics)
        return render(snapshot, openmetrics=openmetrics, app=app)

    def config_dump(self) -> dict[str, Any]:
        assert self.gateway is not None
        return self.state.dump(self.gateway.snapshot, self.gateway.metrics.config_version)

    async def explain(self, request_id: str) -> dict[str, Any] | None:
        assert self.gateway is not None
        return self.gateway.explain(request_id)

    async def traces(self, trace_id: str, limit: int) -> dict[str, Any]:
        assert self.gateway is not None
        return {"spans": self.gateway.traces(trace_id, limit), **self.gateway.observability_stats()}

    def stats_parts(self) -> StatsParts:
        assert self.gateway is not None
        metrics = merge([self.gateway.metrics_snapshot()])
        return StatsParts(metrics, self.gateway.clusters.report(), self.config_dump())

    async def reload(self) -> tuple[bool, str]:
        async with self._reload_lock:
            gateway = self.gateway
            assert gateway is not None
            self.state.last_attempt = time.time()
            began = time.monotonic()
            try:
                # The checker server answers in milliseconds, a cold start takes up to a
                # second: wait off the loop. Filters are built on the loop, where they may take
                # loop-bound resources.
                checked = await asyncio.get_running_loop().run_in_executor(None, validate_file, self.path)
                checked_in = round(time.monotonic() - began, 3)
                snapshot = compile_checked(checked)
            except ConfigError as error:
                self.state.last_error = str(error)
                gateway.metrics.config_reload(False)
                version = gateway.metrics.config_version
                fields = reload_fields("rejected", version, issues=issue_list(error))
                fields["seconds"] = round(time.monotonic() - began, 3)
                log.error(
                    "config reload rejected, still serving version %d: %s", version, error, extra=fields
                )
                return False, str(error)
            warnings = gateway.apply(snapshot)
            self.state.restart_pending = warnings
            gateway.metrics.config_reload(True)
            self.state.last_error = None
            self.state.loaded_at = time.time()
            log_warnings(checked)
            for warning in warnings:
                log.warning("config reload: %s", warning, extra={"event": "restart_pending"})
            version = gateway.metrics.config_version
            seconds = round(time.monotonic() - began, 3)
            fields = reload_fields("ok", version, seconds=seconds, checked_in=checked_in)
            msg = "config reloaded: version %d (%.3f s, checked in %.3f s)"
            log.info(msg, version, seconds, checked_in, extra=fields)
            message = f"version {gateway.metrics.config_version}"
            return True, message + ("; " + "; ".join(warnings) if warnings else "")

    # -- life ----------------------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        gateway = self.gateway = Gateway(loop, self.snapshot)
        await gateway.start()
        control = ControlPlane(
            self, self.path, self.stopped, lambda: gateway.snapshot.cache, (self.explain, self.traces)
        )
        await control.start(self.snapshot.admin)
        self.ready = True
        log.info(
            "sidegate serving: inbound http://%s admin http://%s (%d routes; %s)",
            self.snapshot.inbound,
            self.snapshot.admin,
            len(self.snapshot.routes),
            describe(),
            extra={"event": "start", "result": "serving", "config": self.path},
        )
        await self.stopped.wait()
        self.draining = True
        drain = gateway.snapshot.drain_timeout
        log.info("draining: finishing in-flight requests (up to %gs)", drain, extra={"event": "drain"})
        await gateway.drain(gateway.snapshot.drain_timeout)
        control.stop()
        remove_table()  # this process's rate-limit table, if a limit made one
        log.info("stopped", extra={"event": "stop"})
        return 0


def run(config_path: str, log_level: str = "info", log_format: str = "text") -> int:
    """Run a gateway from ``config_path`` until SIGTERM/SIGINT; returns the exit code.

    A config it cannot start with raises :class:`ConfigError` (the CLI reports it).
    """
    configure_logging(log_level, log_format)
    checked = validate_file(config_path)
    snapshot = compile_checked(checked)
    log_warnings(checked)
    if snapshot.workers > 1:
        from sidegate.supervisor import run_supervisor

        return run_supervisor(config_path, snapshot, checked)
    import uvloop

    try:
        return uvloop.run(SingleProcess(config_path, snapshot).serve())
    except OSError as error:
        log.error("cannot start: %s", error.strerror or error, extra={"event": "start", "result": "failed"})
        return 1


def log_warnings(checked: Normalised) -> None:
    """The checker's warnings about a config that works, but not as one may think."""
    for issue in checked.warnings:
        fields = {"event": "config_warning", **issue.fields(checked.source)}
        logging.getLogger("sidegate.config").warning(issue.located(checked.source), extra=fields)


def reload_fields(result: str, version: int, **more: Any) -> dict[str, Any]:
    """The structured fields of a reload's log record."""
    return {"event": "reload", "result": result, "version": version, **more}


def issue_list(error: ConfigError) -> list[dict[str, object]]:
    return [issue.fields(error.source) for issue in error.issues]
