"""The nat rules of transparent mode, as ``iptables-restore`` input: pure text, no I/O.

Laid out the way ``istio-iptables`` and Linkerd's ``proxy-init`` do it, because that is what
operators read and debug: every rule lives in Sidegate's own chains, and the built-in chains get
one jump each (``OUTPUT -> SIDEGATE_OUTPUT``, ``PREROUTING -> SIDEGATE_INBOUND``), so removing
Sidegate is removing those jumps and chains and nothing else in the table is touched.

``SIDEGATE_OUTPUT`` (the app's outbound TCP), first match wins:

1. ``RETURN`` for the sidecar's own UID and GID (``-m owner``): the sidecar's outbound
   connections are never sent back to itself (the loop);
2. ``RETURN`` for anything leaving through ``lo`` or to loopback: the app talking to the sidecar
   or to itself (its own pod IP goes out through ``lo`` too);
3. ``RETURN`` for excluded destination ports (TCP 53 unless DNS is asked for: the app's resolver
   keeps working as before) and excluded CIDRs;
4. the included CIDRs (default: everything) jump to ``SIDEGATE_REDIRECT``, which ``REDIRECT``\\ s
   to the egress listener's port. Locally generated packets are redirected to ``127.0.0.1``
   (``::1`` for IPv6), so the egress listener on loopback receives them.

``SIDEGATE_INBOUND`` (only with inbound ports): the excluded ports ``RETURN`` (the health and
admin ports are always among them: a probe must reach the health listener, not the proxy), then
the listed ports (or every port, ``*``) jump to ``SIDEGATE_IN_REDIRECT``, which ``REDIRECT``\\ s
to the inbound listener. Only TCP is ever matched: UDP (DNS, QUIC) passes untouched.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

OUTPUT_CHAIN = "SIDEGATE_OUTPUT"
REDIRECT_CHAIN = "SIDEGATE_REDIRECT"
INBOUND_CHAIN = "SIDEGATE_INBOUND"
IN_REDIRECT_CHAIN = "SIDEGATE_IN_REDIRECT"
#: Every chain Sidegate may create; ``--clean`` removes these (and the jumps to them) only.
CHAIN_PREFIX = "SIDEGATE_"
DNS_PORT = 53
#: The image's user (``USER 65532`` in the Containerfile, distroless' "nonroot").
DEFAULT_PROXY_UID = 65532


@dataclass(frozen=True)
class RedirectPlan:
    """What to redirect; every field is a ``sidegate iptables`` flag of the same name."""

    egress_port: int = 15001
    inbound_port: int = 8080
    proxy_uids: tuple[int, ...] = (DEFAULT_PROXY_UID,)
    proxy_gids: tuple[int, ...] = (DEFAULT_PROXY_UID,)
    exclude_cidrs: tuple[Network, ...] = ()
    include_cidrs: tuple[Network, ...] = ()  # empty: every destination
    exclude_ports: tuple[int, ...] = ()  # outbound destination ports
    redirect_dns: bool = False  # TCP 53 too (UDP is never redirected)
    inbound_ports: tuple[int, ...] = ()  # empty: inbound is not redirected
    inbound_all: bool = False  # "*": every inbound port but the excluded
    exclude_inbound_ports: tuple[int, ...] = field(default=())

    @property
    def redirects_inbound(self) -> bool:
        return self.inbound_all or bool(self.inbound_ports)

    def chains(self) -> tuple[str, ...]:
        out = (OUTPUT_CHAIN, REDIRECT_CHAIN)
        return (*out, INBOUND_CHAIN, IN_REDIRECT_CHAIN) if self.redirects_inbound else out

    def outbound_excluded_ports(self) -> tuple[int, ...]:
        ports = (*(() if self.redirect_dns else (DNS_PORT,)), *self.exclude_ports)
        return tuple(dict.fromkeys(ports))


def _of_version(networks: Iterable[Network], version: int) -> list[Network]:
    return [n for n in networks if n.version == version]


def jumps(plan: RedirectPlan) -> list[str]:
    """The rules added to the built-in chains (exactly one per direction)."""
    out = [f"-A OUTPUT -p tcp -j {OUTPUT_CHAIN}"]
    if plan.redirects_inbound:
        out.append(f"-A PREROUTING -p tcp -j {INBOUND_CHAIN}")
    return out


def chain_rules(plan: RedirectPlan, version: int) -> list[str]:
    """The rules of Sidegate's own chains for IPv4 (``version`` 4) or IPv6 (6)."""
    loopback = "127.0.0.0/8" if version == 4 else "::1/128"
    rules = [f"-A {REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {plan.egress_port}"]
    rules += [f"-A {OUTPUT_CHAIN} -m owner --uid-owner {uid} -j RETURN" for uid in plan.proxy_uids]
    rules += [f"-A {OUTPUT_CHAIN} -m owner --gid-owner {gid} -j RETURN" for gid in plan.proxy_gids]
    rules += [f"-A {OUTPUT_CHAIN} -o lo -j RETURN", f"-A {OUTPUT_CHAIN} -d {loopback} -j RETURN"]
    rules += [f"-A {OUTPUT_CHAIN} -p tcp --dport {p} -j RETURN" for p in plan.outbound_excluded_ports()]
    rules += [f"-A {OUTPUT_CHAIN} -d {n} -j RETURN" for n in _of_version(plan.exclude_cidrs, version)]
    if plan.include_cidrs:
        included = _of_version(plan.include_cidrs, version)
        rules += [f"-A {OUTPUT_CHAIN} -d {n} -j {REDIRECT_CHAIN}" for n in included]
    else:
        rules.append(f"-A {OUTPUT_CHAIN} -j {REDIRECT_CHAIN}")
    if plan.redirects_inbound:
        rules.append(f"-A {IN_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {plan.inbound_port}")
        rules += [f"-A {INBOUND_CHAIN} -p tcp --dport {p} -j RETURN" for p in plan.exclude_inbound_ports]
        if plan.inbound_all:
            rules.append(f"-A {INBOUND_CHAIN} -p tcp -j {IN_REDIRECT_CHAIN}")
        else:
            redirected = [p for p in plan.inbound_ports if p not in plan.exclude_inbound_ports]
            rules += [f"-A {INBOUND_CHAIN} -p tcp --dport {p} -j {IN_REDIRECT_CHAIN}" for p in redirected]
    return rules


def restore_input(plan: RedirectPlan, version: int, *, existing: Iterable[str] = ()) -> str:
    """``iptables-restore --noflush`` input that leaves the nat table with exactly ``plan``'s
    rules, whatever of Sidegate's was there before (so applying twice is applying once):

    ``existing`` is the nat table as ``iptables-save -t nat`` prints it (empty: a fresh pod,
    and then this is also the text ``sidegate iptables`` prints). The jumps to Sidegate's chains
    found there are deleted and added again, each chain of the plan is declared (which empties
    it), and a Sidegate chain the plan no longer has is emptied and deleted. It is one
    transaction: ``iptables-restore`` applies all of it or nothing.
    """
    found_jumps, found_chains = sidegate_parts(existing)
    wanted = plan.chains()
    stale = [c for c in found_chains if c not in wanted]
    family = "IPv4" if version == 4 else "IPv6"
    lines = [
        f"# Sidegate transparent mode, nat table, {family}: the app's outbound TCP to the egress",
        f"# listener (port {plan.egress_port}); UDP is not touched. Apply with "
        f"`{'iptables' if version == 4 else 'ip6tables'}-restore --noflush`.",
        "*nat",
    ]
    lines += [f":{chain} - [0:0]" for chain in (*wanted, *stale)]
    lines += ["-D" + rule[2:] for rule in found_jumps]
    lines += [f"-X {chain}" for chain in stale]
    lines += chain_rules(plan, version)
    lines += jumps(plan)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def removal_input(existing: Iterable[str]) -> str | None:
    """``iptables-restore --noflush`` input removing every Sidegate chain of the nat table and
    the jumps to them (nothing else); None when there is none."""
    found_jumps, found_chains = sidegate_parts(existing)
    if not found_jumps and not found_chains:
        return None
    lines = ["*nat"]
    lines += [f":{chain} - [0:0]" for chain in found_chains]  # emptied first: they jump to each other
    lines += ["-D" + rule[2:] for rule in found_jumps]
    lines += [f"-X {chain}" for chain in found_chains]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def sidegate_parts(saved: Iterable[str]) -> tuple[list[str], list[str]]:
    """In ``iptables-save -t nat`` output: the rules of built-in chains that jump to a Sidegate
    chain, and the Sidegate chains."""
    rules: list[str] = []
    chains: list[str] = []
    for text in saved:
        line = text.strip()
        if line.startswith(":" + CHAIN_PREFIX):
            chains.append(line[1:].split()[0])
        elif (
            line.startswith("-A ")
            and not line.startswith("-A " + CHAIN_PREFIX)
            and f"-j {CHAIN_PREFIX}" in line
        ):
            rules.append(line)
    return rules, chains
