"""Active health checks of upstream endpoints: what ``/ready`` and the balancer know of the app.

Theory of operation
-------------------
Each endpoint of an upstream with a ``health_check`` gets ``GET path`` every ``interval``, sent
through :func:`~sidegate.upstream.fetch.fetch`: the upstream client proxied requests use, on the
endpoint's own keep-alive pool (a warm connection if one is idle). A 2xx response within
``timeout`` is a success; any other status, a refused or timed-out connect, a reset or an invalid
response is a failure. ``unhealthy_threshold`` failures in a row make a healthy endpoint
unhealthy, ``healthy_threshold`` successes in a row make an unhealthy one healthy. A new
endpoint starts unhealthy and its first success makes it healthy (as in Envoy), so a pod is
ready as soon as its app first answers.

:class:`HealthChecker` keeps the state per ``(upstream, endpoint)``, so a reload keeps it for every
endpoint still checked; it calls ``on_change`` when an endpoint turns healthy or unhealthy. The
state reaches the balancers as a plain table, ``{upstream: {endpoint: healthy}}``
(:meth:`HealthChecker.table`, applied by ``ClusterSet.set_health``), the same table the supervisor
sends its workers: with ``workers: N`` the checks run once per pod, in the supervisor (as Envoy
runs them on its main thread), on pools of its own, so the app sees one check per interval
whatever N is, and ``/ready`` answers for the whole pod from one state.

The balancer skips unhealthy endpoints while one is healthy; when none is, it sends to all of
them anyway (Envoy's panic routing): the checks may be wrong, and a request that may succeed
beats a certain 503. ``/ready`` is what takes an unhealthy app out of the Service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sidegate.config.snapshot import HealthCheckSpec
from sidegate.http.messages import Fetched
from sidegate.upstream.cluster import Cluster, HealthTable
from sidegate.upstream.fetch import BackgroundFetch
from sidegate.upstream.pool import EndpointPool

log = logging.getLogger("sidegate.health")

_MAX_BODY = 64 * 1024  # a health answer larger than this is a failure (nobody reads it)
_USER_AGENT = b"sidegate-health-check"


@dataclass
class EndpointHealth:
    """What the checks found of one endpoint (consecutive and total counts, the last result)."""

    healthy: bool = False
    checked: bool = False  # a check has finished
    successes: int = 0  # in a row
    failures: int = 0  # in a row
    total_ok: int = 0
    total_failed: int = 0
    last_check: float = 0.0  # wall clock
    last_problem: str = ""  # why the last failed check failed
    changed_at: float = 0.0  # wall clock of the last change of ``healthy``

    def report(self) -> dict[str, Any]:
        """The state for ``/clusters``: ``healthy`` / ``unhealthy`` / ``pending`` (not checked yet)."""
        state = "healthy" if self.healthy else ("unhealthy" if self.checked else "pending")
        return {
            "state": state,
            "checks": {"success": self.total_ok, "failure": self.total_failed},
            "last_check": self.last_check or None,
            "last_problem": self.last_problem or None,
            "since": self.changed_at or None,
        }


class _Target:
    """One endpoint being checked: its pool (of the running config), its spec and its timer."""

    __slots__ = ("head", "in_flight", "pool", "spec", "timer")

    def __init__(self, pool: EndpointPool, spec: HealthCheckSpec) -> None:
        self.pool = pool
        self.spec = spec
        host, port = pool.endpoint.host, pool.endpoint.port
        self.head = check_head(spec.path, f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        self.timer: asyncio.TimerHandle | None = None
        self.in_flight = False


def check_head(path: str, host: str) -> bytes:
    """The request a check sends (the path was validated as a request target at config load)."""
    return b"".join(
        (
            b"GET ",
            path.encode("ascii"),
            b" HTTP/1.1\r\nHost: ",
            host.encode("ascii", "replace"),
            b"\r\nUser-Agent: ",
            _USER_AGENT,
            b"\r\nAccept: */*\r\n\r\n",
        )
    )


class HealthChecker:
    """Runs the checks of every upstream that has a ``health_check`` (see the module's docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None]) -> None:
        self._loop = loop
        self._on_change = on_change
        self.states: dict[tuple[str, str], EndpointHealth] = {}
        self._targets: dict[tuple[str, str], _Target] = {}
        self._checked: dict[str, tuple[str, ...]] = {}  # upstream -> its checked endpoints, in order
        self._closed = False

    # -- configuration -------------------------------------------------------------------------

    def update(self, clusters: Mapping[str, Cluster]) -> None:
        """The clusters of the running config (at start and after each reload): endpoints still
        checked keep their state and schedule; new ones start pending and are checked now."""
        before = self.table()
        wanted: dict[tuple[str, str], tuple[EndpointPool, HealthCheckSpec]] = {}
        self._checked = {}
        for name, cluster in clusters.items():
            spec = cluster.spec.health_check
            if spec is None:
                continue
            self._checked[name] = tuple(str(pool.endpoint) for pool in cluster.pools)
            for pool in cluster.pools:
                wanted[(name, str(pool.endpoint))] = (pool, spec)
        for key in [k for k in self._targets if k not in wanted]:
            target = self._targets.pop(key)
            if target.timer is not None:
                target.timer.cancel()
            self.states.pop(key, None)
        for key, (pool, spec) in wanted.items():
            known = self._targets.get(key)
            if known is not None and known.spec == spec:
                known.pool = pool  # a rebuilt cluster: same endpoint, new pool
                continue
            if known is not None and known.timer is not None:
                known.timer.cancel()
            self._targets[key] = fresh = _Target(pool, spec)
            self.states.setdefault(key, EndpointHealth())
            self._schedule(key, fresh, 0.0)
        if self.table() != before:  # endpoints came or went: the balancers learn it now
            self._on_change()

    def close(self) -> None:
        """Stop checking (the process is stopping)."""
        self._closed = True
        for target in self._targets.values():
            if target.timer is not None:
                target.timer.cancel()
        self._targets.clear()

    # -- what the checks found -----------------------------------------------------------------

    def table(self) -> HealthTable:
        """``{upstream: {endpoint: healthy}}`` for every checked endpoint (``ClusterSet.set_health``)."""
        out: HealthTable = {}
        for (upstream, endpoint), state in self.states.items():
            out.setdefault(upstream, {})[endpoint] = state.healthy
        return out

    def readiness(self) -> tuple[bool, str]:
        """``(True, "")`` when every checked upstream has a healthy endpoint, else False and the
        reason, naming the upstream and what its endpoints' last checks found."""
        for upstream, endpoints in self._checked.items():
            states = [(e, self.states.get((upstream, e), EndpointHealth())) for e in endpoints]
            if any(state.healthy for _, state in states):
                continue
            why = "; ".join(f"{e}: {s.last_problem or 'not checked yet'}" for e, s in states)
            return False, f"upstream {upstream} has no healthy endpoint ({why})"
        return True, ""

    def report(self, upstream: str, endpoint: str) -> dict[str, Any] | None:
        """The health of one endpoint for ``/clusters``, or None when it is not checked."""
        state = self.states.get((upstream, endpoint))
        return None if state is None else state.report()

    def annotate(self, upstreams: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add ``health`` to each endpoint of a ``ClusterSet.report()`` (None where unchecked)."""
        for upstream in upstreams:
            for endpoint in upstream["endpoints"]:
                endpoint["health"] = self.report(upstream["name"], endpoint["address"])
        return upstreams

    def metric_rows(self) -> list[dict[str, Any]]:
        """Rows for ``sidegate_upstream_endpoint_healthy`` and ``sidegate_upstream_health_checks_total``."""
        return [
            {
                "upstream": upstream,
                "endpoint": endpoint,
                "healthy": int(state.healthy),
                "success": state.total_ok,
                "failure": state.total_failed,
            }
            for (upstream, endpoint), state in sorted(self.states.items())
        ]

    # -- checking ------------------------------------------------------------------------------

    def _schedule(self, key: tuple[str, str], target: _Target, after: float) -> None:
        if not self._closed:
            target.timer = self._loop.call_later(after, self._check, key, target)

    def _check(self, key: tuple[str, str], target: _Target) -> None:
        target.timer = None
        if self._targets.get(key) is not target:
            return  # replaced or removed by a reload
        self._schedule(key, target, target.spec.interval)
        if target.in_flight:
            return  # the previous check is still running (it ends within its timeout)
        target.in_flight = True
        spec = target.spec

        def done(result: Fetched | None) -> None:
            target.in_flight = False
            self._result(key, result, spec, check.problem)

        check = BackgroundFetch(
            target.pool,
            target.head,
            connect_timeout=spec.timeout,
            timeout=spec.timeout,
            max_body=_MAX_BODY,
            clock=self._loop.time,
            done=done,
            purpose=f"health check {spec.path} of upstream {key[0]}",
            log_failures=False,  # a down app would log every interval: its changes are logged
        )
        check.start()

    def _result(
        self, key: tuple[str, str], result: Fetched | None, spec: HealthCheckSpec, problem: str
    ) -> None:
        state = self.states.get(key)
        if state is None or self._closed:
            return
        state.checked = True
        state.last_check = time.time()
        if result is not None and 200 <= result[0] < 300:
            state.total_ok += 1
            state.successes += 1
            state.failures = 0
            first = state.changed_at == 0.0  # never healthy yet: one success is enough
            if not state.healthy and (first or state.successes >= spec.healthy_threshold):
                self._turn(key, state, True)
            return
        state.total_failed += 1
        state.failures += 1
        state.successes = 0
        state.last_problem = (problem or "failed") if result is None else f"answered {result[0]}, not 2xx"
        if state.healthy and state.failures >= spec.unhealthy_threshold:
            self._turn(key, state, False)
        elif state.failures == 1:  # the first of a run of failures (not one line per interval)
            fields = {"event": "health_check", "upstream": key[0], "endpoint": key[1], "result": "failed"}
            log.info(
                "health check of %s (upstream %s) failed: %s", *key[::-1], state.last_problem, extra=fields
            )

    def _turn(self, key: tuple[str, str], state: EndpointHealth, healthy: bool) -> None:
        state.healthy = healthy
        state.changed_at = time.time()
        word = "healthy" if healthy else "unhealthy"
        why = "" if healthy else f": {state.last_problem}"
        log_at = log.info if healthy else log.warning
        fields = {"event": "health", "upstream": key[0], "endpoint": key[1], "result": word}
        log_at("endpoint %s of upstream %s is %s%s", key[1], key[0], word, why, extra=fields)
        self._on_change()
