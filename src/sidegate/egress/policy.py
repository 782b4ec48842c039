"""Which outbound calls the pod allows: destination matching and the decision, with no I/O.

Destinations are tried in order and the first that allows the whole call (host, port, scheme,
method, path) decides. When none does, the default action (deny) decides, and the reason names
the closest miss: what the most specific destination whose host matched (exact, then
``*.suffix``, then ``*``; the first among equals) refused, so the 403 tells the app's
developer which line of the config to look at.

Compiled with mypyc (``native.HOT_MODULES``): it is asked once per call. Most calls name a
destination's exact host on one of its ports, and for those the answer is known when the config
is compiled: :attr:`EgressPolicy.fast` holds it by ``(scheme, host, port)`` whenever the
destination the walk would reach first allows every method and path there. Any other call, and
any call to a key the table does not hold, takes the walk; the table is the policy's own, so a
reload (a new policy) cannot see an old answer.

This is the name check only. Where the name resolves is the SSRF guard's business
(:mod:`sidegate.egress.guard`), checked after this on every resolved address.
"""

from __future__ import annotations

import json
from typing import Final

from sidegate.config.egress_spec import DestinationSpec

#: The rule named in a 403 when no destination allowed the call.
DEFAULT_RULE: Final = "default_action: deny"
#: A destination listing more ports than this gets no fast-table entries (the walk decides).
FAST_PORTS: Final = 64


class Decision:
    """The verdict on one call; ``rule`` is the destination's name, or another rule's. Not to
    be changed once made: an allowing one is shared by every call its fast-table key decides."""

    def __init__(
        self, allowed: bool, rule: str, reason: str, destination: DestinationSpec | None = None
    ) -> None:
        self.allowed = allowed
        self.rule = rule
        self.reason = reason
        self.destination = destination  # the destination that allowed it

    def denial_body(self) -> bytes:
        """The JSON body of the 403 a denied call gets."""
        return json.dumps({"error": "egress_denied", "reason": self.reason, "rule": self.rule}).encode()


def host_matches(pattern: str, host: str) -> bool:
    """``*`` matches any host, ``*.example.com`` any name under example.com (not the domain
    itself: Smokescreen's and Istio's reading), anything else only itself."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _specificity(pattern: str) -> int:
    """How closely a host pattern names a host: exact 2, ``*.suffix`` 1, ``*`` 0 (the 403 speaks
    of the destination the app most likely meant)."""
    return 0 if pattern == "*" else 1 if pattern.startswith("*.") else 2


def _refusal(destination: DestinationSpec, scheme: str, port: int, method: str, path: str) -> str | None:
    """Why a destination whose host matched refuses the rest of the call; None if it allows it."""
    name = destination.name
    if scheme not in destination.schemes:
        allowed = ", ".join(sorted(destination.schemes))
        return f"scheme {scheme} is not allowed by destination {name!r} (allowed: {allowed})"
    if port not in destination.ports:
        allowed = ", ".join(str(p) for p in destination.ports)
        return f"port {port} is not allowed by destination {name!r} (allowed: {allowed})"
    if method != "CONNECT":  # a tunnel's requests are inside TLS: only host and port are seen
        if destination.methods is not None and method not in destination.methods:
            allowed = ", ".join(sorted(destination.methods))
            return f"method {method} is not allowed by destination {name!r} (allowed: {allowed})"
        prefixes = destination.path_prefixes
        if prefixes is not None and not any(path.startswith(p) for p in prefixes):
            listed = ", ".join(prefixes)
            return f"path {path} is not under the path prefixes of destination {name!r} ({listed})"
    return None


class EgressPolicy:
    """The compiled destinations, asked once per call."""

    def __init__(self, destinations: tuple[DestinationSpec, ...]) -> None:
        self.destinations = destinations
        self.by_name = {d.name: d for d in destinations}
        self.fast = _fast_table(destinations)

    def decide(
        self,
        scheme: str,
        host: str,
        port: int,
        method: str,
        path: str,
        *,
        named: DestinationSpec | None = None,
    ) -> Decision:
        """The decision on ``method scheme://host:port/path`` (``method`` CONNECT for a tunnel,
        ``scheme`` https then; ``host`` lower-case, as the guard parsed it). ``named``: the
        destination the app called by name; only it decides, on everything but the host (which
        is its own origin)."""
        if named is None:
            known = self.fast.get((scheme, host, port))
            if known is not None:
                return known
        nearest: tuple[int, str] | None = None  # the most specific host match's refusal
        for destination in (named,) if named is not None else self.destinations:
            if named is None and not host_matches(destination.host, host):
                continue
            refusal = _refusal(destination, scheme, port, method, path)
            if refusal is None:
                return Decision(True, destination.name, "allowed", destination)
            rank = _specificity(destination.host)
            if nearest is None or rank > nearest[0]:
                nearest = (rank, refusal)
        reason = nearest[1] if nearest is not None else f"no destination allows host {host}"
        return Decision(False, DEFAULT_RULE, reason)


def _fast_table(destinations: tuple[DestinationSpec, ...]) -> dict[tuple[str, str, int], Decision]:
    """``(scheme, host, port)`` -> the allowing decision, for every exact host, scheme and port
    a destination lists, when the first destination (in order) whose host, scheme and port all
    match that call has no method or path restriction: then the walk would allow every call
    there by that destination, whatever its method and path. Bounded by the config's size."""
    table: dict[tuple[str, str, int], Decision] = {}
    for listed in destinations:
        host = listed.host
        if host == "*" or host.startswith("*.") or len(listed.ports) > FAST_PORTS:
            continue
        for scheme in listed.schemes:
            for port in listed.ports:
                key = (scheme, host, port)
                if key in table:
                    continue
                for destination in destinations:
                    if (
                        host_matches(destination.host, host)
                        and scheme in destination.schemes
                        and port in destination.ports
                    ):
                        if destination.methods is None and destination.path_prefixes is None:
                            table[key] = Decision(True, destination.name, "allowed", destination)
                        break
    return table
