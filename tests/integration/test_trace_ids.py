"""New trace ids as the app sees them: wholly random, and never shared by two worker processes.

A ``workers: 2`` Sidegate with tracing on starts a trace for each request that comes without a
``traceparent``; the app (the recording origin) receives it. Which worker made it is told by
``X-Request-Id``, whose first 8 hex digits are random per process.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from e2e.helpers import rid_prefix
from support.cache import fetch
from support.gateway import GatewayFactory

pytestmark = pytest.mark.timeout(90)

REQUESTS = 300


def test_two_workers_start_traces_with_random_ids_of_their_own(gateway: GatewayFactory) -> None:
    gw = gateway(workers=2, observability={"tracing": {"enabled": True, "sample_ratio": 0.0}})
    by_worker: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for n in range(REQUESTS):
        response = fetch(gw, f"/t{n}")  # a connection each: the kernel spreads them over both workers
        assert response.status == 200
        headers = {name.lower(): value for name, value in json.loads(response.body)["headers"]}
        version, trace_id, span_id, flags = headers["traceparent"].split("-")
        assert (version, flags) == ("00", "00")
        by_worker[rid_prefix({k.lower(): v for k, v in response.headers})].append((trace_id, span_id))
    assert len(by_worker) == 2, "both workers should have answered"
    first, second = ({trace for trace, _ in ids} for ids in by_worker.values())
    assert not first & second
    everything = [ids for worker in by_worker.values() for ids in worker]
    traces = [trace for trace, _ in everything]
    assert len(set(traces)) == REQUESTS
    assert len({span for _, span in everything}) == REQUESTS
    # Neither half of a trace id is a per-process constant or a counter, in either worker.
    for worker in by_worker.values():
        for half in (slice(0, 16), slice(16, 32)):
            values = [int(trace[half], 16) for trace, _ in worker]
            assert len({value >> 32 for value in values}) == len(values)
