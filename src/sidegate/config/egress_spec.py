"""The compiled ``egress:`` section: plain frozen values the egress listener runs on.

Kept apart from :mod:`sidegate.config.egress` (the pydantic model, the checker's only) so the
serving process never imports pydantic, and apart from :mod:`sidegate.config.snapshot` so the
egress side's values live in one file the credential and TLS work can extend.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidegate.config.egress_credential_spec import CredentialSettings, compile_credentials
from sidegate.config.egress_tls_spec import TlsSettings, compile_tls

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class DestinationSpec:
    """One allowed destination (see :class:`sidegate.config.egress.Destination`)."""

    name: str
    host: str  # lower-case: a name, an IP literal, "*.suffix" or "*"
    ports: tuple[int, ...]
    schemes: frozenset[str]  # "http", "https"
    methods: frozenset[str] | None  # None: any
    path_prefixes: tuple[str, ...] | None  # None: any
    allow_private: tuple[Network, ...]
    origin: tuple[str, int] | None  # where a named request goes; None: host on ports[0]
    connect_timeout: float
    response_timeout: float
    idle_timeout: float
    max_connections: int
    credentials: CredentialSettings | None = None  # added to every request (not to tunnels)
    tls: TlsSettings | None = None  # TLS origination (None: https:// with the defaults)

    def named_origin(self) -> tuple[str, int] | None:
        """Where a request naming this destination in its Host goes; None when the host is a
        pattern and no ``origin`` says which name under it to call."""
        if self.origin is not None:
            return self.origin
        if self.host.startswith("*"):
            return None
        return self.host, self.ports[0]


@dataclass(frozen=True, slots=True)
class EgressSpec:
    """The egress listener's address and policy."""

    host: str
    port: int
    destinations: tuple[DestinationSpec, ...]
    dns_servers: tuple[tuple[str, int], ...]  # empty: the system resolver
    dns_timeout: float
    max_body: int
    default_action: str = "deny"

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def compile_egress(config: Mapping[str, Any]) -> EgressSpec | None:
    """The checked config's egress section compiled; None when there is none (no listener)."""
    egress = config.get("egress")
    if egress is None:
        return None
    listener = config["listeners"].get("egress") or {"address": "127.0.0.1:15001"}
    host, port = _host_port(listener["address"])
    return EgressSpec(
        host=host,
        port=port,
        destinations=tuple(_destination(d) for d in egress["destinations"]),
        dns_servers=tuple(_host_port(s) for s in egress["dns"]["servers"]),
        dns_timeout=egress["dns"]["timeout"],
        max_body=egress["max_body"],
        default_action=egress["default_action"],
    )


def _destination(config: Mapping[str, Any]) -> DestinationSpec:
    timeouts = config["timeouts"]
    methods, prefixes, origin = config["methods"], config["path_prefixes"], config["origin"]
    return DestinationSpec(
        name=config["name"],
        host=config["host"],
        ports=tuple(config["ports"]),
        schemes=frozenset(config["schemes"]),
        methods=frozenset(methods) if methods is not None else None,
        path_prefixes=tuple(prefixes) if prefixes is not None else None,
        allow_private=tuple(ipaddress.ip_network(n) for n in config["allow_private"]),
        origin=_host_port(origin) if origin is not None else None,
        connect_timeout=timeouts["connect"],
        response_timeout=timeouts["response"],
        idle_timeout=timeouts["idle"],
        max_connections=config["max_connections"],
        credentials=compile_credentials(config["credentials"]) if config.get("credentials") else None,
        tls=compile_tls(config.get("tls")),
    )
