"""Where a limit's counts live, behind one interface: the pod's table or Redis (``store: local|redis``).

As APISIX's limit-count has ``policy: local|redis``, a limit of the ``rate_limit`` filter is kept by
a :class:`LimitStore`, and the filter asks only that: :meth:`LimitStore.take` counts one request of
a key under a limit's GCRA and answers with the decision, with a :class:`Pending` decision when the
answer needs a round trip (the filter parks the request on it with a ``Wait``), or with None when
the store cannot decide now (Redis known to be down): then the filter falls back as its
``on_redis_failure`` says. Two stores implement it:

- :class:`LocalStore`: the pod's shared table (:class:`~sidegate.ratelimit.shared.SharedTable`),
  decided at once, never unavailable;
- :class:`~sidegate.ratelimit.pod.RedisStore`: one count across every pod, a task per decision.

A route whose limits are all local is decided by :class:`~sidegate.ratelimit.local.LocalLimits`
instead, the same table read by one compiled call for every limit of the route.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from sidegate.policy.gcra import Decision, Gcra
from sidegate.ratelimit.shared import SharedTable

__all__ = ["LimitStore", "LocalStore", "Pending"]


class Pending(Protocol):
    """A decision still being made: once ``done`` completes, ``decision`` is the store's answer
    (None: it could not decide in time). A request waits for it at most ``timeout`` seconds."""

    @property
    def done(self) -> Awaitable[None]: ...

    @property
    def decision(self) -> Decision | None: ...

    @property
    def timeout(self) -> float: ...


class LimitStore(Protocol):
    """Keeps the counts of the limits given to it, one GCRA state per key."""

    def take(self, key: bytes, rule: Gcra, now: float) -> Decision | Pending | None:
        """Count a request of ``key`` under ``rule`` at ``now`` (``time.monotonic()``): the
        decision, a :class:`Pending` one, or None when the store cannot decide now."""
        ...


class LocalStore:
    """Counts kept in the pod's shared table: every worker of the pod holds one limit."""

    def __init__(self, table: SharedTable) -> None:
        self.table = table

    def take(self, key: bytes, rule: Gcra, now: float) -> Decision:
        return self.table.gcra(key, rule, now)
