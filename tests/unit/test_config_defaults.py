"""Defaults live in the config model: what the compiler builds from a minimal file is the model's.

The snapshot types that code builds as placeholders, before a config is applied (a filter before
``bind``, the proxy before ``configure``, a route in a test), keep defaults of their own; these
tests hold them to the model's, so that the two can never say different things.
"""

from __future__ import annotations

from sidegate.config.check import check_text
from sidegate.config.compile import compile_checked
from sidegate.config.snapshot import (
    ForwardedSpec,
    IdentitySpec,
    ObservabilitySpec,
    RedisSpec,
    Route,
    Snapshot,
    Timeouts,
)
from support.configs import MINIMAL


def minimal() -> Snapshot:
    return compile_checked(check_text(MINIMAL, "minimal.yaml"))


def test_placeholder_defaults_are_the_models() -> None:
    snapshot = minimal()
    assert snapshot.forwarded == ForwardedSpec()
    assert snapshot.identity == IdentitySpec()
    assert snapshot.redis == RedisSpec()
    assert snapshot.observability == ObservabilitySpec()


def test_a_routes_defaults_are_the_models() -> None:
    route = minimal().routes[0]
    placeholder = Route(name="all", upstream="app")
    assert route.timeouts == Timeouts() == placeholder.timeouts
    assert route.max_body == placeholder.max_body


def test_the_defaults_that_protect_the_pod() -> None:
    """DESIGN.md's table, as the model gives it."""
    snapshot = minimal()
    limits = snapshot.limits
    assert (limits.head_size, limits.header_count) == (32 * 1024, 100)
    assert (limits.head_timeout, limits.body_idle, limits.keepalive_idle) == (10.0, 30.0, 60.0)
    assert limits.buffer_high_water == 64 * 1024
    timeouts = snapshot.routes[0].timeouts
    assert (timeouts.connect, timeouts.response) == (2.0, 15.0)
    assert snapshot.routes[0].max_body == 10 * 1024 * 1024
    upstream = snapshot.upstreams["app"]
    assert (upstream.balancer, upstream.max_idle, upstream.idle_timeout) == ("round_robin", 128, 60.0)
