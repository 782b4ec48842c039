"""Compiling a validated config into the immutable :class:`~sidegate.config.snapshot.Snapshot`.

This is where the config model stops: everything the data plane needs is precomputed into plain
values so that nothing is parsed, looked up by name or lower-cased per request:

- addresses split into host and port; durations in seconds; sizes in bytes (``max_body: 0``,
  "no limit", becomes :data:`sys.maxsize` so the proxy needs no special case);
- header edits and match values as ``bytes`` (UTF-8), names to drop lower-cased, empty edits as
  None; regexes compiled as ``bytes`` patterns;
- each filter instantiated once with its validated config model (``cls(config)``), and per route
  the tuple of filters that implement each hook, in chain order;
- the route table (:class:`~sidegate.routing.router.Router`);
- ``dump``: the normalised config as JSON-able data with secrets redacted, for admin and logs.

A filter whose constructor fails is a config error at ``routes[i].filters.<name>``.
"""

from __future__ import annotations

import re
import sys
from types import MappingProxyType
from typing import Any

from sidegate.config import model as m
from sidegate.config.load import LoadedConfig
from sidegate.config.redact import redact
from sidegate.config.snapshot import (
    Endpoint,
    ForwardedSpec,
    HeaderEdits,
    InboundLimits,
    ListenerSpec,
    Rewrite,
    Route,
    Snapshot,
    Timeouts,
    UpstreamSpec,
)
from sidegate.config.source import format_path
from sidegate.config.units import parse_address
from sidegate.errors import ConfigError, ConfigIssue
from sidegate.filters.base import Filter
from sidegate.filters.registry import lookup
from sidegate.routing.router import RouteMatch, Router, ValueTest

HOOKS = ("on_request", "on_response", "on_log")


def compile_snapshot(loaded: LoadedConfig) -> Snapshot:
    """Build the snapshot the gateway runs on; raise :class:`ConfigError` if a filter cannot start."""
    config = loaded.config
    issues: list[ConfigIssue] = []
    entries: list[tuple[RouteMatch, Route]] = []
    for index, route in enumerate(config.routes):
        filters = _filters(route, index, loaded, issues)
        entries.append((compile_match(route.match), compile_route(route, filters)))
    if issues:
        raise ConfigError(issues, loaded.source)
    inbound = config.listeners.inbound
    return Snapshot(
        router=Router(entries),
        upstreams=MappingProxyType(
            {name: compile_upstream(name, up) for name, up in config.upstreams.items()}
        ),
        inbound=ListenerSpec(*parse_address(inbound.address, allow_port_zero=True)),
        admin=ListenerSpec(*parse_address(config.listeners.admin.address, allow_port_zero=True)),
        limits=InboundLimits(
            head_size=inbound.limits.head_size,
            header_count=inbound.limits.header_count,
            head_timeout=inbound.limits.head_timeout,
            body_idle=inbound.limits.body_idle,
            keepalive_idle=inbound.limits.keepalive_idle,
            buffer_high_water=inbound.limits.buffer,
        ),
        forwarded=ForwardedSpec(
            mode=inbound.forwarded.mode,
            trust_incoming=inbound.forwarded.trust_incoming,
            via=inbound.forwarded.via.encode(),
        ),
        workers=config.workers,
        drain_timeout=config.drain_timeout,
        routes=tuple(route for _, route in entries),
        dump=config_dump(config),
        source=loaded.source,
    )


def compile_route(route: m.Route, filters: tuple[Filter, ...] = ()) -> Route:
    """One route's compiled values (its ``filters`` already instantiated, in chain order)."""
    timeouts = route.timeouts
    hooks = {hook: tuple(f for f in filters if type(f).implements(hook)) for hook in HOOKS}
    return Route(
        name=route.name,
        upstream=route.upstream,
        timeouts=Timeouts(connect=timeouts.connect, response=timeouts.response, idle=timeouts.idle),
        rewrite=compile_rewrite(route.rewrite) if route.rewrite is not None else None,
        request_headers=compile_edits(route.headers.request),
        response_headers=compile_edits(route.headers.response),
        max_body=route.max_body or sys.maxsize,
        filters=filters,
        on_request=hooks["on_request"],
        on_response=hooks["on_response"],
        on_log=hooks["on_log"],
    )


def compile_match(match: m.Match) -> RouteMatch:
    """A route's ``match`` as the router's plain values."""
    return RouteMatch(
        path=_b(match.path),
        path_prefix=_b(match.path_prefix),
        path_regex=re.compile(match.path_regex.encode()) if match.path_regex is not None else None,
        hosts=tuple(h.lower().encode() for h in match.hosts or ()),
        methods=frozenset(method.upper().encode() for method in match.methods or ()),
        headers=tuple((name.lower().encode(), _value_test(v)) for name, v in (match.headers or {}).items()),
        query=tuple((name.encode(), _value_test(v)) for name, v in (match.query or {}).items()),
    )


def compile_rewrite(rewrite: m.Rewrite) -> Rewrite:
    """The path rewrite, with a regex compiled as a ``bytes`` pattern."""
    if rewrite.regex is not None:
        return Rewrite(
            regex=re.compile(rewrite.regex.pattern.encode()), replacement=rewrite.regex.replacement.encode()
        )
    return Rewrite(strip_prefix=_b(rewrite.strip_prefix), path=_b(rewrite.path))


def compile_edits(edit: m.HeaderEdit) -> HeaderEdits | None:
    """Header edits as bytes (``remove`` lower-cased); None when there is nothing to do."""
    if not (edit.set or edit.add or edit.remove):
        return None
    return HeaderEdits(
        set=tuple((k.encode(), v.encode()) for k, v in edit.set.items()),
        add=tuple((k.encode(), v.encode()) for k, v in edit.add.items()),
        remove=frozenset(name.lower().encode() for name in edit.remove),
    )


def compile_upstream(name: str, upstream: m.Upstream) -> UpstreamSpec:
    """A named upstream with its endpoints split into host and port (IPv6 without brackets)."""
    return UpstreamSpec(
        name=name,
        endpoints=tuple(Endpoint(*parse_address(address)) for address in upstream.endpoints),
        balancer=upstream.balancer.value,
        max_idle=upstream.pool.max_idle,
        idle_timeout=upstream.pool.idle_timeout,
    )


def config_dump(config: m.SidegateConfig) -> dict[str, Any]:
    """The normalised config as JSON-able data, secrets redacted.

    Filter names are never taken for secrets (a filter may be called ``auth_key``): only the
    keys inside each filter's config are.
    """
    data = config.model_dump(mode="json", exclude_none=True)
    filters = [route.pop("filters", {}) for route in data["routes"]]
    dump: dict[str, Any] = redact(data)
    for route, route_filters in zip(dump["routes"], filters, strict=True):
        route["filters"] = {name: redact(value) for name, value in route_filters.items()}
    return dump


def _filters(
    route: m.Route, index: int, loaded: LoadedConfig, issues: list[ConfigIssue]
) -> tuple[Filter, ...]:
    built: list[Filter] = []
    for name, filter_config in route.filters.items():
        path = ("routes", index, "filters", name)
        cls = lookup(name)
        try:
            if cls is None:
                raise LookupError(f"filter {name!r} is no longer registered")
            built.append(cls(filter_config))
        except Exception as exc:
            issues.append(
                ConfigIssue(format_path(path), f"cannot set up filter: {exc}", loaded.line_of(path))
            )
    return tuple(built)


def _value_test(match: m.ValueMatch) -> ValueTest:
    return ValueTest(
        exact=_b(match.exact),
        regex=re.compile(match.regex.encode()) if match.regex is not None else None,
        present=match.present,
    )


def _b(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None
