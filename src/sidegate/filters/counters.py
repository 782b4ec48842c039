"""Decisions of the policy filters, counted per process for ``/metrics`` and kept across reloads.

Filters may not import the metrics layer; the runtime adds :data:`POLICY` to each worker's metrics
snapshot, and the snapshots of all workers are summed. Every label value is bounded: route and
filter names come from the config, results from a fixed vocabulary, consumers and tenants are
either configured names or ``_other``.
"""

from __future__ import annotations

from collections import defaultdict


class PolicyCounters:
    def __init__(self) -> None:
        # (route, filter, result) -> requests; result: ok, missing, invalid, forbidden, limited...
        self.decisions: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        # (route, tenant, consumer) -> authenticated requests
        self.consumers: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        # (route, limit, tenant, result) -> requests under a tenant-keyed limit (quotas)
        self.quotas: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)

    def snapshot(self) -> dict[str, list[list[object]]]:
        return {
            "decisions": [[*key, n] for key, n in sorted(self.decisions.items())],
            "consumers": [[*key, n] for key, n in sorted(self.consumers.items())],
            "quotas": [[*key, n] for key, n in sorted(self.quotas.items())],
        }


POLICY = PolicyCounters()
