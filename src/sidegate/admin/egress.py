"""``GET /egress``: the egress listener as an operator wants to see it in one place.

    curl localhost:9901/egress

The destinations as compiled, with allowed and denied counts and the calls open against each
one's ``max_connections``; the rules that are no destination (the default action, the SSRF guard,
loop detection); each credential's state (kind, ok or unavailable, last refresh, seconds left,
last problem: never a secret); the resolver's cache; the keep-alive pools; the latest refusals.

Each process reports its own (:func:`sidegate.egress.report.egress_report`); with workers the
supervisor adds them up here (:func:`merge_reports`), as ``/clusters`` does: counts and pools
summed, each credential shown once with the worst state a worker knows (``unavailable`` over
``ok`` over ``unknown``: every worker holds its own OAuth2 token and reads its own files) and per
worker under ``workers``, refusals newest first across workers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from sidegate.admin.app import AdminRequest, AdminResponse, Handler, error_response

#: This process's report, or the supervisor's merge of its workers'; None when egress is off.
EgressLookup = Callable[[], dict[str, Any] | Awaitable[dict[str, Any] | None] | None]

#: Refusals shown, newest first.
RECENT_DENIALS = 50

_COUNTED = ("allowed", "denied", "open", "tunnels")
_RESOLVER_COUNTED = ("cache_entries", "cache_hits", "lookups", "failures")
#: Which worker's credential state the merged one shows: a failing one first, then one that
#: works; ``unknown`` (a worker that has not used it yet) only when no worker knows more.
_STATE_ORDER = {"unavailable": 0, "ok": 1, "unknown": 2}


def _merge_credentials(rows: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    by_destination: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for worker, row in rows:
        by_destination.setdefault(row["destination"], []).append((worker, row))
    out = []
    for destination, seen in sorted(by_destination.items()):
        states = [row for _, row in seen]
        worst = min(states, key=lambda r: _STATE_ORDER.get(str(r.get("state")), 2))
        refreshed = [r["last_refresh"] for r in states if r.get("last_refresh")]
        # The soonest a working token runs out (a worker with none says 0: not the pod's answer).
        expiring = [
            r["expires_in"] for r in states if r.get("state") == "ok" and r.get("expires_in") is not None
        ]
        merged = {
            **states[0],
            "state": worst.get("state"),
            "problem": next((r["problem"] for r in states if r.get("problem")), ""),
            "last_refresh": max(refreshed) if refreshed else None,
            "expires_in": min(expiring) if expiring else worst.get("expires_in"),
            "destination": destination,
        }
        if "fetches" in states[0]:
            merged["fetches"] = sum(int(r.get("fetches", 0)) for r in states)
        merged["workers"] = [{"worker": worker, **row} for worker, row in seen]
        out.append(merged)
    return out


def _merge_pools(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pools: dict[str, dict[str, Any]] = {}
    for report in reports:
        for pool in report["pools"]:
            found = pools.get(pool["address"])
            if found is None:
                pools[pool["address"]] = dict(pool)
                continue
            found["idle"] += pool["idle"]
            found["connects"] += pool["connects"]
            failures = [f for f in (found.get("last_failure"), pool.get("last_failure")) if f]
            found["last_failure"] = max(failures, key=lambda f: float(f["at"]), default=None)
            oks = [float(t) for t in (found.get("last_ok"), pool.get("last_ok")) if t]
            found["last_ok"] = max(oks, default=None)
            if "failing" in (found["state"], pool["state"]) and found["state"] != pool["state"]:
                failed_at = float(found["last_failure"]["at"]) if found["last_failure"] else 0.0
                recovered = found["last_ok"] is not None and found["last_ok"] > failed_at
                found["state"] = "ok" if recovered else "failing"
            elif found["state"] == "unknown":
                found["state"] = pool["state"]
    return [pools[address] for address in sorted(pools)]


def merge_reports(reports: list[tuple[int, dict[str, Any]]]) -> dict[str, Any] | None:
    """Workers' ``(index, report)`` pairs as one report (see the module docstring)."""
    if not reports:
        return None
    first = reports[0][1]
    destinations: dict[str, dict[str, Any]] = {}
    for _, report in reports:
        for row in report["destinations"]:
            found = destinations.setdefault(row["name"], {**row, **dict.fromkeys(_COUNTED, 0)})
            for key in _COUNTED:
                found[key] += int(row[key])
    rules: dict[str, dict[str, Any]] = {}
    for _, report in reports:
        for row in report["rules"]:
            found = rules.setdefault(row["rule"], {"rule": row["rule"], "allowed": 0, "denied": 0})
            found["allowed"] += int(row["allowed"])
            found["denied"] += int(row["denied"])
    resolver = dict(first["resolver"])
    for key in _RESOLVER_COUNTED:
        resolver[key] = sum(int(report["resolver"][key]) for _, report in reports)
    denials = [{**row, "worker": index} for index, report in reports for row in report["recent_denials"]]
    denials.sort(key=lambda row: float(row["time"]), reverse=True)
    return {
        **first,
        "workers": len(reports),
        "destinations": list(destinations.values()),
        "rules": list(rules.values()),
        "credentials": _merge_credentials(
            [(index, row) for index, report in reports for row in report["credentials"]]
        ),
        "resolver": resolver,
        "pools": _merge_pools([report for _, report in reports]),
        "connections": sum(int(report["connections"]) for _, report in reports),
        "recent_denials": denials[:RECENT_DENIALS],
    }


def egress_routes(lookup: EgressLookup) -> dict[tuple[str, str], Handler]:
    """Admin route ``GET /egress``; 404 with the reason when the config has no egress section."""

    async def egress(_: AdminRequest) -> AdminResponse:
        report = lookup()
        if inspect.isawaitable(report):
            report = await report
        if report is None:
            return error_response(
                404,
                "the egress listener is off: the config has no egress section "
                "(add `egress: {destinations: [...]}` to turn it on)",
            )
        return AdminResponse.json(200, report, pretty=True)

    return {("GET", "/egress"): egress}
