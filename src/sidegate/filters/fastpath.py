"""The common case of the ``jwt`` and ``rate_limit`` filters, compiled with the hot path.

Theory of operation: filter classes are interpreted (their base and their configs are dataclasses
that pydantic reads), so every hook they implement runs interpreted code, and an authenticated,
rate-limited route pays for two ``on_request`` frames and an ``on_response`` frame per request.
Yet the steady state of such a route is small and repeats: the same bearer token again (verified
before, still valid) and every limit local and allowing. Each of the two filters builds one object
of this module when it is bound to its route and installs its bound methods as the instance's
hooks (:meth:`sidegate.filters.base.Filter.delegate`), so the compiled exchange calls compiled
code directly. Anything else (a token not seen yet or expired, a refusal, the key source due for a
look, a limit kept in Redis) goes to the filter's own interpreted method, which stays the one
reference for what the filter decides: these objects only remember what it decided.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from time import monotonic, time
from typing import Any, Final

from sidegate.filters.context import RequestContext
from sidegate.http.messages import LocalResponse, RequestHead, ResponseHead
from sidegate.policy.gcra import Decision
from sidegate.policy.tally import Tally, tally
from sidegate.ratelimit.local import LocalLimits

#: A filter's own ``on_request`` (its general path): ``None``, an answer or a ``Wait``.
General = Callable[[RequestHead, RequestContext], object]

_TAIL: Final = 32  # bytes at the end of a token's header value that key the accepted tokens
_BEARER: Final = b"bearer "


class TokenHit:
    """What the ``jwt`` filter made of a token it accepted: enough to accept it again."""

    def __init__(
        self,
        claims: Mapping[str, Any],
        valid_from: float,
        valid_until: float,
        *,
        consumer: str,
        tenant: str,
        lines: bytes,
        consumer_key: object,
    ) -> None:
        self.claims = claims
        self.valid_from = valid_from  # leeway included, as the verifier's cache keeps them
        self.valid_until = valid_until
        self.consumer = consumer
        self.tenant = tenant
        self.lines = lines  # the identity header lines the app gets
        self.consumer_key = consumer_key  # the consumer's metric row...
        self.counted: Tally | None = None  # ...and its tally (set when remembered)
        self.value = b""  # the header value the token came in, exactly as sent


class TokenHits:
    """One ``jwt`` filter's accepted tokens, accepted again without interpreted code.

    A token is remembered once the filter's general path accepted it (signature, claims, scopes,
    required claims: all decided by then, and all fixed for a given token and key set), under the
    header value it came in, and forgotten when the key set changes or the token is refused. A
    request whose header value is exactly one remembered (so is its token) is accepted while the
    time is within the token's validity window, as the verifier's cache would accept it. The key
    source is still looked at every second: when ``next_look`` (set by the general path) has come,
    the request goes the general path.

    Look-ups are keyed by the last bytes of the header value, then the whole value is compared:
    hashing a whole token (hundreds of bytes, a new object per request) would cost more than the
    rest of the check. Two values with the same tail only take each other's place.
    """

    def __init__(
        self,
        header: bytes,
        bearer: bool,
        general: General,
        *,
        decision_tallies: dict[Any, Tally],
        consumer_tallies: dict[Any, Tally],
        ok_key: object,
        size: int,
    ) -> None:
        self.header = header  # lower-case; b"": tokens come in the query only (never remembered here)
        self.title = header.title()  # as most clients spell it (compared before lower-casing)
        self.bearer = bearer  # the header's value is "Bearer TOKEN", not the bare token
        self.general = general
        self.decision_tallies = decision_tallies
        self.consumer_tallies = consumer_tallies
        self.ok = tally(decision_tallies, ok_key)
        self.size = size
        self.next_look = 0.0  # time.time() at which the general path looks at the key source again
        self.clock = time  # an attribute: a module global is a dict look-up per call when compiled
        self.hits: dict[bytes, TokenHit] = {}

    def on_request(self, request: RequestHead, ctx: RequestContext) -> object:
        now = self.clock()
        if now < self.next_look:
            value = self.value(request.headers)
            hit = self.hits.get(value[-_TAIL:])
            if hit is not None and hit.value == value and hit.valid_from <= now < hit.valid_until:
                counted = hit.counted
                if counted is not None:
                    ctx.consumer = hit.consumer
                    ctx.tenant = hit.tenant
                    ctx.upstream_lines = hit.lines
                    ctx.claims = hit.claims
                    self.ok.count += 1
                    counted.count += 1
                    return None
        return self.general(request, ctx)

    def value(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """The value of the first field named as the filter's header (where the general path looks
        first), or b"" when there is none."""
        wanted = self.header
        title = self.title
        size = len(wanted)
        for name, value in headers:
            if len(name) == size and (name == title or name.lower() == wanted):
                return value
        return b""

    def token_in(self, value: bytes) -> bytes:
        """The token the general path finds in header value ``value`` (b"": none)."""
        found = value.strip()
        if not self.bearer:
            return found
        # The same as partitioning at the first space and comparing the scheme: "bearer" holds no
        # space, so its scheme is exactly the first six bytes.
        return found[7:].strip() if found[:7].lower() == _BEARER else b""

    def remember(self, headers: list[tuple[bytes, bytes]], token: bytes, hit: TokenHit) -> None:
        """After the general path accepted ``token`` in a request with ``headers``: remember it, if
        it came in the filter's header (not in the query)."""
        value = self.value(headers)
        if not value or self.token_in(value) != token:
            return
        hit.value = value
        hit.counted = tally(self.consumer_tallies, hit.consumer_key)
        hits = self.hits
        key = value[-_TAIL:]
        if key not in hits and len(hits) >= self.size:
            del hits[next(iter(hits))]  # the oldest remembered: it goes the general path again
        hits[key] = hit

    def forget(self, headers: list[tuple[bytes, bytes]]) -> None:
        """The token in these headers was refused: do not remember it any longer."""
        value = self.value(headers)
        key = value[-_TAIL:]
        hit = self.hits.get(key)
        if hit is not None and hit.value == value:
            del self.hits[key]

    def count_as(self, ok_key: object) -> None:
        """Count accepted requests in metric row ``ok_key`` (once the route is known)."""
        self.ok = tally(self.decision_tallies, ok_key)

    def clear(self) -> None:
        self.hits.clear()


class LimitPath:
    """A ``rate_limit`` filter whose limits are all local: decided by one compiled call, with the
    ``RateLimit`` headers of the tightest limit on the response. A refusal goes back to the filter
    (``refuse(index, decision)``), which builds the 429.

    The ``RateLimit`` field is remembered for the last (limit, remaining, reset) it was made for: a
    caller well under its limit gets the same values request after request.
    """

    def __init__(
        self,
        make_local: Callable[[], LocalLimits],
        refuse: Callable[[int, Decision], LocalResponse],
        names: list[str],
        policies: list[bytes],
        *,
        headers: bool,
    ) -> None:
        self.make_local = make_local  # the pod's table is opened on first use, not at config load
        self.clock = monotonic  # one clock for every process of the host (see SharedTable)
        self.local: LocalLimits | None = None
        self.refuse = refuse
        self.headers = headers
        # Per limit, made once: the RateLimit-Policy field and the start of the RateLimit value.
        self.policy_fields = [(b"RateLimit-Policy", policy) for policy in policies]
        self.rate_prefixes = [b'"' + name.encode() + b'";r=' for name in names]
        self.last_index = -1
        self.last_remaining = 0
        self.last_reset = 0
        self.last_field: tuple[bytes, bytes] | None = None

    def on_request(self, request: RequestHead, ctx: RequestContext) -> LocalResponse | None:
        local = self.local
        if local is None:
            local = self.local = self.make_local()
        refused, tightest, decision = local.decide(
            request.client_ip, ctx.consumer, ctx.tenant, request.headers, self.clock()
        )
        if refused >= 0:
            return self.refuse(refused, decision)
        if self.headers:
            ctx.limit_index = tightest
            ctx.limit = decision
        return None

    def on_response(self, request: RequestHead, response: ResponseHead, ctx: RequestContext) -> object:
        decision = ctx.limit
        if decision is None:  # no decision (headers off, or answered here)
            return None
        index = ctx.limit_index
        headers = response.headers
        headers.append(self.policy_fields[index])
        headers.append(self.rate_field(index, decision))
        return None

    def fields(self, index: int, decision: Decision) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
        """The ``RateLimit-Policy`` and ``RateLimit`` fields of limit ``index`` after ``decision``
        (on an allowed response, and on a refusal)."""
        return self.policy_fields[index], self.rate_field(index, decision)

    def rate_field(self, index: int, decision: Decision) -> tuple[bytes, bytes]:
        """The ``RateLimit`` field of limit ``index`` after ``decision`` (the last one made, when
        the values are the same)."""
        remaining = decision.remaining if decision.remaining > 0 else 0
        reset = math.ceil(decision.reset_after)
        rate = self.last_field
        if (
            rate is None
            or index != self.last_index
            or remaining != self.last_remaining
            or reset != self.last_reset
        ):
            value = self.rate_prefixes[index] + str(remaining).encode() + b";t=" + str(reset).encode()
            rate = self.last_field = (b"RateLimit", value)
            self.last_index = index
            self.last_remaining = remaining
            self.last_reset = reset
        return rate
