"""GCRA (generic cell rate algorithm): the rate-limit decision, pure and clock-injected.

A limit of ``requests`` per ``per`` seconds admits one request every *emission interval*
``T = per / requests`` on average, and up to ``burst`` requests at once. Its whole state per key is
one number, the *theoretical arrival time* (TAT): the time at which the key would be idle again
(0.0, or any time in the past, means idle: a full burst is available).

For a request of ``cost`` units at ``now``::

    new_tat = max(tat, now) + cost * T
    allowed  iff  new_tat - now <= tolerance        (tolerance = burst * T)

An allowed request stores ``new_tat``; a refused one leaves the TAT alone, so hammering a limited key
does not push its next chance further away. ``new_tat - now`` is the backlog the key carries: the
requests still available are ``floor((tolerance - backlog) / T)``, a refused request may retry when
the backlog has drained to ``tolerance - cost * T``, and the key is idle after ``tat - now``.

Exactness: times are floats, and at Unix-time magnitudes (1.7e9 s, a float step of 2.4e-7 s) adding an
interval such as 1/3 s rounds a little every time; over a burst of thousands the rounding adds up and
the last request of a burst could be refused (or one too many admitted). So the interval and ``now``
are put on a grid of 2**-22 s (238 ns): every sum and difference of grid values below 2**31 s is exact
in a float64, for ``time.monotonic()`` (uptime) and for Unix time alike (until 2038; after that a count
at the very edge of a burst may come out either way, still within a microsecond). The interval is
rounded *down* onto the grid, so a client pacing itself exactly at the configured rate is never
refused; the rate admitted is at most 238 ns per interval faster than configured (0.024% at 1000/s).
Both ``now`` and the interval are on the grid before anything is added, so a burst of ``burst``
admits exactly ``burst`` requests and a long run at the limit exactly ``requests`` per ``per``.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["TICK", "Decision", "Gcra"]

TICK: Final = 2.0**-22  # seconds: the time grid (see the module docstring)
_TICKS_PER_SECOND: Final = 2.0**22


# Unhashable, as the dataclass was: __eq__ without __hash__ (mypyc would compile `__hash__ = None`
# into a field set on every instance).
class Decision:  # noqa: PLW1641
    """The answer to one request against one limit, with what the rate-limit headers need.

    ``limit`` is the burst (the most requests a client may send at once); ``remaining`` how many more
    would be admitted right now; ``reset_after`` the seconds until the key is idle (a full burst
    available again); ``retry_after`` the seconds until this request would be admitted (0.0 when it
    was). A request whose cost exceeds the burst can never be admitted (its ``retry_after`` would not
    come true): a caller that lets costs vary should keep them within the burst.

    A plain class with the value semantics of a dataclass (equality, repr) written out: one is made
    per decision, and ``@dataclass(slots=True)`` would build a new, interpreted class at import
    whose generated ``__init__`` costs an interpreted call each time, where this one compiles to a
    native constructor.
    """

    __slots__ = ("allowed", "limit", "remaining", "reset_after", "retry_after")

    def __init__(
        self, allowed: bool, limit: int, remaining: int, reset_after: float, retry_after: float
    ) -> None:
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.reset_after = reset_after
        self.retry_after = retry_after

    def _values(self) -> tuple[bool, int, int, float, float]:
        return (self.allowed, self.limit, self.remaining, self.reset_after, self.retry_after)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return self._values() == other._values()

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self.allowed!r}, limit={self.limit!r}, remaining={self.remaining!r}, "
            f"reset_after={self.reset_after!r}, retry_after={self.retry_after!r})"
        )


class Gcra:
    """One limit: ``requests`` per ``per`` seconds with bursts of up to ``burst`` (default ``requests``).

    Immutable once made; one instance serves every key of a limit (the state lives with the caller,
    as one TAT per key). ``interval`` and ``tolerance`` are the grid-aligned emission interval and
    burst tolerance in seconds.
    """

    __slots__ = ("burst", "interval", "limit", "per", "requests", "tolerance")

    def __init__(self, requests: int, per: float, burst: int | None = None) -> None:
        if requests < 1:
            raise ValueError(f"requests must be at least 1, not {requests}")
        if not (per > 0 and math.isfinite(per)):
            raise ValueError(f"per must be a positive number of seconds, not {per}")
        if burst is None:
            burst = requests
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.requests = requests
        self.per = per
        self.burst = burst
        self.limit = burst
        self.interval: float = max(1, math.floor(per / requests * _TICKS_PER_SECOND)) * TICK
        self.tolerance: float = burst * self.interval

    def decide(self, tat: float, now: float, cost: int = 1) -> tuple[Decision, float]:
        """Decide a request of ``cost`` units at ``now`` for a key whose TAT is ``tat``.

        Returns the decision and the TAT to store (unchanged when refused). ``now`` must come from one
        clock for every caller sharing the state (``time.monotonic()`` is one clock for every process
        of a host); ``cost`` is at least 0 (0 asks without spending).
        """
        # Onto the grid, exactly. TICK is a power of two: scaling by it is exact, and so is the floor
        # (for a time >= 0, the same as subtracting fmod(now, TICK), at a tenth of the cost of fmod
        # at these magnitudes). A negative time is truncated toward zero with fmod, as ever.
        now = math.floor(now * _TICKS_PER_SECOND) * TICK if now >= 0.0 else now - math.fmod(now, TICK)
        interval = self.interval
        tolerance = self.tolerance
        base = tat if tat > now else now
        new_tat = base + cost * interval
        backlog = new_tat - now
        if backlog <= tolerance:
            # Both operands are grid multiples well below 2**53 ticks: floor of the quotient is exact.
            remaining = int((tolerance - backlog) / interval)
            return Decision(True, self.limit, remaining, backlog, 0.0), new_tat
        carried = base - now
        remaining = int((tolerance - carried) / interval) if carried < tolerance else 0
        return Decision(False, self.limit, remaining, carried, backlog - tolerance), tat

    def __repr__(self) -> str:
        return f"Gcra(requests={self.requests}, per={self.per:g}, burst={self.burst})"
