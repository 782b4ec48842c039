"""``access``: allow or deny a route by consumer, tenant, token claim or client address.

    filters:
      jwt: {...}
      access: {allow_tenants: [acme], deny_consumers: [legacy-batch], allow_ips: [10.0.0.0/8]}

Deny lists win over allow lists; when an allow list is given the request must match it. Consumer,
tenant and claims come from an authentication filter earlier in the chain (``api_key``, ``jwt``);
the client address is the peer's (Sidegate runs beside the app: the peer is the pod's caller), or
behind trusted front proxies (``listeners.inbound.forwarded.trusted``) the client they name.
A refused request gets 403 with the rule that refused it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from sidegate.filters.base import Filter, FilterConfig, FilterServices, RequestContext
from sidegate.filters.counters import POLICY
from sidegate.filters.identity import deny
from sidegate.filters.registry import register
from sidegate.http.messages import LocalResponse, RequestHead

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AccessConfig(FilterConfig):
    allow_consumers: tuple[str, ...] = ()
    """only these consumers"""
    deny_consumers: tuple[str, ...] = ()
    """never these consumers"""
    allow_tenants: tuple[str, ...] = ()
    """only consumers of these tenants"""
    deny_tenants: tuple[str, ...] = ()
    """never consumers of these tenants"""
    allow_ips: tuple[str, ...] = ()
    """only clients in these addresses or CIDR ranges"""
    deny_ips: tuple[str, ...] = ()
    """never clients in these addresses or CIDR ranges"""
    claims: dict[str, str] = field(default_factory=dict)
    """token claims that must have these values (string claims, or lists that contain the value)"""


def _networks(values: tuple[str, ...], what: str) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in values)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc} (give addresses or CIDR ranges such as 10.0.0.0/8)") from None


@register
class Access(Filter):
    name = "access"
    answer_flags = {403: "access_denied"}
    config_model = AccessConfig

    def __init__(self, config: AccessConfig) -> None:
        super().__init__(config)
        self.cfg = config
        self.allow_ips = _networks(config.allow_ips, "allow_ips")
        self.deny_ips = _networks(config.deny_ips, "deny_ips")
        self.route = ""

    def bind(self, services: FilterServices) -> None:
        self.route = services.route

    def on_request(self, request: RequestHead, ctx: RequestContext) -> LocalResponse | None:
        reason = self._refusal(request, ctx)
        if reason is None:
            return None
        POLICY.decisions[(self.route, self.name, "forbidden")] += 1
        return deny(403, "forbidden", reason)

    def _refusal(self, request: RequestHead, ctx: RequestContext) -> str | None:
        cfg = self.cfg
        if self.allow_ips or self.deny_ips:
            try:
                address = ipaddress.ip_address(request.client_ip)
            except ValueError:
                return "the client address is unknown"
            if any(address in net for net in self.deny_ips):
                return f"client {address} is in deny_ips"
            if self.allow_ips and not any(address in net for net in self.allow_ips):
                return f"client {address} is not in allow_ips"
        consumer, tenant = ctx.consumer, ctx.tenant
        if consumer in cfg.deny_consumers:
            return f"consumer {consumer} is denied on this route"
        if cfg.allow_consumers and consumer not in cfg.allow_consumers:
            return "this route admits only some consumers" if consumer else "no consumer identified"
        if tenant and tenant in cfg.deny_tenants:
            return f"tenant {tenant} is denied on this route"
        if cfg.allow_tenants and tenant not in cfg.allow_tenants:
            return "this route admits only some tenants" if tenant else "no tenant identified"
        if cfg.claims:
            claims = ctx.claims or {}
            for name, wanted in cfg.claims.items():
                value = claims.get(name)
                if not (value == wanted or (isinstance(value, list) and wanted in value)):
                    return f"the token's {name} claim does not allow this route"
        return None
