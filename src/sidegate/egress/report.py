"""The egress listener of one process as the admin API and the metrics see it: plain values.

:func:`metrics_part` is the ``egress`` part of the process's metrics snapshot (merged across
workers and rendered by :mod:`sidegate.observe.egress_metrics`); :func:`egress_report` is this
process's ``GET /egress`` (merged across workers by :func:`sidegate.admin.egress.merge_reports`).
Both run when asked (a scrape, an admin call), never per request: the open tunnels are counted by
walking the listener's connections then, so the tunnel path keeps no gauge of its own.
"""

from __future__ import annotations

from typing import Any

from sidegate.config.egress_spec import DestinationSpec
from sidegate.egress.listener import EgressConnection
from sidegate.egress.policy import DEFAULT_RULE
from sidegate.egress.proxy import GUARD_RULE, LOOP_RULE
from sidegate.egress.state import EgressState

#: The rules that are no destination: what the default action, the SSRF guard and loop
#: detection decided (and ``none`` for requests too malformed to be decided at all).
OTHER_RULES = (DEFAULT_RULE, GUARD_RULE, LOOP_RULE, "none")


def _open_tunnels(state: EgressState) -> dict[str, int]:
    tunnels: dict[str, int] = {}
    for conn in state.connections:
        call = conn.call if isinstance(conn, EgressConnection) else None
        if call is not None and call.tunnel is not None and not call.finished and call.destination:
            name = call.destination.name
            tunnels[name] = tunnels.get(name, 0) + 1
    return tunnels


def metrics_part(state: EgressState) -> dict[str, Any]:
    """The ``egress`` part of a metrics snapshot: the finished calls' numbers and the gauges
    (every configured destination has a gauge sample, 0 when idle)."""
    part = state.audit.stats.snapshot()
    names = [d.name for d in state.spec.destinations]
    names += sorted(n for n in state.active if n not in names)  # removed by a reload, still busy
    tunnels = _open_tunnels(state)
    part["connections_active"] = [[name, state.active.get(name, 0)] for name in names]
    part["tunnels_active"] = [[name, tunnels.get(name, 0)] for name in names]
    stats = state.resolver.stats()
    part["dns"] = {
        "cache_hits": stats.cache_hits,
        "lookups": stats.lookups,
        "failures": stats.failures,
        "entries": stats.entries,
    }
    return part


def _destination(spec: DestinationSpec) -> dict[str, Any]:
    """A destination as compiled (what the policy runs on), credential by name only."""
    return {
        "name": spec.name,
        "host": spec.host,
        "ports": list(spec.ports),
        "schemes": sorted(spec.schemes),
        "methods": sorted(spec.methods) if spec.methods is not None else None,
        "path_prefixes": list(spec.path_prefixes) if spec.path_prefixes is not None else None,
        "allow_private": [str(net) for net in spec.allow_private],
        "origin": f"{spec.origin[0]}:{spec.origin[1]}" if spec.origin is not None else None,
        "timeouts": {
            "connect": spec.connect_timeout,
            "response": spec.response_timeout,
            "idle": spec.idle_timeout,
        },
        "max_connections": spec.max_connections,
        "credential": spec.credentials.name if spec.credentials is not None else None,
    }


def _counts(state: EgressState, rule: str) -> dict[str, int]:
    requests = state.audit.counters.requests
    return {"allowed": requests.get((rule, "allow"), 0), "denied": requests.get((rule, "deny"), 0)}


def egress_report(state: EgressState) -> dict[str, Any]:
    """``GET /egress`` of this process: the destinations with their counts and open calls, the
    rules that are no destination, the credentials' state (never a value), the resolver and the
    keep-alive pools, and the latest refusals."""
    tunnels = _open_tunnels(state)
    destinations = [
        {
            **_destination(spec),
            **_counts(state, spec.name),
            "open": state.active.get(spec.name, 0),
            "tunnels": tunnels.get(spec.name, 0),
        }
        for spec in state.spec.destinations
    ]
    rules = [{"rule": rule, **_counts(state, rule)} for rule in OTHER_RULES]
    credentials = [
        {"destination": destination, **credential.report()}
        for destination, (_, credential) in sorted(state.credentials.items())
    ]
    stats = state.resolver.stats()
    return {
        "listener": state.spec.address,
        "default_action": state.spec.default_action,
        "max_body": state.max_body,
        "destinations": destinations,
        "rules": rules,
        "credentials": credentials,
        "resolver": {
            "servers": [f"{host}:{port}" for host, port in state.spec.dns_servers] or "system",
            "cache_entries": stats.entries,
            "cache_hits": stats.cache_hits,
            "lookups": stats.lookups,
            "failures": stats.failures,
        },
        "pools": [pool.report() for pool in state.pools.values()],
        "connections": len(state.connections),
        "recent_denials": state.audit.recent.recent_denials(),
    }
