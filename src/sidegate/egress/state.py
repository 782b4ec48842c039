"""What every egress call of one process shares, and what a call may ask of its connection.

Everything a call needs that outlives the call is in :class:`EgressState`: the compiled
policy, the resolver (and its cache), a keep-alive pool per *checked address* (``ip:port``,
never a name: a pool keyed by name would reuse a connection to an address the name no longer
has), the count of open calls per destination (``max_connections``), and Sidegate's own
listening addresses (loop detection). The listening socket is
:class:`~sidegate.egress.server.EgressServer`'s, which adds it on top.

Compiled with mypyc (``native.HOT_MODULES``, as is ``server.py``): a call reads this state a dozen
times (policy, audit, pools, limits), and from compiled code a native attribute is a struct field
where an interpreted object's is a dict look-up.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import replace
from typing import Final, Protocol

from sidegate.config.egress_credential_spec import CredentialSettings
from sidegate.config.egress_spec import EgressSpec
from sidegate.config.snapshot import Endpoint
from sidegate.egress.audit import Audit, LineSink
from sidegate.egress.credentials import Credential, credential_for
from sidegate.egress.policy import EgressPolicy
from sidegate.egress.resolver import Resolver
from sidegate.egress.tls import TlsContexts
from sidegate.server.timers import Sweeper
from sidegate.upstream.pool import EndpointPool
from sidegate.upstream.tls_origin import TlsOrigin

#: Keep-alive pools kept at once (one per checked ``ip:port``).
MAX_POOLS: Final = 256
#: What Sidegate adds to Via on the way out, and refuses to see on the way in (a loop).
EGRESS_VIA: Final = b"1.1 sidegate-egress"


class Closable(Protocol):
    def close(self) -> None: ...


class ClientSide(Protocol):
    """What a call does to the app's connection (implemented by the egress connection)."""

    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...
    def answered(self, keep_alive: bool) -> None: ...
    def become_tunnel(self) -> None: ...
    def close(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class EgressState:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        spec: EgressSpec,
        *,
        own_listeners: Sequence[tuple[str, int]] = (),
        audit_sink: LineSink | None = None,
        head_size: int = 32 * 1024,
        header_count: int = 100,
        head_timeout: float = 10.0,
        keepalive_idle: float = 60.0,
    ) -> None:
        self.loop = loop
        self.spec = spec
        self.policy = EgressPolicy(spec.destinations)
        self.resolver = Resolver(spec.dns_servers, timeout=spec.dns_timeout)
        self.sweeper = Sweeper(loop)
        self.audit = Audit(audit_sink)  # time.perf_counter: durations finer than the loop clock
        self.via = EGRESS_VIA
        self.max_body = spec.max_body
        self.head_size = head_size
        self.header_count = header_count
        self.head_timeout = head_timeout  # a request coming in, from each read
        self.keepalive_idle = keepalive_idle  # a connection between requests
        self.own = own_addresses([*own_listeners, (spec.host, spec.port)])
        self.pools: dict[tuple[str, int, TlsOrigin | None], EndpointPool] = {}
        self.tls = TlsContexts()  # TLS origination's contexts, kept across reloads
        self.active: dict[str, int] = {}
        # (address, port, destination) that passed the SSRF guard and loop detection; per config.
        self.checked: set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, str]] = set()
        self.connections: set[Closable] = set()
        # The destinations' credentials, by destination name; kept across a reload while the
        # destination's credentials are unchanged (an OAuth token stays cached).
        self.credentials: dict[str, tuple[CredentialSettings, Credential]] = {}
        self._update_credentials(spec)

    def _update_credentials(self, spec: EgressSpec) -> None:
        kept: dict[str, tuple[CredentialSettings, Credential]] = {}
        for destination in spec.destinations:
            settings = destination.credentials
            if settings is None:
                continue
            old = self.credentials.get(destination.name)
            kept[destination.name] = (
                old if old is not None and old[0] == settings else (settings, credential_for(settings))
            )
        for name, (_, credential) in self.credentials.items():
            if kept.get(name, (None, None))[1] is not credential:
                credential.close()
        self.credentials = kept

    def credential(self, destination: str) -> Credential | None:
        """The credential added to requests to ``destination``, if it has one."""
        found = self.credentials.get(destination)
        return None if found is None else found[1]

    def close_credentials(self) -> None:
        for _, credential in self.credentials.values():
            credential.close()
        self.credentials = {}

    def pool_for(self, ip: str, port: int, tls: TlsOrigin | None = None) -> EndpointPool:
        """The keep-alive pool of a checked address, most recently used last. Bounded: past
        :data:`MAX_POOLS` addresses the least recently used pool is retired (its idle
        connections closed, the busy ones when given back), as a ``*`` destination may meet
        any number of addresses. ``tls`` (TLS origination: a context and the server name) is
        part of the key: a plain and a TLS call to one ``ip:port``, or two calls verifying
        different names, never share a connection."""
        key = (ip, port, tls)
        pool = self.pools.pop(key, None)
        if pool is None:
            pool = EndpointPool(self.loop, Endpoint(ip, port), self.sweeper, tls=tls)
            if len(self.pools) >= MAX_POOLS:
                oldest = next(iter(self.pools))
                self.pools.pop(oldest).retire()
        self.pools[key] = pool
        return pool

    def is_own(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        """Whether ``ip:port`` is one of Sidegate's own listeners (loop detection); a listener
        bound to every address (``0.0.0.0``, ``::``) answers on loopback and unspecified too."""
        if (str(ip), port) in self.own:
            return True
        return ("*", port) in self.own and (ip.is_loopback or ip.is_unspecified)

    def apply(self, spec: EgressSpec) -> None:
        """A reload: the next call is decided by ``spec``'s destinations (calls under way keep
        theirs); the address stays as bound; the resolver is new when its servers changed."""
        if (spec.dns_servers, spec.dns_timeout) != (self.spec.dns_servers, self.spec.dns_timeout):
            self.resolver = Resolver(spec.dns_servers, timeout=spec.dns_timeout)
        self.policy = EgressPolicy(spec.destinations)
        self.checked = set()  # a destination's allow_private may have changed
        self._update_credentials(spec)
        self.tls.keep_only(spec.destinations)
        self.max_body = spec.max_body
        self.spec = replace(spec, host=self.spec.host, port=self.spec.port)


def own_addresses(listeners: Sequence[tuple[str, int]]) -> frozenset[tuple[str, int]]:
    """Sidegate's listening addresses as loop detection compares them: ``("*", port)`` for a
    listener bound to every address."""
    out: set[tuple[str, int]] = set()
    for host, port in listeners:
        out.add(("*", port) if host in ("0.0.0.0", "::", "") else (host, port))
    return frozenset(out)
