"""A route's local limits decided in one call, compiled with the hot path.

The ``rate_limit`` filter keeps its general loop for routes that mix local and Redis limits;
when every limit of a route is local (the common case) it hands the request to
:meth:`LocalLimits.decide`, which derives each limit's key, asks the pod's table and counts the
outcome, with no interpreted code per limit. A limit keyed by client address, consumer or tenant
remembers the keys it made (a caller sends many requests in a row): one look-up on a string whose
hash is already known, instead of encoding and concatenating a new key and hashing it again.
"""

from __future__ import annotations

from typing import Any, Final

from sidegate.policy.gcra import Decision, Gcra
from sidegate.policy.tally import Tally, tally
from sidegate.ratelimit.shared import SharedTable

KEY_IP: Final = 0
KEY_CONSUMER: Final = 1
KEY_TENANT: Final = 2
KEY_ROUTE: Final = 3
KEY_HEADER: Final = 4
_KINDS: Final = {"ip": KEY_IP, "consumer": KEY_CONSUMER, "tenant": KEY_TENANT, "route": KEY_ROUTE}
_KEYS_KEPT: Final = 4096  # keys each limit remembers, per kind of name (emptied when full)


class LocalLimit:
    """One limit as the table sees it: its key prefix, how the rest of the key is found, its GCRA."""

    def __init__(self, prefix: bytes, key: str, gcra: Gcra, *, quota_name: str) -> None:
        self.prefix = prefix
        self.gcra = gcra
        self.header = b""
        if key.startswith("header:"):
            self.kind = KEY_HEADER
            self.header = key.removeprefix("header:").strip().lower().encode()
        else:
            self.kind = _KINDS[key]
        self.quota_name = quota_name  # non-empty: tenant-keyed, counted per tenant
        self.by_name: dict[str, bytes] = {}  # consumer or tenant -> its key
        self.by_ip: dict[str, bytes] = {}  # client address -> its key

    def key(self, client_ip: str, consumer: str, tenant: str, headers: list[tuple[bytes, bytes]]) -> bytes:
        kind = self.kind
        if kind in (KEY_CONSUMER, KEY_TENANT):
            name = consumer if kind == KEY_CONSUMER else tenant
            if not name:  # counted under the client address
                found = self.by_ip.get(client_ip)
                return found if found is not None else self._made(self.by_ip, client_ip, b"ip:")
            found = self.by_name.get(name)
            if found is not None:
                return found
            return self._made(self.by_name, name, b"c:" if kind == KEY_CONSUMER else b"t:")
        if kind == KEY_IP:
            found = self.by_ip.get(client_ip)
            return found if found is not None else self._made(self.by_ip, client_ip, b"")
        if kind == KEY_ROUTE:
            return self.prefix
        wanted = self.header
        for name_, value in headers:
            if name_.lower() == wanted:
                return self.prefix + value
        return self.prefix + b"-"

    def _made(self, kept: dict[str, bytes], name: str, tag: bytes) -> bytes:
        key = self.prefix + tag + name.encode()
        if len(kept) >= _KEYS_KEPT:
            kept.clear()
        kept[name] = key
        return key


class LocalLimits:
    """Every limit of one route, all local: decided in order, the first refusal wins."""

    def __init__(
        self,
        table: SharedTable,
        limits: list[LocalLimit],
        route: str,
        decisions: dict[tuple[str, str, str], int],
        quotas: dict[tuple[str, str, str, str], int],
        *,
        tallies: dict[Any, Tally],
    ) -> None:
        self.table = table
        self.limits = limits
        self.route = route
        self.allowed = tally(tallies, (route, "rate_limit", "allowed"))  # the steady row: a native cell
        # A metric row typed as an object: mypyc keeps a tuple[str, str, str] attribute unboxed and
        # boxes a new tuple at every use, which then hashes and compares item by item in the dict.
        self.limited_key: object = counter_row(decisions, (route, "rate_limit", "limited"))
        self.decisions: dict[Any, int] = decisions
        self.quotas = quotas

    def decide(
        self, client_ip: str, consumer: str, tenant: str, headers: list[tuple[bytes, bytes]], now: float
    ) -> tuple[int, int, Decision]:
        """``(refused, tightest, decision)``: the index of the refusing limit (-1 when all allow), the
        index of the limit with the fewest requests left, and that limit's decision (the refusing
        one's when refused)."""
        table = self.table
        tightest = -1
        best: Decision | None = None
        for index, limit in enumerate(self.limits):
            decision = table.gcra(limit.key(client_ip, consumer, tenant, headers), limit.gcra, now)
            allowed = decision.allowed
            if allowed:
                self.allowed.count += 1
            else:
                self.decisions[self.limited_key] = self.decisions.get(self.limited_key, 0) + 1
            if limit.quota_name:
                quota = (
                    self.route,
                    limit.quota_name,
                    tenant or "_other",
                    "allowed" if allowed else "limited",
                )
                self.quotas[quota] = self.quotas.get(quota, 0) + 1
            if not allowed:
                return index, index, decision
            if best is None or decision.remaining < best.remaining:
                best = decision
                tightest = index
        assert best is not None  # a filter has at least one limit
        return -1, tightest, best


def counter_row(counter: dict[Any, int], row: object) -> object:
    """``row``, or the equal key ``counter`` already holds (say, from before a reload): a look-up with
    the very key object finds it by identity, with no comparison of the tuples item by item."""
    for key in counter:
        if key == row:
            return key
    return row
