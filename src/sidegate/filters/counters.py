"""Decisions of the policy filters, counted per process for ``/metrics`` and kept across reloads.

Filters may not import the metrics layer; the runtime adds :data:`POLICY` to each worker's metrics
snapshot, and the snapshots of all workers are summed. Every label value is bounded: route and
filter names come from the config, results from a fixed vocabulary, consumers and tenants are
either configured names or ``_other``.

The compiled fast paths (:mod:`sidegate.filters.fastpath`) count their steady rows in tallies
(:mod:`sidegate.policy.tally`) beside the dicts; :meth:`PolicyCounters.snapshot` adds them in.
"""

from __future__ import annotations

from collections import defaultdict

from sidegate.policy.tally import Tally, with_tallies


class PolicyCounters:
    def __init__(self) -> None:
        # (route, filter, result) -> requests; result: ok, missing, invalid, forbidden, limited...
        self.decisions: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        # (route, tenant, consumer) -> authenticated requests
        self.consumers: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        # (route, limit, tenant, result) -> requests under a tenant-keyed limit (quotas)
        self.quotas: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        # The same rows as decisions and consumers, counted by compiled fast paths.
        self.decision_tallies: dict[tuple[str, str, str], Tally] = {}
        self.consumer_tallies: dict[tuple[str, str, str], Tally] = {}

    def snapshot(self) -> dict[str, list[list[object]]]:
        decisions = with_tallies(self.decisions, self.decision_tallies)
        consumers = with_tallies(self.consumers, self.consumer_tallies)
        return {
            "decisions": [[*key, n] for key, n in sorted(decisions.items())],
            "consumers": [[*key, n] for key, n in sorted(consumers.items())],
            "quotas": [[*key, n] for key, n in sorted(self.quotas.items())],
        }


POLICY = PolicyCounters()
