"""``cors``: Cross-Origin Resource Sharing answered by the gateway, with per-route origins.

    filters:
      cors: {origins: ["https://app.example.com", "https://*.example.org"], credentials: true}
      jwt: {...}          # after cors: a preflight carries no credentials

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from an allowed
origin for an allowed method is answered here with 204 and never reaches the app; one from another
origin gets 403. Other requests from an allowed origin go on and their responses gain
``Access-Control-Allow-Origin`` (the origin itself, or ``*`` when every origin is allowed without
credentials), ``Vary: Origin`` and the exposed headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge

from sidegate.filters.base import Filter, FilterConfig, FilterServices, RequestContext
from sidegate.filters.counters import POLICY
from sidegate.filters.identity import deny
from sidegate.filters.registry import register
from sidegate.http.messages import LocalResponse, RequestHead, ResponseHead


@dataclass(frozen=True, slots=True)
class CorsConfig(FilterConfig):
    origins: tuple[str, ...] = ("*",)
    """allowed origins: exact ("https://app.example.com"), wildcard ("https://*.example.com") or "*" """
    methods: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    """methods a preflight may ask for"""
    headers: tuple[str, ...] = ()
    """request headers a preflight may ask for ("*": whatever it asks)"""
    expose_headers: tuple[str, ...] = ()
    """response headers the browser may show to the page"""
    credentials: bool = False
    """allow cookies and Authorization (the origin is then echoed, never "*")"""
    max_age: Annotated[int, Ge(0)] = 600
    """seconds a browser may keep a preflight's answer"""


@register
class Cors(Filter):
    name = "cors"
    answer_flags = {204: "cors_preflight", 403: "cors_denied"}
    config_model = CorsConfig

    def __init__(self, config: CorsConfig) -> None:
        super().__init__(config)
        self.cfg = config
        self.any_origin = "*" in config.origins
        self.exact = frozenset(o.lower().encode() for o in config.origins if "*" not in o)
        self.wildcards = tuple(
            tuple(part.lower().encode() for part in o.split("*", 1))
            for o in config.origins
            if "*" in o and o != "*"
        )
        self.methods = frozenset(m.upper().encode() for m in config.methods)
        self.any_header = "*" in config.headers
        self.allowed_headers = frozenset(h.lower().encode() for h in config.headers if h != "*")
        self.expose = ", ".join(config.expose_headers).encode()
        self.route = ""
        self.preflight_fields = (
            (b"Access-Control-Allow-Methods", ", ".join(config.methods).encode()),
            (b"Access-Control-Max-Age", str(config.max_age).encode()),
        )

    def bind(self, services: FilterServices) -> None:
        self.route = services.route

    def on_request(self, request: RequestHead, ctx: RequestContext) -> LocalResponse | None:
        origin = asked_method = asked_headers = None
        for name, value in request.headers:
            lname = name.lower()
            if lname == b"origin":
                origin = value
            elif lname == b"access-control-request-method":
                asked_method = value
            elif lname == b"access-control-request-headers":
                asked_headers = value
        if origin is None:
            return None
        allowed = self._allowed(origin)
        if request.method == b"OPTIONS" and asked_method is not None:
            return self._preflight(origin, allowed, asked_method, asked_headers)
        if allowed:
            ctx.cors_origin = origin
        return None

    def on_response(self, request: RequestHead, response: ResponseHead, ctx: RequestContext) -> None:
        origin = ctx.cors_origin
        if origin is not None:
            response.headers += self._allow_fields(origin)
            if self.cfg.expose_headers:
                response.headers.append(
                    (b"Access-Control-Expose-Headers", ", ".join(self.cfg.expose_headers).encode())
                )

    def _preflight(self, origin: bytes, allowed: bool, method: bytes, asked: bytes | None) -> LocalResponse:
        if not allowed:
            POLICY.decisions[(self.route, self.name, "forbidden")] += 1
            return deny(403, "forbidden", "origin not allowed on this route")
        if method.upper() not in self.methods:
            POLICY.decisions[(self.route, self.name, "forbidden")] += 1
            return deny(403, "forbidden", f"method {method.decode('latin-1')} not allowed by CORS")
        names = [h.strip() for h in asked.split(b",") if h.strip()] if asked else []
        if names and not self.any_header and any(n.lower() not in self.allowed_headers for n in names):
            POLICY.decisions[(self.route, self.name, "forbidden")] += 1
            return deny(403, "forbidden", "a requested header is not allowed by CORS")
        POLICY.decisions[(self.route, self.name, "preflight")] += 1
        fields = [*self._allow_fields(origin), *self.preflight_fields]
        if names:
            fields.append((b"Access-Control-Allow-Headers", b", ".join(names)))
        return LocalResponse(status=204, headers=tuple(fields), content_type=b"text/plain")

    def _allow_fields(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        if self.any_origin and not self.cfg.credentials:
            return [(b"Access-Control-Allow-Origin", b"*")]
        fields = [(b"Access-Control-Allow-Origin", origin), (b"Vary", b"Origin")]
        if self.cfg.credentials:
            fields.append((b"Access-Control-Allow-Credentials", b"true"))
        return fields

    def _allowed(self, origin: bytes) -> bool:
        if self.any_origin:
            return True
        lower = origin.lower()
        if lower in self.exact:
            return True
        return any(
            lower.startswith(head) and lower.endswith(tail) and len(lower) > len(head) + len(tail)
            for head, tail in self.wildcards
        )
