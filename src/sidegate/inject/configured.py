"""``--config FILE``: what the Sidegate config tells ``inject``, and whether the pod can work with it.

The config is validated as ``sidegate run`` would (an invalid one is refused with its issues).
From it come the cache size and drain settings (:class:`Sizing`), and the listener addresses,
checked against the ports the sidecar declares: a config whose inbound or health listener is on
loopback, or on another port than the container declares, gives a pod that can never be reached
or never be ready, so it is refused; an app port that no upstream points at is advice.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from sidegate.inject.options import InjectError, InjectOptions, Sizing
from sidegate.units import parse_address


@dataclass(frozen=True)
class ConfigFacts:
    """The parts of a Sidegate config that the pod spec must agree with."""

    source: str
    sizing: Sizing
    inbound: tuple[str, int]
    admin: tuple[str, int]
    health: tuple[str, int] | None  # None in a release without the health listener
    endpoints: tuple[tuple[str, int], ...] = field(default=())


def read_config(path: str) -> ConfigFacts:
    """Load and validate the config at ``path``; :class:`InjectError` with every issue if invalid."""
    from sidegate.config.load import load_config
    from sidegate.errors import ConfigError

    try:
        loaded = load_config(path)
    except ConfigError as exc:
        lines = [issue.located(exc.source or path) for issue in exc.issues]
        lines.append(f"{path}: fix the config first (sidegate validate --config {path})")
        raise InjectError("\n".join(lines)) from None
    config = loaded.config
    listeners = config.listeners
    health_address = listeners.health.address
    return ConfigFacts(
        source=path,
        sizing=Sizing(
            cache_max_size=int(config.cache.max_size),
            drain_delay=float(config.drain_delay),
            drain_timeout=float(config.drain_timeout),
        ),
        inbound=parse_address(listeners.inbound.address),
        admin=parse_address(listeners.admin.address),
        health=None if health_address == "off" else parse_address(health_address),
        endpoints=tuple(
            parse_address(endpoint)
            for upstream in config.upstreams.values()
            for endpoint in upstream.endpoints
        ),
    )


def check_config(facts: ConfigFacts, options: InjectOptions) -> list[str]:
    """Advice about the config; raise :class:`InjectError` for a pod that could not work."""
    problems: list[str] = []
    listeners = [
        ("listeners.inbound.address", facts.inbound, options.port, "--port", True),
        ("listeners.admin.address", facts.admin, options.admin_port, "--admin-port", False),
    ]
    if facts.health is not None:
        listeners.append(
            ("listeners.health.address", facts.health, options.health_port, "--health-port", True)
        )
    for key, (host, port), declared, flag, reached_from_outside in listeners:
        shown = f"{_show_host(host)}:{port}"
        if port != declared:
            problems.append(
                f"{facts.source}: {key} is {shown} but the container declares {declared}; "
                f"give {flag} {port}, or change the config"
            )
        if reached_from_outside and _loopback(host):
            problems.append(
                f"{facts.source}: {key} is {shown}, loopback: the Service, the kubelet and Prometheus "
                f"reach the pod IP; bind 0.0.0.0:{port}"
            )
    if problems:
        raise InjectError("\n".join(problems))
    if options.app_port is not None and not any(
        port == options.app_port and _loopback(host) for host, port in facts.endpoints
    ):
        return [
            f"{facts.source}: advice: no upstream endpoint is 127.0.0.1:{options.app_port}, where "
            "--app-port says the app listens"
        ]
    return []


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _show_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
