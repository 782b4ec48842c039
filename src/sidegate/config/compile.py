"""Compiling a checked config into the immutable :class:`~sidegate.config.snapshot.Snapshot`.

The input is the *normalised* config: the plain JSON data that the config checker
(:mod:`sidegate.config.check`, usually in a child process, see :mod:`sidegate.config.isolated`)
prints for a valid file, with every default filled in, durations in seconds, sizes in bytes,
addresses as ``"host:port"`` strings and each route's ``filters`` as ``{name: config}`` in chain
order. It has been validated already, so nothing here validates it again: this module, and
everything it imports, stays free of pydantic and YAML, which the serving process never loads.

Defaults live in the model (:mod:`sidegate.config.model`) only: the checker writes every one of
them into the normalised config, so every value here is read as given (``config["key"]``, never
``config.get("key", default)``), and a missing key is the "unexpected shape" error below.

Everything the data plane needs is precomputed into plain values so that nothing is parsed,
looked up by name or lower-cased per request:

- addresses split into host and port (IPv6 without brackets); ``max_body: 0``, "no limit",
  becomes :data:`sys.maxsize` so the proxy needs no special case;
- header edits and match values as ``bytes`` (UTF-8), names to drop lower-cased, empty edits as
  None; regexes compiled as ``bytes`` patterns;
- each filter instantiated once with its config rebuilt by ``config_model.from_plain``, and per
  route the tuple of filters that implement each hook, in chain order;
- the route table (:class:`~sidegate.routing.router.Router`);
- ``dump``: the normalised config with unset (null) values left out and secrets redacted, for
  admin and logs.

A filter whose constructor fails is a config error at ``routes[i].filters.<name>``, with the line
taken from ``lines`` (the checker sends the line of every route's filter entries).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sidegate.config.redact import redact
from sidegate.config.snapshot import (
    CacheSettings,
    ConsumerSpec,
    Endpoint,
    ForwardedSpec,
    HeaderEdits,
    HealthCheckSpec,
    IdentitySpec,
    InboundLimits,
    ListenerSpec,
    ObservabilitySpec,
    RedisSpec,
    RedisTls,
    Rewrite,
    Route,
    Snapshot,
    Timeouts,
    UpstreamSpec,
)
from sidegate.errors import ConfigError, ConfigIssue
from sidegate.filters.base import Filter, FilterServices
from sidegate.filters.registry import lookup
from sidegate.routing.router import RouteMatch, Router, ValueTest

if TYPE_CHECKING:
    from sidegate.config.egress_spec import EgressSpec
    from sidegate.config.isolated import Normalised

HOOKS = (
    "on_request",
    "on_response",
    "on_response_body",
    "on_response_end",
    "on_upstream_failure",
    "on_log",
)
Plain = Mapping[str, Any]  # one mapping of the normalised config
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]+")  # as sidegate.config.source.format_path
#: The shared cache's directory when neither ``cache.dir`` nor ``$CACHE_DIR`` names one.
CACHE_DIR = "/var/cache/sidegate"


def compile_checked(checked: Normalised) -> Snapshot:
    """:func:`compile_snapshot` of what :func:`~sidegate.config.isolated.validate_file` returned."""
    return compile_snapshot(checked.config, checked.source, lines=checked.lines)


def compile_snapshot(normalised: Plain, source: str, *, lines: Mapping[str, int] | None = None) -> Snapshot:
    """Build the snapshot the gateway runs on; raise :class:`ConfigError` if a filter cannot start.

    ``lines`` maps a filter's dotted path (``routes[0].filters.auth_key``) to its line in the file.
    Data that does not have the shape the checker gives (a checker of another version of
    Sidegate, say) is a :class:`ConfigError` too, never a ``KeyError``.
    """
    try:
        return _compile(normalised, source, lines or {})
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, re.error) as exc:
        msg = f"the checked config has an unexpected shape ({type(exc).__name__}: {exc})"
        raise ConfigError([ConfigIssue("", msg)], source) from None


def _compile(config: Plain, source: str, lines: Mapping[str, int]) -> Snapshot:
    issues: list[ConfigIssue] = []
    entries: list[tuple[RouteMatch, Route]] = []
    upstreams = MappingProxyType(
        {name: compile_upstream(name, up) for name, up in config["upstreams"].items()}
    )
    cache = compile_cache(config["cache"])
    consumers = tuple(compile_consumer(c) for c in config["consumers"])
    identity_cfg = config["identity"]
    identity = IdentitySpec(
        consumer_header=identity_cfg["consumer_header"].encode(),
        tenant_header=identity_cfg["tenant_header"].encode(),
    )
    redis_cfg = config["redis"]
    redis = RedisSpec(
        url=redis_cfg["url"],
        timeout=redis_cfg["timeout"],
        connect_timeout=redis_cfg["connect_timeout"],
        password=redis_cfg["password"],
        tls=_redis_tls(redis_cfg),
    )
    for index, route in enumerate(config["routes"]):
        services = FilterServices(
            route["name"],
            upstreams[route["upstream"]],
            cache,
            rewrite=compile_rewrite(route["rewrite"]) if route["rewrite"] is not None else None,
            request_edits=compile_edits(route["headers"]["request"]),
            response_timeout=route["timeouts"]["response"],
            consumers=consumers,
            identity=identity,
            redis=redis,
        )
        filters = _filters(route["filters"], index, services, lines, issues)
        entries.append((compile_match(route["match"]), compile_route(route, filters)))
    if issues:
        raise ConfigError(issues, source)
    inbound = config["listeners"]["inbound"]
    limits, forwarded = inbound["limits"], inbound["forwarded"]
    observability = compile_observability(config["observability"])
    return Snapshot(
        router=Router(entries),
        upstreams=upstreams,
        inbound=ListenerSpec(*_host_port(inbound["address"])),
        admin=ListenerSpec(*_host_port(config["listeners"]["admin"]["address"])),
        health=_optional_listener(config["listeners"]["health"]["address"]),
        admin_token_file=config["listeners"]["admin"]["token_file"],
        limits=InboundLimits(
            head_size=limits["head_size"],
            header_count=limits["header_count"],
            head_timeout=limits["head_timeout"],
            body_idle=limits["body_idle"],
            keepalive_idle=limits["keepalive_idle"],
            buffer_high_water=limits["buffer"],
            send_timeout=limits["send_timeout"],
            drop_fields=frozenset(
                name.lower() for name in (identity.consumer_header, identity.tenant_header) if name
            ),
            chunk_line=limits["chunk_line"],
            underscore_headers=inbound["underscore_headers"],
            managed_fields=_edited_names(route for _, route in entries),
        ),
        forwarded=ForwardedSpec(
            mode=forwarded["mode"],
            trust_incoming=forwarded["trust_incoming"],
            via=forwarded["via"].encode(),
            trusted=tuple(forwarded["trusted"]),
            trusted_hops=forwarded["trusted_hops"],
        ),
        workers=config["workers"],
        drain_timeout=config["drain_timeout"],
        drain_delay=config["drain_delay"],
        routes=tuple(route for _, route in entries),
        cache=cache,
        consumers=consumers,
        identity=identity,
        redis=redis,
        observability=observability,
        dump=config_dump(config),
        source=source,
        egress=_egress(config),
    )


def _egress(config: Plain) -> EgressSpec | None:
    """The egress section compiled, None without one; its modules are imported only then (the
    serving process of a pod with no egress never loads them)."""
    if config.get("egress") is None:
        return None
    from sidegate.config.egress_spec import compile_egress

    return compile_egress(config)


def _redis_tls(config: Plain) -> RedisTls | None:
    """``redis.tls`` for a ``rediss://`` URL (its files checked by the model), else None."""
    if not config["url"].startswith("rediss://"):
        return None
    tls = config["tls"]
    return RedisTls(
        ca_file=tls["ca_file"],
        cert_file=tls["cert_file"],
        key_file=tls["key_file"],
        server_name=tls["server_name"],
    )


def _edited_names(routes: Iterable[Route]) -> frozenset[bytes]:
    """Request header names (lower-case) some route sets, adds or removes."""
    names: set[bytes] = set()
    for route in routes:
        edits = route.request_headers
        if edits is not None:
            names |= edits.drop | {name.lower() for name, _ in edits.add}
    return frozenset(names)


def compile_observability(config: Plain) -> ObservabilitySpec:
    access_log, tracing, app_metrics = config["access_log"], config["tracing"], config["app_metrics"]
    return ObservabilitySpec(
        metrics=config["metrics"]["enabled"],
        access_log=access_log["enabled"],
        access_log_path=access_log["path"],
        access_log_buffer=access_log["buffer_lines"],
        tracing=tracing["enabled"],
        sample_ratio=tracing["sample_ratio"],
        recent_traces=tracing["recent"],
        recent_requests=config["explain"]["recent"],
        app_metrics_url=app_metrics["url"],
        app_metrics_timeout=app_metrics["timeout"],
    )


def compile_route(route: Plain, filters: tuple[Filter, ...] = ()) -> Route:
    """One route's compiled values (its ``filters`` already instantiated, in chain order)."""
    timeouts, headers, rewrite = route["timeouts"], route["headers"], route["rewrite"]
    hooks = {hook: tuple(f for f in filters if type(f).implements(hook)) for hook in HOOKS}
    return Route(
        name=route["name"],
        upstream=route["upstream"],
        timeouts=Timeouts(
            connect=timeouts["connect"],
            response=timeouts["response"],
            idle=timeouts["idle"],
            send=timeouts["send"],
        ),
        rewrite=compile_rewrite(rewrite) if rewrite is not None else None,
        request_headers=compile_edits(headers["request"]),
        response_headers=compile_edits(headers["response"]),
        max_body=route["max_body"] or sys.maxsize,
        filters=filters,
        on_request=hooks["on_request"],
        on_response=hooks["on_response"],
        on_response_body=hooks["on_response_body"],
        on_response_end=hooks["on_response_end"],
        on_upstream_failure=hooks["on_upstream_failure"],
        on_log=hooks["on_log"],
    )


def compile_cache(cache: Plain) -> CacheSettings:
    """Top-level ``cache``, its directory resolved: ``dir``, else ``$CACHE_DIR``, else
    :data:`CACHE_DIR` (resolved here, in the serving process, whose environment counts)."""
    return CacheSettings(
        dir=cache["dir"] or os.environ.get("CACHE_DIR") or CACHE_DIR,
        max_size=cache["max_size"],
        max_entry_size=cache["max_entry_size"],
        quotas=MappingProxyType({name: part["max_size"] for name, part in cache["partitions"].items()}),
    )


def compile_consumer(consumer: Plain) -> ConsumerSpec:
    """A consumer with its API keys as SHA-256 digests (a plain key is hashed here and forgotten)."""
    hashes = []
    for key in consumer["api_keys"]:
        if key.startswith("sha256:"):
            hashes.append(bytes.fromhex(key.removeprefix("sha256:")))
        else:
            hashes.append(hashlib.sha256(key.encode()).digest())
    return ConsumerSpec(
        name=consumer["name"],
        tenant=consumer["tenant"],
        labels=MappingProxyType(dict(consumer["labels"])),
        api_key_hashes=tuple(hashes),
    )


def compile_match(match: Plain) -> RouteMatch:
    """A route's ``match`` as the router's plain values."""
    regex = match["path_regex"]
    return RouteMatch(
        path=_b(match["path"]),
        path_prefix=_b(match["path_prefix"]),
        path_regex=re.compile(regex.encode()) if regex is not None else None,
        hosts=tuple(h.lower().encode() for h in match["hosts"] or ()),
        methods=frozenset(method.upper().encode() for method in match["methods"] or ()),
        headers=tuple(
            (name.lower().encode(), _value_test(v)) for name, v in (match["headers"] or {}).items()
        ),
        query=tuple((name.encode(), _value_test(v)) for name, v in (match["query"] or {}).items()),
    )


def compile_rewrite(rewrite: Plain) -> Rewrite:
    """The path rewrite, with a regex compiled as a ``bytes`` pattern."""
    regex = rewrite["regex"]
    if regex is not None:
        return Rewrite(regex=re.compile(regex["pattern"].encode()), replacement=regex["replacement"].encode())
    return Rewrite(strip_prefix=_b(rewrite["strip_prefix"]), path=_b(rewrite["path"]))


def compile_edits(edit: Plain) -> HeaderEdits | None:
    """Header edits as bytes (``remove`` lower-cased); None when there is nothing to do."""
    if not (edit["set"] or edit["add"] or edit["remove"]):
        return None
    return HeaderEdits(
        set=tuple((k.encode(), v.encode()) for k, v in edit["set"].items()),
        add=tuple((k.encode(), v.encode()) for k, v in edit["add"].items()),
        remove=frozenset(name.lower().encode() for name in edit["remove"]),
    )


def compile_upstream(name: str, upstream: Plain) -> UpstreamSpec:
    """A named upstream with its endpoints split into host and port (IPv6 without brackets)."""
    pool = upstream["pool"]
    check = upstream.get("health_check")
    return UpstreamSpec(
        name=name,
        endpoints=tuple(Endpoint(*_host_port(address)) for address in upstream["endpoints"]),
        balancer=upstream["balancer"],
        max_idle=pool["max_idle"],
        idle_timeout=pool["idle_timeout"],
        health_check=None
        if check is None
        else HealthCheckSpec(
            path=check["path"],
            interval=check["interval"],
            timeout=check["timeout"],
            healthy_threshold=check["healthy_threshold"],
            unhealthy_threshold=check["unhealthy_threshold"],
        ),
    )


def config_dump(config: Plain) -> dict[str, Any]:
    """The normalised config as JSON-able data, unset (null) values left out, secrets redacted.

    Filter names are never taken for secrets (a filter may be called ``auth_key``): only the
    keys inside each filter's config are.
    """
    data = _without_nulls(config)
    filters = [route.pop("filters", {}) for route in data["routes"]]
    dump: dict[str, Any] = redact(data)
    for route, route_filters in zip(dump["routes"], filters, strict=True):
        route["filters"] = {name: redact(value) for name, value in route_filters.items()}
    return dump


def filter_path(index: int, name: str) -> str:
    """Dotted path of a route's filter, ``routes[2].filters.auth_key`` (odd names quoted)."""
    return f"routes[{index}].filters" + (f".{name}" if _PLAIN_KEY.fullmatch(name) else f"[{name!r}]")


def _filters(
    configs: Plain, index: int, services: FilterServices, lines: Mapping[str, int], issues: list[ConfigIssue]
) -> tuple[Filter, ...]:
    built: list[Filter] = []
    for name, data in configs.items():
        cls = lookup(name)
        try:
            if cls is None:
                raise LookupError(f"filter {name!r} is not registered in this process")
            built.append(flt := cls(cls.config_model.from_plain(data)))
            flt.bind(services)
        except Exception as exc:
            path = filter_path(index, name)
            issues.append(ConfigIssue(path, f"cannot set up filter: {exc}", lines.get(path)))
    return tuple(built)


def _value_test(match: Plain) -> ValueTest:
    regex = match["regex"]
    return ValueTest(
        exact=_b(match["exact"]),
        regex=re.compile(regex.encode()) if regex is not None else None,
        present=match["present"],
    )


def _without_nulls(value: Any) -> Any:
    """A copy of JSON-like ``value`` without the mapping entries whose value is None."""
    if isinstance(value, Mapping):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(item) for item in value]
    return value


def _host_port(address: str) -> tuple[str, int]:
    """A checked ``"host:port"`` as ``(host, port)``, an IPv6 host without its brackets.

    Not :func:`sidegate.units.parse_address`: the checker has validated the address, and
    that module's imports (decimal) would cost the serving process memory for nothing.
    """
    host, _, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _optional_listener(address: str) -> ListenerSpec | None:
    """A listener's address, or None for ``off`` (the word of :mod:`sidegate.config.listeners`)."""
    return None if address == "off" else ListenerSpec(*_host_port(address))


def _b(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None
