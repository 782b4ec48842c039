"""L5: the data plane of one process: inbound listener, proxy, upstream pools and metrics.

Both ways of running build it: :mod:`sidegate.runtime` (``workers: 1``) runs one in its only
process, and each worker of :mod:`sidegate.supervisor` runs one of its own. It knows nothing of
the admin API, the config file or signals; those are the control plane's
(:mod:`sidegate.control`). A reload hands it a new compiled snapshot (:meth:`Gateway.apply`):
requests already running keep the :class:`~sidegate.request.proxy.View` they took.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from sidegate.cache.counters import COUNTERS
from sidegate.config.snapshot import Snapshot
from sidegate.filters.counters import POLICY
from sidegate.observe.metrics import Metrics
from sidegate.request.outcome import explain
from sidegate.request.proxy import Proxy
from sidegate.request.view import View
from sidegate.server.inbound import InboundConnection
from sidegate.server.listener import bind_tcp
from sidegate.server.shared import ListenerShared
from sidegate.server.timers import Sweeper
from sidegate.upstream.cluster import ClusterSet, HealthTable

if TYPE_CHECKING:
    from sidegate.egress.server import EgressServer


class _AccessLogOfTheDay:
    """The egress audit's sink: whatever access-log writer the proxy has now (a reload may
    replace it, or turn it off)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    @property
    def wanted(self) -> bool:
        """Whether a line would be written (the audit makes none otherwise)."""
        return self.proxy.recorder.access_log is not None

    def write(self, line: bytes) -> None:
        writer = self.proxy.recorder.access_log
        if writer is not None:
            writer.write(line)


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
        self.egress: EgressServer | None = None
        self.metrics.config_version = 1
        self.health: HealthTable = {}  # what the active checks found (this process's or the supervisor's)

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
        await self._start_egress()

    async def _start_egress(self) -> None:
        """The egress listener, when the config has an ``egress:`` section; its audit lines go
        with the access log's (one JSON line per outbound call)."""
        snapshot = self.snapshot
        if snapshot.egress is None:
            return
        from sidegate.egress.server import EgressServer

        own = [(s.host, s.port) for s in (snapshot.inbound, snapshot.admin, snapshot.health) if s is not None]
        self.egress = EgressServer(
            self.loop,
            snapshot.egress,
            own_listeners=own,
            audit_sink=_AccessLogOfTheDay(self.proxy),
            head_size=snapshot.limits.head_size,
            header_count=snapshot.limits.header_count,
            head_timeout=snapshot.limits.head_timeout,
            keepalive_idle=snapshot.limits.keepalive_idle,
        )
        # One tracing pipeline: egress spans use the inbound sampler and tracer of the day.
        self.egress.audit.tracing = self.proxy.recorder
        self.egress.audit.recent.resize(snapshot.observability.recent_requests)
        await self.egress.start(reuse_port=self.reuse_port)

    def apply(self, snapshot: Snapshot) -> list[str]:
        """Swap in a new snapshot; returns warnings about settings that need a restart."""
        warnings = []
        old = self.started_with  # what is bound, not what the last reload asked for
        if snapshot.inbound != old.inbound:
            warnings.append(f"listeners.inbound.address stays {old.inbound} until restart")
        if snapshot.admin != old.admin:
            warnings.append(f"listeners.admin.address stays {old.admin} until restart")
        if snapshot.health != old.health:
            warnings.append(f"listeners.health.address stays {old.health or 'off'} until restart")
        if snapshot.workers != old.workers:
            warnings.append(f"workers stays {old.workers} until restart")
        warnings += self._apply_egress(snapshot)
        self.proxy.view = self._view(snapshot)
        self.clusters.set_health(self.health)  # rebuilt clusters learn it too
        self.proxy.recorder.configure(snapshot.observability)
        self.shared.set_limits(snapshot.limits)
        self.snapshot = snapshot
        self.metrics.config_version += 1
        return warnings

    def _apply_egress(self, snapshot: Snapshot) -> list[str]:
        """New destinations take effect for the next call; the listener itself (on, off, its
        address) is bound at start."""
        old, new = self.started_with.egress, snapshot.egress
        if self.egress is None or new is None:
            if (old is None) != (new is None):
                return ["the egress listener stays " + ("off" if old is None else "on") + " until restart"]
            return []
        warnings = []
        if old is not None and (new.host, new.port) != (old.host, old.port):
            warnings.append(f"listeners.egress.address stays {old.address} until restart")
        self.egress.apply(new)
        self.egress.audit.recent.resize(snapshot.observability.recent_requests)
        return warnings

    def metrics_snapshot(self) -> dict[str, Any]:
        self.metrics.connections_active = self.shared.stats.connections_active
        self.metrics.fields_dropped = self.shared.stats.fields_dropped
        numbers = self.metrics.snapshot()
        numbers["client_send_timeouts"] = self.shared.stats.send_timeouts
        numbers["policy"] = POLICY.snapshot()
        if self.egress is not None:
            from sidegate.egress.report import metrics_part

            numbers["policy"]["egress_requests"] = self.egress.audit.counters.rows()
            numbers["egress"] = metrics_part(self.egress)
        numbers["telemetry"] = self.telemetry_counters()
        if any(flt.name == "cache" for route in self.snapshot.routes for flt in route.filters):
            numbers["cache"] = COUNTERS.snapshot()
            from sidegate.admin.cache import store_stats  # LMDB: only when a route caches

            numbers["cache_store"] = store_stats(self.snapshot.cache)
        return numbers

    def set_health(self, table: HealthTable) -> None:
        """The endpoints' health as the checks found it: balancers skip the unhealthy ones."""
        self.health = table
        self.clusters.set_health(table)

    def stop_keep_alive(self) -> None:
        """``drain_delay``: serve on, but every response from now on says ``Connection: close``
        and closes its connection, so keep-alive clients reconnect (to another pod). Idle
        connections stay open: closing one could race a request the client is sending on it."""
        self.shared.keep_alive_off = True
        for conn in self.shared.connections:
            conn.keep_alive_wanted = False

    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), then close the rest."""
        self.shared.draining = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.shared.connections):
            conn.drain()
        deadline = self.loop.time() + timeout
        # The egress listener keeps serving while the drain runs: the app finishing its requests
        # may still call out. Its calls under way get the same deadline.
        while (self.shared.connections or self._egress_busy()) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.shared.connections):
            conn.close()
        if self.egress is not None:
            self.egress.close()
        self.clusters.close()
        self.sweeper.stop()
        self.proxy.recorder.close()  # what the access log and the span exporter still hold goes out

    def _egress_busy(self) -> bool:
        return self.egress is not None and any(self.egress.active.values())

    def explain(self, request_id: str) -> dict[str, Any] | None:
        """The decision record of a recent request of this process, inbound or through the
        egress listener, or None."""
        done = self.proxy.recorder.find(request_id.encode("latin-1", "replace"))
        if done is not None:
            record = explain(done, self.proxy.recorder.wall_offset)
            calls = self.egress_calls_for(request_id)
            if calls:  # the app passed this request's id on to its outbound calls
                record["egress_calls"] = calls
            return record
        if self.egress is not None:
            from sidegate.egress.observe import explain_document

            call = self.egress.audit.recent.find(request_id)
            if call is not None:
                return explain_document(call)
        return None

    def egress_calls_for(self, request_id: str) -> list[dict[str, Any]]:
        """This process's recent egress calls the app sent with ``X-Request-Id: request_id``."""
        return [] if self.egress is None else self.egress.audit.recent.made_for(request_id)

    def egress_report(self) -> dict[str, Any] | None:
        """This process's ``GET /egress`` document; None when the egress listener is off."""
        if self.egress is None:
            return None
        from sidegate.egress.report import egress_report

        return egress_report(self.egress)

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
