"""Clusters of several endpoints: round-robin, pooled connections per endpoint, a dead endpoint's
failure reported with its own address."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.gateway import GatewayFactory, OriginProcess, RawClient, get

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def second_origin(tmp_path: Path) -> Iterator[OriginProcess]:
    extra = OriginProcess(tmp_path)
    yield extra
    extra.stop()


def test_requests_alternate_between_endpoints(
    gateway: GatewayFactory, origin: OriginProcess, second_origin: OriginProcess
) -> None:
    gw = gateway(upstreams={"app": {"endpoints": [origin.address, second_origin.address]}})
    with RawClient(gw.port) as client:
        for i in range(10):
            assert client.request(get(f"/n{i}")).status == 200
    first = [r.target for r in origin.received()]
    second = [r.target for r in second_origin.received()]
    assert sorted(first + second) == sorted(f"/n{i}" for i in range(10))
    assert len(first) == len(second) == 5, (first, second)  # strict alternation: 5 and 5
    # Each endpoint kept one warm connection: keep-alive pools are per endpoint.
    assert len({r.peer_port for r in origin.received()}) == 1
    assert len({r.peer_port for r in second_origin.received()}) == 1


def test_a_dead_endpoint_is_named_in_the_error(gateway: GatewayFactory, origin: OriginProcess) -> None:
    dead = "127.0.0.1:1"  # nothing listens on port 1
    gw = gateway(upstreams={"app": {"endpoints": [origin.address, dead]}})
    with RawClient(gw.port) as client:
        statuses = [client.request(get(f"/m{i}")) for i in range(4)]
    codes = sorted(r.status for r in statuses)
    assert codes == [200, 200, 503, 503], codes
    errors = [r.json() for r in statuses if r.status == 503]
    assert all(e["error"] == "connect_refused" and dead in e["detail"] for e in errors), errors
