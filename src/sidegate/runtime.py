"""L5: the composition root. Runs a gateway from a config file, in one process or with workers.

:func:`run` checks and compiles the config, then either runs :class:`SingleProcess` (``workers:
1``: the data plane, :class:`~sidegate.gateway.Gateway`, and the control plane,
:class:`~sidegate.control.ControlPlane`, in this process) or hands over to the supervisor
(:mod:`sidegate.supervisor`, ``workers: N``). It owns the process's life: SIGHUP reloads,
SIGTERM serves on for ``drain_delay`` (not ready, ``Connection: close``) then drains and exits 0;
SIGINT, a second SIGTERM or ``POST /shutdown`` drain at once.

Reload is a value swap (the routine is :class:`~sidegate.reload.Reloader`, shared with the
supervisor): a new :class:`~sidegate.request.proxy.View` replaces the proxy's reference; requests
already running keep the view they took, so nothing in flight changes underneath them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sidegate.admin.egress import merge_reports
from sidegate.admin.stats import StatsParts
from sidegate.config.compile import compile_checked
from sidegate.config.isolated import Normalised, validate_file
from sidegate.config.snapshot import Snapshot
from sidegate.control import ControlPlane, StopRequest
from sidegate.gateway import Gateway
from sidegate.native import describe
from sidegate.observe.aggregate import merge
from sidegate.observe.app_metrics import scrape_app
from sidegate.observe.oplog import configure as configure_logging
from sidegate.observe.prometheus import render
from sidegate.ratelimit.pod import remove_table
from sidegate.reload import ConfigState, Reloader, Swapped, log_warnings
from sidegate.upstream.health import HealthChecker

log = logging.getLogger("sidegate")


class SingleProcess:
    """``workers: 1``: the gateway, the admin API and the watcher in one process."""

    def __init__(self, path: str, snapshot: Snapshot) -> None:
        self.path = path
        self.state = ConfigState(path, snapshot)
        self.snapshot = snapshot
        self.gateway: Gateway | None = None
        self.control: ControlPlane | None = None
        self.draining = False
        self.stop = StopRequest()
        self._reload: Reloader | None = None
        self.health: HealthChecker | None = None

    # -- AdminBackend --------------------------------------------------------------------------

    def is_live(self) -> bool:
        return True

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        waiting = self.not_ready()
        if waiting:
            return False, "starting: " + "; ".join(waiting)
        if self.health is not None:
            healthy, why = self.health.readiness()
            if not healthy:
                return False, why
        return True, "ready"

    def not_ready(self) -> list[str]:
        """What keeps ``/ready`` at 503 while starting, one reason per check."""
        reasons = []
        if self.gateway is None or self.gateway.server is None:
            reasons.append("inbound listener not bound")
        if self.control is None or not self.control.listening:
            reasons.append("admin and health listeners not bound")
        return reasons

    async def metrics_text(self, openmetrics: bool = False) -> bytes:
        gateway = self.gateway
        assert gateway is not None
        numbers = merge([gateway.metrics_snapshot()])
        numbers["health"] = self.health.metric_rows() if self.health is not None else []
        spec = gateway.snapshot.observability
        app = None
        if spec.app_metrics_url:
            app = await scrape_app(spec.app_metrics_url, spec.app_metrics_timeout, openmetrics=openmetrics)
        return render(numbers, openmetrics=openmetrics, app=app)

    def config_dump(self) -> dict[str, Any]:
        assert self.gateway is not None
        return self.state.dump(self.gateway.snapshot, self.gateway.metrics.config_version)

    async def explain(self, request_id: str) -> dict[str, Any] | None:
        assert self.gateway is not None
        return self.gateway.explain(request_id)

    async def traces(self, trace_id: str, limit: int) -> dict[str, Any]:
        assert self.gateway is not None
        return {"spans": self.gateway.traces(trace_id, limit), **self.gateway.observability_stats()}

    def egress_report(self) -> dict[str, Any] | None:
        assert self.gateway is not None
        report = self.gateway.egress_report()
        return None if report is None else merge_reports([(0, report)])

    def stats_parts(self) -> StatsParts:
        assert self.gateway is not None
        metrics = merge([self.gateway.metrics_snapshot()])
        upstreams = self.gateway.clusters.report()
        if self.health is not None:
            self.health.annotate(upstreams)
        return StatsParts(metrics, upstreams, self.config_dump())

    async def reload(self) -> tuple[bool, str]:
        assert self._reload is not None
        return await self._reload()

    async def _swap(self, checked: Normalised, snapshot: Snapshot) -> Swapped:
        assert self.gateway is not None and self.health is not None
        warnings = self.gateway.apply(snapshot)
        self.health.update(self.gateway.clusters.clusters)
        return Swapped(warnings)

    # -- life ----------------------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        gateway = self.gateway = Gateway(loop, self.snapshot)
        await gateway.start()
        health = self.health = HealthChecker(loop, lambda: gateway.set_health(health.table()))
        health.update(gateway.clusters.clusters)
        self._reload = Reloader(self.state, gateway.metrics, self._swap, log)
        control = self.control = ControlPlane.for_config(
            self, self.state, self.stop, lambda: gateway.snapshot, (self.explain, self.traces)
        )
        await control.start(self.snapshot.admin, self.snapshot.health)
        log.info(
            "sidegate serving: inbound http://%s admin http://%s health %s (%d routes; %s)",
            self.snapshot.inbound,
            self.snapshot.admin,
            f"http://{self.snapshot.health}" if self.snapshot.health else "off",
            len(self.snapshot.routes),
            describe(),
            extra={"event": "start", "result": "serving", "config": self.path},
        )
        await self.stop.requested.wait()
        self.draining = True
        delay = gateway.snapshot.drain_delay
        if delay > 0 and not self.stop.now.is_set():
            gateway.stop_keep_alive()
            log.info(
                "stopping: serving %gs more (not ready, Connection: close) before the drain",
                delay,
                extra={"event": "drain_delay", "seconds": delay},
            )
            await self.stop.delay(delay)
        drain = gateway.snapshot.drain_timeout
        log.info("draining: finishing in-flight requests (up to %gs)", drain, extra={"event": "drain"})
        await gateway.drain(drain)
        health.close()
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
