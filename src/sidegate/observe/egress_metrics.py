"""The ``sidegate_egress_*`` families of a metrics snapshot: merged across workers, then listed.

A worker's snapshot carries an ``egress`` part when its config has an egress section
(:meth:`sidegate.gateway.Gateway.metrics_snapshot`, from
:meth:`sidegate.egress.observe.EgressStats.snapshot` and the listener's gauges)::

    {"durations": [{"destination", "buckets", "sum"}],      # histogram slots, as the inbound ones
     "bytes": [[destination, direction, n]],                  # direction: sent | received
     "denied": [[rule, n]], "errors": [[destination, error, n]],
     "connections_active": [[destination, n]], "tunnels_active": [[destination, n]],
     "dns": {"cache_hits", "lookups", "failures", "entries"}}

:func:`merge_egress` adds workers' parts (gauges too: each worker's calls are its own), and
:func:`egress_families` lists them as ``(name, type, help, samples)`` for the exposition writer
(:mod:`sidegate.observe.prometheus`), cumulative buckets and ``_sum``/``_count`` included.
``destination`` is the rule that decided, as in ``sidegate_egress_requests_total``.
"""

from __future__ import annotations

from typing import Any

from sidegate.observe.metrics import BUCKETS

Labels = tuple[tuple[str, str], ...]
Sample = tuple[str, Labels, float]
Family = tuple[str, str, str, list[Sample]]

_LE = (*(repr(float(b)) for b in BUCKETS), "+Inf")
_TABLES = ("bytes", "denied", "errors", "connections_active", "tunnels_active")
_DNS = ("cache_hits", "lookups", "failures", "entries")


def merge_egress(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Workers' egress parts added together; None when no worker has an egress listener."""
    if not parts:
        return None
    durations: dict[str, dict[str, Any]] = {}
    tables: dict[str, dict[tuple[Any, ...], int]] = {name: {} for name in _TABLES}
    dns = dict.fromkeys(_DNS, 0)
    for part in parts:
        for row in part.get("durations", ()):
            found = durations.get(row["destination"])
            if found is None:
                durations[row["destination"]] = {**row, "buckets": list(row["buckets"])}
            else:
                found["sum"] += row["sum"]
                found["buckets"] = [a + b for a, b in zip(found["buckets"], row["buckets"], strict=True)]
        for name in _TABLES:
            acc = tables[name]
            for *labels, count in part.get(name, ()):
                acc[tuple(labels)] = acc.get(tuple(labels), 0) + int(count)
        for key in _DNS:
            dns[key] += int((part.get("dns") or {}).get(key, 0))
    out: dict[str, Any] = {"durations": [durations[name] for name in sorted(durations)], "dns": dns}
    for name in _TABLES:
        out[name] = [[*labels, n] for labels, n in sorted(tables[name].items())]
    return out


def _rows(part: dict[str, Any], table: str, *names: str) -> list[Sample]:
    return [
        (("", tuple(zip(names, map(str, labels), strict=True)), float(n)))
        for *labels, n in part.get(table, ())
    ]


def egress_families(part: dict[str, Any]) -> list[Family]:
    """The families of a (merged) egress part, in exposition order."""
    name = "sidegate_egress_request_duration_seconds"
    histogram: list[Sample] = []
    for row in part.get("durations", ()):
        labels: Labels = (("destination", str(row["destination"])),)
        running = 0
        for le, n in zip(_LE, row["buckets"], strict=True):
            running += n
            histogram.append((f"{name}_bucket", (*labels, ("le", le)), running))
        histogram.append((f"{name}_sum", labels, float(row["sum"])))
        histogram.append((f"{name}_count", labels, running))
    families: list[Family] = [
        (
            name,
            "histogram",
            "Duration of outbound calls through the egress listener, from the request head to the "
            "answer's end (a tunnel: to its close), by the rule that decided.",
            histogram,
        ),
        (
            "sidegate_egress_bytes_total",
            "counter",
            "Body and tunnel bytes of finished egress calls: sent (app to destination) and received.",
            _rows(part, "bytes", "destination", "direction"),
        ),
        (
            "sidegate_egress_denied_total",
            "counter",
            "Egress calls denied, by the rule that denied them (a destination's, the default action, "
            "ssrf_guard or loop_detection).",
            _rows(part, "denied", "rule"),
        ),
        (
            "sidegate_egress_errors_total",
            "counter",
            "Egress calls the listener answered itself instead of the destination (refused, failed, "
            "timed out), by the error word of its JSON answer.",
            _rows(part, "errors", "destination", "error"),
        ),
        (
            "sidegate_egress_connections_active",
            "gauge",
            "Egress calls open now per destination, each holding one of its max_connections.",
            _rows(part, "connections_active", "destination"),
        ),
        (
            "sidegate_egress_tunnels_active",
            "gauge",
            "CONNECT tunnels open now per destination.",
            _rows(part, "tunnels_active", "destination"),
        ),
    ]
    dns = part.get("dns") or {}
    families += [
        (
            "sidegate_egress_dns_lookups_total",
            "counter",
            "Destination names looked up in DNS by the egress resolver, by result (its counters "
            "restart when egress.dns changes).",
            [
                ("", (("result", "failed"),), float(dns.get("failures", 0))),
                ("", (("result", "sent"),), float(dns.get("lookups", 0))),
            ],
        ),
        (
            "sidegate_egress_dns_cache_hits_total",
            "counter",
            "Destination names answered from the egress resolver's cache.",
            [("", (), float(dns.get("cache_hits", 0)))],
        ),
        (
            "sidegate_egress_dns_cache_entries",
            "gauge",
            "Names held in the egress resolver's cache.",
            [("", (), float(dns.get("entries", 0)))],
        ),
    ]
    return families
