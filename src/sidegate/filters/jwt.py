"""``jwt``: bearer tokens verified against the route's keys; claims name the consumer and tenant.

    filters:
      jwt:
        jwks_url: https://login.example.com/.well-known/jwks.json   # or jwks_file: /secrets/jwks.json
        issuer: https://login.example.com/
        audiences: [orders-api]
        algorithms: [RS256, ES256]       # for keys whose JWK has no "alg"
        consumer_claim: sub
        tenant_claim: org
        required_scopes: [orders:read]

The algorithm is the key's, never the token's (:mod:`sidegate.policy.jwt`, on PyJWT): ``alg: none``,
RS/HS confusion, expired or not-yet-valid tokens, a wrong issuer or audience, an unknown key, a
tampered or malformed token of any size: each is a 401 with ``WWW-Authenticate: Bearer
error="invalid_token", error_description="..."``. A valid token without a required scope or claim
value is a 403 (``error="insufficient_scope"``). Keys are refreshed without a restart
(:mod:`sidegate.auth.jwks`): a file when it changes, a URL when its answer's cache lifetime is
over (``refresh`` seconds when it states none) and when a token names a key not seen yet (at most
every 10 s), through the environment's ``HTTPS_PROXY``/``HTTP_PROXY`` and ``NO_PROXY``. A
verified token is remembered, so a client that sends the same token again costs a dictionary
look-up and two comparisons; and once the filter accepted a token, its compiled fast path
(:class:`~sidegate.filters.fastpath.TokenHits`) accepts it again, with the consumer, tenant and
metric row it was given, while it is valid.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from annotated_types import Ge, Gt

from sidegate.auth.jwks import JwksSource
from sidegate.filters.base import Answer, Filter, FilterConfig, FilterServices, RequestContext, Wait
from sidegate.filters.counters import POLICY
from sidegate.filters.fastpath import TokenHit, TokenHits
from sidegate.filters.identity import OTHER, Caller, by_name, caller, credential, deny, mark
from sidegate.filters.registry import register
from sidegate.http.messages import RequestHead
from sidegate.policy.jwt import SUPPORTED, JwtError, UnknownKeyError, Verifier

_KEY_FETCH_WAIT: Final = 5.0  # seconds a request may wait for the first key set of a URL
_CALLERS_KEPT: Final = 4096  # consumers from tokens whose header lines are kept ready
_TOKENS_KEPT: Final = 4096  # accepted tokens the fast path remembers
_LOOK_EVERY: Final = 1.0  # seconds between looks at the key source (a file's mtime, a URL's refresh)


@dataclass(frozen=True, slots=True)
class JwtConfig(FilterConfig):
    jwks_file: str = ""
    """a JWKS (or single JWK) file, re-read when it changes"""
    jwks_url: str = ""
    """a JWKS URL (http or https), fetched and refreshed in the background"""
    issuer: str = ""
    """the `iss` every token must carry ("" = not checked)"""
    audiences: tuple[str, ...] = ()
    """`aud` must name one of these (empty = not checked)"""
    algorithms: tuple[str, ...] = ()
    """algorithms allowed; a JWK without "alg" needs exactly one that fits its key type"""
    leeway: Annotated[float, Ge(0)] = 30.0
    """seconds of clock skew allowed on exp and nbf"""
    header: str = "authorization"
    """header carrying the token (Authorization: Bearer TOKEN, or the raw token in another header)"""
    query: str = ""
    """query parameter carrying the token ("" = none)"""
    consumer_claim: str = "sub"
    """claim that names the consumer"""
    tenant_claim: str = ""
    """claim that names the tenant (a configured consumer's own tenant wins)"""
    required_scopes: tuple[str, ...] = ()
    """scopes the token must grant (claim `scope`, space-separated, or `scp`)"""
    required_claims: dict[str, str] = field(default_factory=dict)
    """claims that must have these values (or, for list claims, contain them)"""
    refresh: Annotated[float, Gt(0)] = 300.0
    """seconds between refreshes of jwks_url when its answer states no lifetime (max-age, Expires)"""
    refresh_min: Annotated[float, Ge(0)] = 60.0
    """the shortest lifetime of a jwks_url answer: a smaller max-age (or no-cache) is raised to this"""
    refresh_max: Annotated[float, Gt(0)] = 3600.0
    """the longest lifetime of a jwks_url answer: a larger max-age is cut to this"""
    forward_token: bool = True
    """pass the token on to the app (false: the header is removed)"""


@register
class Jwt(Filter):
    name = "jwt"
    answer_flags = {401: "auth_failed", 403: "auth_forbidden", 503: "auth_unavailable"}
    config_model = JwtConfig
    names_caller = True
    header_fields = ("header",)

    def __init__(self, config: JwtConfig) -> None:
        super().__init__(config)
        if bool(config.jwks_file) == bool(config.jwks_url):
            raise ValueError("give exactly one of jwks_file or jwks_url")
        unknown = set(config.algorithms) - SUPPORTED
        if unknown:
            raise ValueError(
                f"unknown algorithms {sorted(unknown)}; supported: {', '.join(sorted(SUPPORTED))}"
            )
        self.cfg = config
        algorithms = frozenset(config.algorithms) or None
        self.source = JwksSource(
            file=config.jwks_file or None,
            url=config.jwks_url or None,
            algorithms=algorithms,
            refresh=config.refresh,
            refresh_min=config.refresh_min,
            refresh_max=config.refresh_max,
        )
        if config.jwks_file:
            self.source.load_now()  # a missing or broken file is a config error, named with its path
        self.header = config.header.lower().encode()
        self.bearer = self.header == b"authorization"
        self.query = config.query.encode()
        self.route = ""
        self.callers: dict[str, Caller] = {}
        self.seen: dict[str, Caller] = {}
        self._version = -1
        self._verifier: Verifier | None = None
        self.ok_key = ("", self.name, "ok")
        # The compiled fast path, and where the time of the next look at the key source is kept.
        self.hits = TokenHits(
            self.header,
            self.bearer,
            self._check,
            decision_tallies=POLICY.decision_tallies,
            consumer_tallies=POLICY.consumer_tallies,
            ok_key=self.ok_key,
            size=_TOKENS_KEPT,
        )
        self.consumer_keys: dict[Caller, tuple[str, str, str]] = {}
        realm = b'Bearer realm="sidegate"'
        self.challenge = realm
        self.scope_text = " ".join(config.required_scopes)

    def bind(self, services: FilterServices) -> None:
        self.route = services.route
        self.ok_key = (services.route, self.name, "ok")
        self.callers = by_name(services.consumers, services.identity)
        self.identity = services.identity
        self.hits.count_as(self.ok_key)
        self.hits.clear()
        if self.cfg.forward_token:  # else the general path edits the headers of every request
            self.delegate("on_request", self.hits.on_request)

    def on_request(self, request: RequestHead, ctx: RequestContext) -> Answer | Wait | None:
        """Bound to a route, the filter answers through ``self.hits`` first (see :meth:`bind`),
        which comes here for every token it has not accepted before."""
        return self._check(request, ctx)

    def _check(self, request: RequestHead, ctx: RequestContext) -> Answer | Wait | None:
        """The general path: every case, and the one reference for what the filter decides."""
        token = self._find(request)
        if token is None:
            return self._refuse("missing", 401, "a bearer token is required", b"")
        now = time.time()
        source = self.source
        pending = None
        verifier = self._verifier
        if now >= self.hits.next_look or verifier is None:  # the key source is looked at once a second
            self.hits.next_look = now + _LOOK_EVERY
            pending = source.maybe_refresh(now)  # a URL refresh runs as a task; waited for only with no keys
            verifier = self._current()
        if verifier is None:
            if pending is not None and not ctx.keys_waited:
                ctx.keys_waited = True
                return Wait(pending, _KEY_FETCH_WAIT)
            return self._refuse("invalid", 401, "no signing keys are available", b'error="invalid_token"')
        try:
            claims = verifier.verify(token, now)
        except UnknownKeyError as exc:
            self.hits.forget(request.headers)
            refetch = source.maybe_refresh(now, unknown_kid=True)
            if refetch is not None and not ctx.keys_waited:
                ctx.keys_waited = True
                return Wait(refetch, _KEY_FETCH_WAIT)
            return self._invalid(exc)
        except JwtError as exc:
            self.hits.forget(request.headers)
            return self._invalid(exc)
        refusal = self._lacking(claims)
        if refusal is not None:
            return refusal
        who = self._caller(claims)
        mark(ctx, who)
        ctx.claims = claims
        POLICY.decisions[self.ok_key] += 1
        row = self._consumer_key(who)
        POLICY.consumers[row] += 1
        if not self.cfg.forward_token and self.header:
            request.headers = [(n, v) for n, v in request.headers if n.lower() != self.header]
        window = verifier.validity(token)
        if window is not None:  # all of the above holds for this token until it expires
            hit = TokenHit(
                claims, *window, consumer=who.consumer, tenant=who.tenant, lines=who.lines, consumer_key=row
            )
            self.hits.remember(request.headers, token, hit)
        return None

    def _consumer_key(self, who: Caller) -> tuple[str, str, str]:
        """The metric row of ``who``: its names when configured, else ``_other`` (bounded)."""
        key = self.consumer_keys.get(who)
        if key is None:
            known = who.consumer in self.callers
            key = (self.route, who.tenant if known else OTHER, who.consumer if known else OTHER)
            if len(self.consumer_keys) >= _CALLERS_KEPT:
                self.consumer_keys.clear()
            self.consumer_keys[who] = key
        return key

    def _current(self) -> Verifier | None:
        source = self.source
        version = source.version()
        if version != self._version:
            keys = source.keys()
            cfg = self.cfg
            self._verifier = (
                Verifier(keys, issuer=cfg.issuer or None, audiences=cfg.audiences, leeway=cfg.leeway)
                if keys
                else None
            )
            self._version = version
            self.hits.clear()  # tokens accepted with the old keys are checked again
        return self._verifier

    def _find(self, request: RequestHead) -> bytes | None:
        found = credential(request, self.header, self.query)
        if found is None or not self.bearer or not self.header:
            return found
        scheme, _, token = found.partition(b" ")  # Authorization: Bearer TOKEN
        if scheme.lower() == b"bearer":
            return token.strip() or None
        return credential(request, b"", self.query)  # another scheme: the query may still carry one

    def _lacking(self, claims: Mapping[str, Any]) -> Answer | None:
        cfg = self.cfg
        if cfg.required_scopes:
            granted = _scopes(claims)
            if not all(scope in granted for scope in cfg.required_scopes):
                extra = b'error="insufficient_scope", scope="' + self.scope_text.encode() + b'"'
                return self._refuse("forbidden", 403, f"the token lacks scope {self.scope_text}", extra)
        for name, wanted in cfg.required_claims.items():
            value = claims.get(name)
            if not (value == wanted or (isinstance(value, list) and wanted in value)):
                extra = b'error="insufficient_scope"'
                return self._refuse(
                    "forbidden", 403, f"the token's {name} claim does not allow this route", extra
                )
        return None

    def _caller(self, claims: Mapping[str, Any]) -> Caller:
        consumer = claims.get(self.cfg.consumer_claim)
        name = consumer if isinstance(consumer, str) else ""
        known = self.callers.get(name)
        if known is not None:
            return known
        tenant = claims.get(self.cfg.tenant_claim) if self.cfg.tenant_claim else None
        tenant_name = tenant if isinstance(tenant, str) else ""
        key = name + "\x00" + tenant_name
        who = self.seen.get(key)
        if who is None:
            if len(self.seen) >= _CALLERS_KEPT:
                self.seen.clear()
            who = self.seen[key] = caller(name, tenant_name, self.identity)
        return who

    def _invalid(self, exc: JwtError) -> Answer:
        reason = exc.reason.replace('"', "'")
        extra = b'error="invalid_token", error_description="' + reason.encode() + b'"'
        return self._refuse("invalid", 401, reason, extra)

    def _refuse(self, result: str, status: int, detail: str, extra: bytes) -> Answer:
        POLICY.decisions[(self.route, self.name, result)] += 1
        challenge = self.challenge + (b", " + extra if extra else b"")
        return deny(status, "unauthorized" if status == 401 else "forbidden", detail, challenge)


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, str):
        return frozenset(scp.split())
    if isinstance(scp, list):
        return frozenset(s for s in scp if isinstance(s, str))
    return frozenset()
