"""L5: ``workers: N`` — N data-plane processes on shared listening sockets.

Theory of operation
-------------------
The supervisor process loads and validates the config, then spawns N workers. Each worker binds
its own inbound socket with SO_REUSEPORT (the kernel spreads connections across them) and runs a
:class:`~sidegate.gateway.Gateway`. The supervisor keeps what must be one per pod: the admin
API, the config watcher and the signals.

Supervisor and worker talk over a :mod:`multiprocessing` pipe with small dict messages:

* ``{"op": "reload", "config": Normalised}``: the supervisor has validated a new config (in a
  checker child process, :mod:`sidegate.config.isolated`); the worker compiles that same
  normalised config (never re-reads the file, so all workers run the same config) and swaps;
* ``{"op": "metrics"}``: the worker answers with its metrics snapshot; the supervisor merges
  them so one scrape sees the whole pod;
* ``{"op": "stats"}``: the same snapshot and its upstream endpoints' state, for ``/stats``,
  ``/clusters`` and the dashboard (merged with :func:`sidegate.admin.stats.merge_upstreams`);
* ``{"op": "egress"}``: the worker's egress listener report (``GET /egress``), merged with
  :func:`sidegate.admin.egress.merge_reports`;
* ``{"op": "keep_alive_off"}``: ``drain_delay`` has begun: serve on, every response closing
  its connection;
* ``{"op": "health", "states": {...}}``: the endpoints' health as the supervisor's checks found
  it (:mod:`sidegate.upstream.health`): the worker's balancers skip unhealthy endpoints;
* ``{"op": "drain"}``: finish in-flight requests and exit 0.

A worker that dies is started again; ``/ready`` is true only when every worker is serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import signal
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from sidegate.admin.egress import merge_reports
from sidegate.admin.stats import StatsParts, merge_upstreams
from sidegate.config.compile import compile_checked
from sidegate.config.isolated import Normalised
from sidegate.config.snapshot import Snapshot
from sidegate.control import ControlPlane, StopRequest
from sidegate.errors import ConfigError
from sidegate.gateway import Gateway
from sidegate.observe.aggregate import merge
from sidegate.observe.app_metrics import AppScrape, scrape_app
from sidegate.observe.metrics import Metrics
from sidegate.observe.oplog import configure as configure_logging
from sidegate.observe.oplog import settings as log_settings
from sidegate.observe.prometheus import render
from sidegate.ratelimit.pod import name_table_for_workers, remove_table
from sidegate.reload import ConfigState, Reloader, Swapped
from sidegate.server.listener import bind_tcp
from sidegate.server.timers import Sweeper
from sidegate.upstream.cluster import ClusterSet
from sidegate.upstream.health import HealthChecker

log = logging.getLogger("sidegate.supervisor")


def worker_main(
    path: str, checked: Normalised, channel: Connection, index: int, logging_setup: tuple[int, str]
) -> None:
    """Entry point of a worker process (spawned); ``logging_setup``: the supervisor's level and format."""
    import uvloop

    configure_logging(*logging_setup, worker=index)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which drains us
    uvloop.run(_worker(path, checked, channel))


async def _worker(path: str, checked: Normalised, channel: Connection) -> None:
    loop = asyncio.get_running_loop()
    gateway = Gateway(loop, compile_checked(checked), reuse_port=True)
    await gateway.start()
    done = asyncio.Event()
    draining: list[asyncio.Task[None]] = []

    async def _drain() -> None:
        await gateway.drain(gateway.snapshot.drain_timeout)
        done.set()

    def drain() -> None:
        if not draining:
            draining.append(loop.create_task(_drain()))

    signalled: list[bool] = []  # SIGTERMs sent to this worker itself

    def terminated() -> None:
        """SIGTERM sent to this worker itself (the supervisor's drain reaches it by message):
        the same sequence as the single process, a second one drains at once. Only this
        worker's own signals count: a group SIGTERM can reach it after the supervisor's
        ``keep_alive_off`` message, and is still its first."""
        if signalled or gateway.snapshot.drain_delay <= 0:
            drain()
            return
        signalled.append(True)
        gateway.stop_keep_alive()
        loop.call_later(gateway.snapshot.drain_delay, drain)

    def on_message() -> None:
        try:
            message: dict[str, Any] = channel.recv()
        except (EOFError, OSError):  # the supervisor is gone: stop serving
            loop.remove_reader(channel.fileno())
            drain()
            return
        op = message.get("op")
        if op == "metrics":
            channel.send({"id": message["id"], "metrics": gateway.metrics_snapshot()})
        elif op == "explain":
            request_id = message["request_id"]
            record, calls = gateway.explain(request_id), gateway.egress_calls_for(request_id)
            channel.send({"id": message["id"], "record": record, "egress_calls": calls})
        elif op == "traces":
            spans = gateway.traces(message["trace_id"], message["limit"])
            channel.send({"id": message["id"], "spans": spans, **gateway.observability_stats()})
        elif op == "egress":
            channel.send({"id": message["id"], "report": gateway.egress_report()})
        elif op == "stats":
            report = {"metrics": gateway.metrics_snapshot(), "upstreams": gateway.clusters.report()}
            channel.send({"id": message["id"], **report})
        elif op == "reload":
            try:
                warnings = gateway.apply(compile_checked(message["config"]))
                channel.send({"id": message["id"], "ok": True, "warnings": warnings})
            except ConfigError as error:
                channel.send({"id": message["id"], "ok": False, "error": str(error)})
        elif op == "health":
            gateway.set_health(message["states"])
        elif op == "keep_alive_off":
            gateway.stop_keep_alive()
        elif op == "drain":
            drain()

    loop.add_reader(channel.fileno(), on_message)
    loop.add_signal_handler(signal.SIGTERM, terminated)
    channel.send({"ready": True})
    await done.wait()


class _Worker:
    """The supervisor's handle on one worker process."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: BaseProcess | None = None
        self.channel: Connection | None = None
        self.ready = False
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}


class Supervisor:
    """Runs N workers, the admin API and the watcher; implements the admin backend."""

    def __init__(self, path: str, snapshot: Snapshot, checked: Normalised) -> None:
        self.path = path
        self.snapshot = snapshot
        self.checked = checked
        self.state = ConfigState(path, snapshot)
        self.metrics = Metrics()  # the supervisor's own: reloads and config version
        self.metrics.config_version = 1
        self.workers = [_Worker(i) for i in range(snapshot.workers)]
        self.draining = False
        self.stop = StopRequest()
        self.control: ControlPlane | None = None
        self._ids = itertools.count(1)
        self._mp = multiprocessing.get_context("spawn")
        self._reload = Reloader(self.state, self.metrics, self._swap, log)
        # Active health checks run here, once per pod, on pools of the supervisor's own; the
        # workers get the results as a table (``{"op": "health"}``).
        self.health: HealthChecker | None = None
        self._check_clusters: ClusterSet | None = None

    # -- workers -------------------------------------------------------------------------------

    def _spawn(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        mine, theirs = self._mp.Pipe()
        process = self._mp.Process(
            target=worker_main,
            args=(self.path, self.checked, theirs, worker.index, log_settings()),
            daemon=True,
        )
        process.start()
        theirs.close()
        worker.process, worker.channel, worker.ready = process, mine, False
        loop.add_reader(mine.fileno(), self._on_message, worker)

    def _on_message(self, worker: _Worker) -> None:
        channel = worker.channel
        assert channel is not None
        try:
            message: dict[str, Any] = channel.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(channel.fileno())
            channel.close()
            worker.channel, worker.ready = None, False
            for future in worker.waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("worker exited"))
            worker.waiting.clear()
            if not self.draining:
                fields = {"event": "worker_exit", "worker": worker.index}
                log.error("worker %d exited unexpectedly; starting it again", worker.index, extra=fields)
                asyncio.get_running_loop().call_later(0.5, self._respawn, worker)
            return
        if message.get("ready"):
            worker.ready = True
            if self.health is not None and self.health.states:
                with contextlib.suppress(OSError):
                    channel.send({"op": "health", "states": self.health.table()})
            return
        ident = int(message.get("id", -1))
        waiter = worker.waiting.get(ident)
        if waiter is not None:
            del worker.waiting[ident]
            if not waiter.done():
                waiter.set_result(message)

    def _tell_workers(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every running worker (no answer awaited)."""
        for worker in self.workers:
            if worker.channel is not None:
                with contextlib.suppress(OSError):
                    worker.channel.send(message)

    def _respawn(self, worker: _Worker) -> None:
        if not self.draining:
            if worker.process is not None:
                worker.process.join(0)
            self._spawn(worker)

    async def _ask(self, worker: _Worker, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        if worker.channel is None:
            raise ConnectionError(f"worker {worker.index} is not running")
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        worker.waiting[ident] = future
        worker.channel.send({**message, "id": ident})
        return await asyncio.wait_for(future, timeout)

    # -- AdminBackend --------------------------------------------------------------------------

    def is_live(self) -> bool:
        return True

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        waiting = self.not_ready()
        if waiting:
            return False, "; ".join(waiting)
        if self.health is not None:
            healthy, why = self.health.readiness()
            if not healthy:
                return False, why
        return True, "ready"

    def not_ready(self) -> list[str]:
        """What keeps ``/ready`` at 503, one reason per check (a worker is ready once its
        inbound socket is bound and it serves)."""
        reasons = []
        serving = sum(w.ready for w in self.workers)
        if serving < len(self.workers):
            reasons.append(f"{serving} of {len(self.workers)} workers serving")
        if self.control is None or not self.control.listening:
            reasons.append("admin and health listeners not bound")
        return reasons

    async def metrics_text(self, openmetrics: bool = False) -> bytes:
        """Every serving worker's numbers, merged with the supervisor's own (reloads, version),
        and the app's metrics when configured (scraped once, here, while the workers answer)."""
        spec = self.snapshot.observability
        asks = [self._ask(w, {"op": "metrics"}) for w in self.workers if w.ready]
        app: AppScrape | None = None
        if spec.app_metrics_url:
            scrape = scrape_app(spec.app_metrics_url, spec.app_metrics_timeout, openmetrics=openmetrics)
            replies, app = await asyncio.gather(asyncio.gather(*asks, return_exceptions=True), scrape)
        else:
            replies = await asyncio.gather(*asks, return_exceptions=True)
        per_worker = [r["metrics"] for r in replies if isinstance(r, dict)]
        own = self.metrics.snapshot()
        own["health"] = self.health.metric_rows() if self.health is not None else []
        merged = merge([*per_worker, own])
        merged["config_version"] = self.metrics.config_version
        return render(merged, openmetrics=openmetrics, app=app)

    async def explain(self, request_id: str) -> dict[str, Any] | None:
        """The record from whichever worker served the request (each keeps its own ring), with
        the egress calls the app made under its id on any worker (its outbound connections are
        spread over the workers as the inbound ones are)."""
        replies = await self._ask_all({"op": "explain", "request_id": request_id})
        calls = [{**c, "worker": index} for index, r in replies for c in r.get("egress_calls") or ()]
        calls.sort(key=lambda call: float(call["time"]))
        for index, reply in replies:
            record = reply.get("record")
            if record is not None:
                if calls and record.get("type") != "egress":
                    record["egress_calls"] = calls
                return {**record, "worker": index}
        return None

    async def traces(self, trace_id: str, limit: int) -> dict[str, Any]:
        """Every worker's recent spans, newest first, and their counters."""
        replies = await self._ask_all({"op": "traces", "trace_id": trace_id, "limit": limit})
        spans = sorted((s for _, r in replies for s in r["spans"]), key=lambda s: s["start"], reverse=True)
        return {
            "spans": spans[:limit],
            "workers": [
                {"worker": index, "access_log": r["access_log"], "tracing": r["tracing"]}
                for index, r in replies
            ],
        }

    async def _ask_all(self, message: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
        serving = [w for w in self.workers if w.ready]
        replies = await asyncio.gather(*(self._ask(w, message) for w in serving), return_exceptions=True)
        return [(w.index, r) for w, r in zip(serving, replies, strict=True) if isinstance(r, dict)]

    async def egress_report(self) -> dict[str, Any] | None:
        """Every serving worker's egress listener, merged (None when egress is off)."""
        replies = await self._ask_all({"op": "egress"})
        return merge_reports([(index, r["report"]) for index, r in replies if r.get("report")])

    async def stats_parts(self) -> StatsParts:
        """Every serving worker's metrics and upstream state, merged (the supervisor's own too)."""
        answers = [reply for _, reply in await self._ask_all({"op": "stats"})]
        metrics = merge([*(r["metrics"] for r in answers), self.metrics.snapshot()])
        metrics["config_version"] = self.metrics.config_version
        upstreams = merge_upstreams(r["upstreams"] for r in answers)
        if self.health is not None:
            self.health.annotate(upstreams)
        return StatsParts(metrics, upstreams, self.config_dump(), len(self.workers))

    def config_dump(self) -> dict[str, Any]:
        dump = self.state.dump(self.snapshot, self.metrics.config_version)
        dump["workers"] = [
            {"index": w.index, "pid": w.process.pid if w.process else None, "ready": w.ready}
            for w in self.workers
        ]
        return dump

    async def reload(self) -> tuple[bool, str]:
        return await self._reload()

    async def _swap(self, checked: Normalised, snapshot: Snapshot) -> Swapped:
        """Send the checked config to every worker (each compiles it) and count who confirmed."""
        self.checked, self.snapshot = checked, snapshot
        replies = await asyncio.gather(
            *(self._ask(w, {"op": "reload", "config": checked}) for w in self.workers),
            return_exceptions=True,
        )
        self._check(snapshot)
        failed = [r for r in replies if not (isinstance(r, dict) and r.get("ok"))]
        warnings = sorted({w for r in replies if isinstance(r, dict) for w in r.get("warnings", ())})
        self.metrics.config_version += 1
        return Swapped(warnings, unconfirmed=len(failed))

    # -- life ----------------------------------------------------------------------------------

    async def serve(self) -> int:
        table = name_table_for_workers()  # the workers' shared rate-limit table (made on first use)
        try:
            return await self._serve()
        finally:
            remove_table(table)

    def _check(self, snapshot: Snapshot) -> None:
        """Start (or carry over) the health checks of ``snapshot``'s upstreams."""
        if self._check_clusters is None or self.health is None:
            loop = asyncio.get_running_loop()
            limits = snapshot.limits
            self._check_clusters = ClusterSet(
                loop, Sweeper(loop), limits.buffer_high_water, limits.chunk_line
            )
            self.health = HealthChecker(loop, self._health_changed)
        self.health.update(self._check_clusters.update(snapshot.upstreams))

    def _health_changed(self) -> None:
        if self.health is not None:
            self._tell_workers({"op": "health", "states": self.health.table()})

    async def _serve(self) -> int:
        # The pod's own listeners first: one that cannot bind stops the start before any worker runs.
        control = self.control = ControlPlane.for_config(
            self, self.state, self.stop, lambda: self.snapshot, (self.explain, self.traces)
        )
        await control.start(self.snapshot.admin, self.snapshot.health)
        self._check(self.snapshot)
        for worker in self.workers:
            self._spawn(worker)
        log.info(
            "sidegate supervisor: %d workers on http://%s, admin http://%s, health %s",
            len(self.workers),
            self.snapshot.inbound,
            self.snapshot.admin,
            f"http://{self.snapshot.health}" if self.snapshot.health else "off",
            extra={"event": "start", "result": "serving", "config": self.path, "workers": len(self.workers)},
        )
        await self.stop.requested.wait()
        self.draining = True
        delay = self.snapshot.drain_delay
        if delay > 0 and not self.stop.now.is_set():
            self._tell_workers({"op": "keep_alive_off"})
            log.info(
                "stopping: serving %gs more (not ready, Connection: close) before the drain",
                delay,
                extra={"event": "drain_delay", "seconds": delay},
            )
            await self.stop.delay(delay)
        log.info(
            "draining: finishing in-flight requests (up to %gs)",
            self.snapshot.drain_timeout,
            extra={"event": "drain"},
        )
        self._tell_workers({"op": "drain"})
        deadline = time.monotonic() + self.snapshot.drain_timeout + 5
        while any(w.process and w.process.is_alive() for w in self.workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for worker in self.workers:
            if worker.process is not None and worker.process.is_alive():
                worker.process.kill()
        if self.health is not None and self._check_clusters is not None:
            self.health.close()
            self._check_clusters.close()
        control.stop()
        return 0


def run_supervisor(path: str, snapshot: Snapshot, checked: Normalised) -> int:
    import uvloop

    try:
        # The workers bind with SO_REUSEPORT; a plain bind first proves nobody else holds the port.
        bind_tcp(snapshot.inbound.host, snapshot.inbound.port, reuse_port=False).close()
        return uvloop.run(Supervisor(path, snapshot, checked).serve())
    except OSError as error:
        log.error("cannot start: %s", error.strerror or error, extra={"event": "start", "result": "failed"})
        return 1
