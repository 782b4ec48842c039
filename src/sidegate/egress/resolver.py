"""The egress resolver: a name's A and AAAA addresses from DNS, cached by TTL, failing closed.

Why not ``loop.getaddrinfo``: the system resolver hides TTLs (so a cache could only guess), consults
``/etc/hosts`` and NSS modules the policy cannot see, applies the ``resolv.conf`` search list (in
Kubernetes, ``ndots:5`` turns ``api.partner.com`` into ``api.partner.com.<ns>.svc.cluster.local``
first) and runs in a thread pool. dnspython's asyncio resolver speaks DNS itself, on the event loop,
and gives each answer's TTL; this module adds only what the SSRF guard needs around it:

- names are looked up as absolute (never with the search list), so the name the policy matched is
  the name resolved; a literal address is returned as itself, with no query;
- answers are cached for their TTL (the smallest along a CNAME chain), clamped to
  ``[min_ttl, max_ttl]``, in a bounded LRU; concurrent lookups of one name share one query;
- every failure is a :class:`ResolveError` (NXDOMAIN, no address records, timeout, every server
  failing): there is no fallback to the system resolver and no stale answer served.

The caller checks every returned address with ``sidegate.egress.guard.forbidden_reason`` and dials
exactly one of them; it must never resolve the name again between the check and the connect.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from sidegate.egress.guard import AuthorityError, parse_authority

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ResolveError(Exception):
    """A name that gave no usable address; ``str(error)`` says why (for a 502 and the audit log)."""


class NameNotFoundError(ResolveError):
    """NXDOMAIN: the name does not exist (a caller may answer it differently from a DNS outage)."""


def parse_server(text: str) -> tuple[str, int]:
    """One ``egress.dns.servers`` entry, ``ip[:port]`` or ``[v6][:port]`` (port 53 by default), as
    the ``(ip, port)`` pair :class:`Resolver` takes; a ValueError naming the field otherwise. A DNS
    server is named by address: resolving its name would need a resolver already."""
    try:
        target = parse_authority(text.strip(), 53)
    except AuthorityError as error:
        raise ValueError(f"egress.dns.servers: '{text}': {error}") from None
    if target.literal is None:
        raise ValueError(
            f"egress.dns.servers: '{text}' is not an IP address; write ip:port, e.g. 10.96.0.10:53"
        )
    return (target.host, target.port)


@dataclass(frozen=True)
class _Entry:
    addresses: tuple[IPAddress, ...]
    expires_at: float  # time.monotonic()


@dataclass(frozen=True)
class ResolverStats:
    """What a resolver did since it was made (``sidegate_egress_dns_*`` metrics)."""

    cache_hits: int
    lookups: int  # names looked up in DNS (each is an A and an AAAA query)
    failures: int  # lookups that ended in a ResolveError
    entries: int  # names in the cache now, expired ones included until dropped


class Resolver:
    """A and AAAA lookups through the DNS servers given, or ``/etc/resolv.conf``'s when none are.

    ``servers``: ``(ip, port)`` pairs (``egress.dns.servers``), tried in order. ``timeout``: the whole
    budget of one lookup, in seconds, both record types and every server included; each try of one
    server gets ``timeout / max(2, number of servers)`` of it. ``max_entries``:
    how many names the cache holds (least recently used dropped first; 0 disables the cache).
    ``min_ttl``/``max_ttl``: the bounds an answer's TTL is clamped to (a ``max_ttl`` keeps a name
    that moved from being dialled at its old address for long; a ``min_ttl`` spares DNS from TTL-0
    names).
    """

    def __init__(
        self,
        servers: Sequence[tuple[str, int]] = (),
        *,
        timeout: float = 2.0,
        max_entries: int = 1024,
        min_ttl: float = 0.0,
        max_ttl: float = 300.0,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"egress.dns.timeout must be above 0 seconds, not {timeout}")
        if max_entries < 0:
            raise ValueError(f"egress.dns.max_entries must be 0 or more, not {max_entries}")
        if not 0 <= min_ttl <= max_ttl:
            raise ValueError(f"egress.dns: need 0 <= min_ttl <= max_ttl, not {min_ttl} and {max_ttl}")
        self._timeout = timeout
        self._max_entries = max_entries
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[tuple[IPAddress, ...]]] = {}
        self._hits = self._lookups = self._failures = 0
        self._dns = self._make_dns_resolver(servers)
        # each try gets a share of the budget, so a dead first server (UDP: silence, not an error)
        # cannot use it all up, and a lone server is tried twice
        self._dns.timeout = timeout / max(2, len(self._dns.nameservers))

    @staticmethod
    def _make_dns_resolver(servers: Sequence[tuple[str, int]]) -> dns.asyncresolver.Resolver:
        if not servers:
            try:
                return dns.asyncresolver.Resolver(configure=True)
            except dns.exception.DNSException as error:  # no resolv.conf, or no nameserver in it
                raise ResolveError(
                    f"no DNS servers: /etc/resolv.conf gave none ({error}); set egress.dns.servers"
                ) from None
        nameservers: list[str | dns.nameserver.Nameserver] = []
        for address, port in servers:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(
                    f"egress.dns.servers: '{address}' is not an IP address; write ip:port, e.g. 10.96.0.10:53"
                ) from None
            if not 0 < port < 65536:
                raise ValueError(f"egress.dns.servers: port {port} of {address} is out of range (1-65535)")
            nameservers.append(dns.nameserver.Do53Nameserver(address, port))
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = nameservers
        return resolver

    @property
    def servers(self) -> list[tuple[str, int]]:
        """The DNS servers asked, in order (from ``servers`` or ``/etc/resolv.conf``)."""
        out = []
        for server in self._dns.nameservers:
            if isinstance(server, dns.nameserver.AddressAndPortNameserver):
                out.append((server.address, server.port))
            else:
                out.append((str(server), self._dns.port))
        return out

    async def resolve(self, host: str) -> list[IPAddress]:
        """Every A then AAAA address of ``host`` (a new list each call: the caller may keep it), or
        ``[host]`` itself when it is an IP literal. Raises :class:`ResolveError`."""
        if "%" in host:  # ipaddress would take "fe80::1%eth0"; a zone names an interface here
            raise ResolveError(f"{host}: an address with a zone id is not a destination")
        try:
            return [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        name = host.lower().removesuffix(".")
        if not name:
            raise ResolveError("empty host name")
        entry = self._cache.get(name)
        if entry is not None:
            if entry.expires_at > time.monotonic():
                self._cache.move_to_end(name)
                self._hits += 1
                return list(entry.addresses)
            del self._cache[name]
        task = self._inflight.get(name)
        if task is None:
            self._lookups += 1
            task = asyncio.get_running_loop().create_task(self._lookup(name))
            task.add_done_callback(functools.partial(self._lookup_done, name))
            self._inflight[name] = task
        # shield: a caller that gives up does not cancel the lookup the others wait on
        return list(await asyncio.shield(task))

    def _lookup_done(self, name: str, task: asyncio.Task[tuple[IPAddress, ...]]) -> None:
        if self._inflight.get(name) is task:
            del self._inflight[name]
        if not task.cancelled() and task.exception() is not None:  # retrieved: never "not retrieved"
            self._failures += 1

    def stats(self) -> ResolverStats:
        """Counters since start, for metrics: answers from the cache, lookups sent, lookups failed."""
        return ResolverStats(self._hits, self._lookups, self._failures, len(self._cache))

    async def _lookup(self, name: str) -> tuple[IPAddress, ...]:
        try:
            qname = dns.name.from_text(name)  # absolute: relative to the root, never the search list
        except dns.exception.DNSException as error:
            raise ResolveError(f"{name}: not a DNS name ({error})") from None
        answers = await asyncio.gather(
            self._query(qname, dns.rdatatype.A),
            self._query(qname, dns.rdatatype.AAAA),
            return_exceptions=True,
        )
        errors = [a for a in answers if isinstance(a, BaseException)]
        if errors:
            missing = [e for e in errors if isinstance(e, NameNotFoundError)]
            raise (missing or errors)[0]
        addresses: list[IPAddress] = []
        ttls: list[float] = []
        for answer in answers:
            assert not isinstance(answer, BaseException)
            found, ttl = answer
            addresses += [a for a in found if a not in addresses]
            if ttl is not None:
                ttls.append(ttl)
        if not addresses:
            raise ResolveError(f"{name}: no A or AAAA records")
        ttl = min(max(min(ttls), self._min_ttl), self._max_ttl)
        result = tuple(addresses)
        if self._max_entries and ttl > 0:
            self._cache[name] = _Entry(result, time.monotonic() + ttl)
            self._cache.move_to_end(name)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return result

    async def _query(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> tuple[list[IPAddress], float | None]:
        """One record type's addresses and TTL; no records of that type is ``([], None)``."""
        kind = dns.rdatatype.to_text(rdtype)
        name = qname.to_text(omit_final_dot=True)
        try:
            answer = await self._dns.resolve(qname, rdtype, search=False, lifetime=self._timeout)
        except dns.resolver.NXDOMAIN:
            raise NameNotFoundError(f"{name}: NXDOMAIN (the name does not exist)") from None
        except dns.resolver.NoAnswer:
            return [], None
        except dns.resolver.LifetimeTimeout:
            raise ResolveError(
                f"{name}: DNS timeout ({kind}): no answer from {self._describe_servers()} "
                f"within {self._timeout:g}s"
            ) from None
        except dns.resolver.NoNameservers as error:
            raise ResolveError(f"{name}: every DNS server failed ({kind}): {error}") from None
        except dns.exception.DNSException as error:
            raise ResolveError(f"{name}: DNS lookup failed ({kind}): {error}") from None
        addresses = [ipaddress.ip_address(rdata.address) for rdata in answer]
        return addresses, float(answer.chaining_result.minimum_ttl)

    def _describe_servers(self) -> str:
        return ", ".join(f"{address}:{port}" for address, port in self.servers) or "no server"
