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
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from sidegate.filters.context import RequestContext
from sidegate.http.messages import RequestHead, ResponseHead
from sidegate.policy.gcra import Decision
from sidegate.ratelimit.local import LocalLimits

#: A filter's own ``on_request`` (its general path): ``None``, an answer or a ``Wait``.
General = Callable[[RequestHead, RequestContext], object]
Counter = tuple[str, str, str]

LIMIT_STATE: Final = "rate_limit"  # the ctx.vars key of the rate_limit filter
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
        consumer_key: Counter,
    ) -> None:
        self.claims = claims
        self.valid_from = valid_from  # leeway included, as the verifier's cache keeps them
        self.valid_until = valid_until
        self.consumer = consumer
        self.tenant = tenant
        self.lines = lines  # the identity header lines the app gets
        self.consumer_key = consumer_key  # the consumer's metric row


class TokenHits:
    """One ``jwt`` filter's accepted tokens, answered without interpreted code.

    A token is remembered once the filter's general path accepted it (signature, claims, scopes,
    required claims: all decided by then, and all fixed for a given token and key set) and
    forgotten when the key set changes or the token is refused. A remembered token is accepted while
    the time is within its validity window, exactly as the verifier's cache would accept it; the
    key source is still looked at every ``next_look`` (the general path sets it), since it runs
    whenever that time has come.
    """

    def __init__(
        self,
        header: bytes,
        bearer: bool,
        general: General,
        *,
        decisions: dict[Counter, int],
        consumers: dict[Counter, int],
        ok_key: Counter,
        size: int,
    ) -> None:
        self.header = header  # lower-case; b"": tokens come in the query only (never remembered here)
        self.bearer = bearer  # the header's value is "Bearer TOKEN", not the bare token
        self.general = general
        self.decisions = decisions
        self.consumers = consumers
        self.ok_key = ok_key
        self.size = size
        self.next_look = 0.0  # time.time() at which the general path looks at the key source again
        self.hits: dict[bytes, TokenHit] = {}

    def on_request(self, request: RequestHead, ctx: RequestContext) -> object:
        now = time.time()
        if now < self.next_look:
            hit = self.hits.get(self.token(request.headers))
            if hit is not None and hit.valid_from <= now < hit.valid_until:
                ctx.consumer = hit.consumer
                ctx.tenant = hit.tenant
                ctx.upstream_lines = hit.lines
                ctx.vars["claims"] = hit.claims
                decisions = self.decisions
                key = self.ok_key
                decisions[key] = decisions.get(key, 0) + 1
                consumers = self.consumers
                row = hit.consumer_key
                consumers[row] = consumers.get(row, 0) + 1
                return None
        return self.general(request, ctx)

    def token(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """The token in the filter's header as its general path finds it, or b"" when that header
        is absent, empty or of another scheme (the general path then decides, query included)."""
        wanted = self.header
        size = len(wanted)
        for name, value in headers:
            if len(name) == size and name.lower() == wanted:
                found = value.strip()
                if not self.bearer:
                    return found
                # The same as partitioning at the first space and comparing the scheme: "bearer"
                # holds no space, so its scheme is exactly the first six bytes.
                if found[:7].lower() == _BEARER:
                    return found[7:].strip()
                return b""
        return b""

    def remember(self, token: bytes, hit: TokenHit) -> None:
        hits = self.hits
        if token not in hits and len(hits) >= self.size:
            del hits[next(iter(hits))]  # the oldest remembered: it goes the general path again
        hits[token] = hit

    def forget(self, token: bytes) -> None:
        self.hits.pop(token, None)

    def clear(self) -> None:
        self.hits.clear()


class LimitPath:
    """A ``rate_limit`` filter whose limits are all local: decided by one compiled call, with the
    ``RateLimit`` headers of the tightest limit on the response. A refusal goes back to the filter
    (``refuse(index, decision)``), which builds the 429."""

    def __init__(
        self,
        make_local: Callable[[], LocalLimits],
        refuse: Callable[[int, Decision], object],
        names: list[str],
        policies: list[bytes],
        *,
        headers: bool,
    ) -> None:
        self.make_local = make_local  # the pod's table is opened on first use, not at config load
        self.local: LocalLimits | None = None
        self.refuse = refuse
        self.headers = headers
        # Per limit, made once: the RateLimit-Policy field and the start of the RateLimit value.
        self.policy_fields = [(b"RateLimit-Policy", policy) for policy in policies]
        self.rate_prefixes = [b'"' + name.encode() + b'";r=' for name in names]

    def on_request(self, request: RequestHead, ctx: RequestContext) -> object:
        local = self.local
        if local is None:
            local = self.local = self.make_local()
        refused, tightest, decision = local.decide(
            request.client_ip, ctx.consumer, ctx.tenant, request.headers, time.monotonic()
        )
        if refused >= 0:
            return self.refuse(refused, decision)
        if self.headers:
            ctx.vars[LIMIT_STATE] = (tightest, decision)
        return None

    def on_response(self, request: RequestHead, response: ResponseHead, ctx: RequestContext) -> object:
        if not self.headers:
            return None
        state = ctx.vars.get(LIMIT_STATE)
        if state is None:
            return None
        tightest: tuple[int, Decision] = state
        index, decision = tightest
        remaining = decision.remaining if decision.remaining > 0 else 0
        value = self.rate_prefixes[index] + str(remaining).encode() + b";t="
        value += str(math.ceil(decision.reset_after)).encode()
        headers = response.headers
        headers.append(self.policy_fields[index])
        headers.append((b"RateLimit", value))
        return None
